"""JPEG: a structural scan of the markers, and a strict decode that reports damaged data.

Pillow drops libjpeg's warnings, so garbage in the entropy-coded data ("Corrupt JPEG data: N
extraneous bytes before marker", "premature end of data segment", "bad Huffman code") decodes to
grey or smeared blocks with no error at all. simplejpeg (libjpeg-turbo's TurboJPEG API) raises on
those warnings when ``strict``: that is the decode used for every JPEG source, with the same DCT
scaling as Pillow's draft. A file that only lacks its final EOI marker, with every scan complete,
is accepted (cameras and uploaders cut it; no pixel is missing).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import simplejpeg

from preprocess.core import errors
from preprocess.core.errors import input_error

# libjpeg warnings that mean the pixels are not what was encoded (so does an invalid marker inside
# the entropy-coded data, which libjpeg reports as an unsupported marker or a second SOF) ...
_DAMAGE = ("Corrupt JPEG data", "Premature end of JPEG file", "Huffman", "Inconsistent progression",
           "arithmetic code")
# ... and warnings about a header field that does not touch the pixels: that field is set to what libjpeg
# expects (:func:`_mended`) and the image decoded strictly again, so damage after it is still found (a lenient
# decode took garbage in the scan of a file with one of these as its first warning).
_HARMLESS = ("unknown JFIF revision", "Invalid SOS parameters for sequential JPEG", "Unknown Adobe color transform",
             "thumbnail image size")
_EOI = b"\xff\xd9"


def _markers(data: bytes) -> Iterator[tuple[int, int]]:
    """(marker, offset) of each marker before the first scan, in order, SOS last (fill bytes skipped); where
    a marker should be and is not, (-1, offset) last. Stops early where the data ends."""
    n, i = len(data), 2
    while i + 4 <= n:
        if data[i] != 0xFF:
            yield -1, i
            return
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        yield marker, i
        if marker == 0xDA:
            return
        standalone = marker == 0x01 or 0xD0 <= marker <= 0xD8
        i += 2 if standalone else 2 + int.from_bytes(data[i + 2:i + 4], "big")


def header_end(data: bytes) -> int | None:
    """Where the entropy-coded data of the first scan starts (after the SOS segment); None when the file
    ends before it, -1 when the marker structure breaks before it."""
    for marker, i in _markers(data):
        if marker < 0:
            return -1
        if marker == 0xDA:
            end = i + 2 + int.from_bytes(data[i + 2:i + 4], "big")
            return end if end <= len(data) else None
    return None


JPEG_MAX_DIMENSION = 65500  # libjpeg-turbo's JPEG_MAX_DIMENSION: a larger side never decodes
# A progressive JPEG may have any number of scans, each a pass over the image's coefficients: 883 scans of a
# 120 MP grey image (a 421 KB file) took 18-20 s of CPU to decode, at any DCT scale. Encoders write a few
# dozen at most (libjpeg's progressive script 10, mozjpeg's searched ones about 20); libjpeg-turbo's tools
# take a limit for this (djpeg -maxscans).
MAX_SCANS = 100


def scans(data: bytes) -> int:
    """The first image's scans, exact above :data:`MAX_SCANS` and at most that many below it: every FF DA
    after the first scan's header bounds them at C speed; only a count over the limit walks the markers to
    the image's end (a phone's Motion Photo or gain-map trailer holds FF DA byte pairs that are no scans)."""
    start = header_end(data)
    if start is None or start < 0:
        return 0  # the header breaks before a scan: the decoder's to judge
    bound = data.count(b"\xff\xda", start)
    return 1 + (bound if bound < MAX_SCANS else _later_scans(data, start))


def _later_scans(data: bytes, pos: int) -> int:
    """SOS markers from ``pos`` (inside the first scan's data) to the image's EOI: entropy-coded data is
    skipped from one FF byte to the next (FF 00, restart markers and fill are no markers), segments by
    their length."""
    n, end = 0, len(data)
    while (pos := data.find(b"\xff", pos)) >= 0 and pos + 1 < end:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker in (0x00, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
        elif marker == 0xD9:  # EOI: what follows is another file's
            return n
        else:
            n += marker == 0xDA
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return n
# Start-of-frame markers of the Huffman-coded 8-bit processes libjpeg-turbo decodes: baseline, extended
# sequential, progressive.
_BARE_SOF = (0xC0, 0xC1, 0xC2)
# Segments that change what the decoded samples mean: EXIF (orientation), an ICC profile, Adobe's (RGB or
# inverted CMYK samples).
_MEANING = (0xE1, 0xE2, 0xEE)


def bare_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a bare JPEG, whose decoded samples need nothing more to be the image: 8-bit, 1 or
    3 components, and no EXIF, ICC or Adobe segment before its first scan (what this project's encoders
    write). None for any other JPEG, or a header that breaks off: those take :func:`decode` and the
    orientation, colour and CMYK steps after it."""
    size = None
    for marker, i in _markers(data) if data.startswith(b"\xff\xd8") else ():
        if marker == 0xDA:
            return size
        bare_frame = marker in _BARE_SOF and size is None
        if (marker in (-1, 0x01, 0xD8, *_MEANING)  # broken, TEM (Pillow refuses it), a second SOI, EXIF/ICC/Adobe
                or (0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and not bare_frame)):
            return None
        if bare_frame:
            size = _frame_size(data, i)
            if size is None:
                return None
    return None


def frame_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of the first frame (SOF) of a JPEG stream, when it is 8-bit with 1 or 3 components
    (a TIFF's JPEG strip may take its tables from the TIFF, so nothing else is asked of the stream)."""
    for marker, i in _markers(data) if data.startswith(b"\xff\xd8") else ():
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return _frame_size(data, i)
        if marker < 0 or marker == 0xDA:
            return None
    return None


def unsupported(data: bytes) -> str | None:
    """What makes a valid JPEG one libjpeg-turbo cannot decode (JPEG-LS; a height given by a DNL marker after
    the first scan), said where Pillow's parser gave up on its header; None otherwise."""
    for marker, i in _markers(data):
        if marker in (0xF7, 0xF8):  # SOF55, LSE
            return "JPEG-LS (ISO 14495), which no decoder here takes"
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if data[i + 5:i + 7] == b"\x00\x00" and b"\xff\xdc" in data:
                return "its height is given by a DNL marker after its first scan, which libjpeg does not take"
            return None
        if marker < 0 or marker == 0xDA:
            return None
    return None


def _frame_size(data: bytes, i: int) -> tuple[int, int] | None:
    """(width, height) of the SOF segment at ``i`` when it is 8-bit with 1 or 3 components and a size
    libjpeg-turbo decodes."""
    if i + 10 > len(data) or data[i + 4] != 8 or data[i + 9] not in (1, 3):
        return None
    width, height = int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
    return (width, height) if 0 < width <= JPEG_MAX_DIMENSION and 0 < height <= JPEG_MAX_DIMENSION else None


DRAFT_SCALES = (1, 2, 4)  # the DCT scales (in eighths) a draft is decoded at: libjpeg-turbo's SIMD reduced IDCTs


def scaled(size: tuple[int, int], k: int) -> tuple[int, int]:
    """The size libjpeg decodes ``size`` to at the DCT scale ``k``/8: each side rounded up."""
    return -(-size[0] * k // 8), -(-size[1] * k // 8)


def decode_rgbx_into(data: bytes, out: np.ndarray, size: tuple[int, int],
                     cover: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """A bare JPEG's (:func:`bare_size`) ``size`` pixels as RGBX rows into ``out``, strictly; with ``cover``,
    at the smallest DCT scale of 1/8, 1/4 and 1/2 that still covers it (a draft: libjpeg-turbo's reduced IDCTs
    at these scales are SIMD and cheaper than the full one; its others, 3/8 or 5/8, cost more than a full decode
    of a stored 1 MP JPEG). The size decoded, or None when libjpeg reports anything at all or decodes another
    size (then :func:`decode` says what, or decodes what is harmless)."""
    want = size if cover is None else next(
        (s for k in DRAFT_SCALES if (s := scaled(size, k))[0] >= cover[0] and s[1] >= cover[1]), size)
    try:
        got = simplejpeg.decode_jpeg(data, colorspace="RGBX", buffer=out, strict=True, min_width=want[0],
                                     min_height=want[1])
    except ValueError:
        return None
    return want if np.shape(got) == (want[1], want[0], 4) else None


def suspect(data: bytes) -> bool:
    """Cheap structural check: truncated (no EOI) or invalid markers inside the entropy-coded data.

    Not a verdict (garbage without 0xFF bytes passes it; :func:`entropy_intact` does not); :func:`decode`
    is. The DALI engine uses both to keep damaged files away from its decoder.
    """
    start = header_end(data)
    if start is None or start < 0:
        return True
    scan = np.frombuffer(data, dtype=np.uint8, offset=start)
    after_ff = scan[np.flatnonzero(scan[:-1] == 0xFF) + 1]
    eoi = np.flatnonzero(after_ff == 0xD9)
    if eoi.size == 0:
        return True
    after_ff = after_ff[:eoi[0]]  # data after the first EOI (MPF trailers, ...) is not ours
    return bool(np.any((after_ff > 0x00) & (after_ff < 0xC0)))


def entropy_intact(data: bytes) -> bool:
    """Whether libjpeg-turbo reads every scan of ``data`` without a single warning, decoding at its smallest
    DCT scale (the entropy-coded data is read in full, little else is done: about 2/3 of a full decode of a
    baseline JPEG, nearly all of one for a progressive one). False is not a verdict (a harmless header
    warning gives False too): :func:`decode` is. The DALI engine asks this of every JPEG its decoder takes,
    since DALI decodes damaged entropy-coded data without a word."""
    try:
        simplejpeg.decode_jpeg(data, colorspace="GRAY", min_width=1, min_height=1, strict=True)
    except ValueError:
        return False
    return True


def decode(data: bytes, mode: str, *, min_size: tuple[int, int] = (0, 0), path: str | None = None) -> np.ndarray:
    """Decode to an HWC uint8 array (``GRAY`` for L, ``CMYK`` as stored for CMYK, else RGB) at the
    smallest DCT scale that covers ``min_size`` (width, height); damaged data raises ``E_CORRUPT`` or
    ``E_TRUNCATED``, a JPEG process libjpeg-turbo lacks ``E_UNSUPPORTED``."""
    colorspace = {"L": "GRAY", "CMYK": "CMYK"}.get(mode, "RGB")
    try:
        return _decode(data, colorspace, min_size, strict=True)
    except ValueError as exc:
        message = str(exc)
    cut = not data.rstrip(b"\x00").endswith(_EOI)
    if any(word in message for word in _DAMAGE) or suspect(data):
        if cut and "Premature end of JPEG file" in message:
            try:  # every scan complete, only the EOI marker missing: nothing is lost
                return _decode(data + _EOI, colorspace, min_size, strict=True)
            except ValueError:
                pass
        raise input_error(errors.TRUNCATED if cut else errors.CORRUPT, f"cannot decode: {message}", path)
    for _ in _HARMLESS:  # each field at most once
        mended = _mended(data, message) if any(word in message for word in _HARMLESS) else None
        if mended is None or mended == data:
            break
        data = mended
        try:
            return _decode(data, colorspace, min_size, strict=True)
        except ValueError as exc:
            message = str(exc)
        if any(word in message for word in _DAMAGE) or suspect(data):
            raise input_error(errors.TRUNCATED if cut else errors.CORRUPT, f"cannot decode: {message}", path)
    code = errors.UNSUPPORTED if "Unsupported" in message else errors.CORRUPT
    raise input_error(code, f"cannot decode: {message}", path)


def _mended(data: bytes, message: str) -> bytes | None:
    """``data`` with the header field a harmless warning (``message``) is about set to what libjpeg expects:
    a JFIF APP0's version 1.01 and no thumbnail, a sequential scan's spectral range 0..63 with no successive
    approximation, an Adobe segment's colour transform libjpeg's own default for its component count. The
    pixels are the same (libjpeg assumed those values after its warning); None when there is no such field."""
    out = bytearray(data)
    frame = 0
    for marker, i in _markers(data):
        if marker < 0 or i + 18 > len(data):
            break
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            frame = marker
        if marker == 0xE0 and data[i + 4:i + 9] == b"JFIF\x00" and "JFIF" in message:
            out[i + 9:i + 11] = b"\x01\x01"
        elif marker == 0xE0 and data[i + 4:i + 9] == b"JFIF\x00" and "thumbnail" in message:
            out[i + 16:i + 18] = b"\x00\x00"
        elif marker == 0xEE and data[i + 4:i + 9] == b"Adobe" and "Adobe" in message:
            out[i + 15] = 0 if _components(data) == 4 else 1
        elif marker == 0xDA and frame in (0xC0, 0xC1) and "SOS" in message:
            at = i
            while at >= 0:  # every scan: a 0xFFDA in entropy-coded data is a marker (0xFF is stuffed there)
                after = at + 5 + 2 * data[at + 4] if at + 4 < len(data) else len(data)
                if after + 3 > len(data):
                    break
                out[after:after + 3] = b"\x00\x3f\x00"
                at = data.find(b"\xff\xda", after + 3)
    return bytes(out)


def _components(data: bytes) -> int:
    for marker, i in _markers(data):
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and i + 10 <= len(data):
            return data[i + 9]
    return 0


def _decode(data: bytes, colorspace: str, min_size: tuple[int, int], *, strict: bool) -> np.ndarray:
    arr = simplejpeg.decode_jpeg(data, colorspace=colorspace, min_width=min_size[0], min_height=min_size[1],
                                 strict=strict)
    return np.asarray(arr)


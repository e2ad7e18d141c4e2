"""Header parsers for the formats Pillow cannot open here (WebP, AVIF, JPEG XL) and for JPEG 2000's
sample depth: size, channels, bit depth, orientation, frames and the embedded ICC profile, read from
the container without decoding a pixel (the decompression-bomb guard runs on these numbers).

Each parser reads only declared sizes and fixed fields and raises :class:`HeaderError` (``truncated``
when the data ends inside a header field) for anything it cannot make sense of.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from PIL import Image, TiffImagePlugin

from preprocess.core import errors
from preprocess.core.errors import input_error
from preprocess.pipeline.formats import av1, jpeg, sniff

# PIL transpose operations for EXIF orientations 1..8 (EXIF 2.32, tag 0x0112).
EXIF_OPS: dict[int, tuple[Image.Transpose, ...]] = {
    1: (), 2: (Image.Transpose.FLIP_LEFT_RIGHT,), 3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,), 5: (Image.Transpose.TRANSPOSE,), 6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,), 8: (Image.Transpose.ROTATE_90,),
}


class HeaderError(Exception):
    def __init__(self, message: str, *, truncated: bool = False) -> None:
        super().__init__(message)
        self.truncated = truncated


@dataclass(frozen=True)
class Header:
    """What a container says about its image (sizes as stored, before orientation)."""

    format: str
    width: int
    height: int
    channels: int
    bits: int = 8  # bits per sample as stored (a decoder may return them in a wider type)
    frames: int = 1
    orientation: int = 1  # as an EXIF orientation; applied by the caller unless the decoder does
    icc: bytes = b""
    exif: bytes = b""
    complete: bool = True  # every size the container declares fits in the data (else: cut off)
    coded_pixels: int = 0  # the largest frame the decoder may make whatever the size box says (AVIF), or 0
    coded: tuple[int, int] | None = None  # the primary image's coded frame (AVIF), when it is one frame
    compression: int = 0  # TIFF's compression tag

    @property
    def pixels(self) -> int:
        """What the decoder allocates at most: the image's size, or a larger coded frame."""
        return max(self.width * self.height, self.coded_pixels)

    @property
    def mode(self) -> str:
        """The Pillow mode the decoded samples map to."""
        return {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}.get(self.channels, "RGB")


def parse(fmt: str, data: bytes) -> Header:
    parsers = {sniff.WEBP: webp, sniff.AVIF: avif, sniff.JXL: jxl, sniff.JPEG2000: jpeg2000}
    try:
        return parsers[fmt](data)
    except IndexError:
        raise HeaderError(f"{fmt} header ends early", truncated=True) from None
    except (KeyError, ValueError) as exc:  # a required box or field is missing or malformed
        raise HeaderError(f"{fmt} header is malformed ({type(exc).__name__}: {exc})") from None


Order = Literal["big", "little"]


def _u16(data: bytes, pos: int, order: Order = "big") -> int:
    if pos + 2 > len(data):
        raise IndexError(pos)
    return int.from_bytes(data[pos:pos + 2], order)


def _u32(data: bytes, pos: int, order: Order = "big") -> int:
    if pos + 4 > len(data):
        raise IndexError(pos)
    return int.from_bytes(data[pos:pos + 4], order)


# -- WebP (RIFF) -------------------------------------------------------------------------------


def webp(data: bytes) -> Header:
    end = 8 + _u32(data, 4, "little")
    w = h = 0
    alpha, frames, icc, exif = False, 0, b"", b""
    pos = 12
    while pos + 8 <= min(end, len(data)):
        fourcc, size = data[pos:pos + 4], _u32(data, pos + 4, "little")
        body = data[pos + 8:pos + 8 + size]
        if fourcc in (b"VP8X", b"VP8 ", b"VP8L") and not (w and fourcc != b"VP8X"):
            w, h, alpha = _webp_frame(fourcc, body, alpha)
        elif fourcc == b"ICCP":
            icc = body
        elif fourcc == b"EXIF":
            exif = body
        elif fourcc == b"ANMF":
            frames += 1
        pos += 8 + size + (size & 1)
    if not w:
        raise HeaderError("WebP: no image header", truncated=len(data) < end)
    return Header(sniff.WEBP, w, h, 4 if alpha else 3, frames=max(frames, 1), icc=icc, exif=exif,
                  complete=len(data) >= end, orientation=exif_orientation(exif))


def _webp_frame(fourcc: bytes, body: bytes, alpha: bool) -> tuple[int, int, bool]:
    """(width, height, alpha) from a VP8X, VP8 or VP8L chunk."""
    if fourcc == b"VP8X":
        return (1 + int.from_bytes(body[4:7], "little"), 1 + int.from_bytes(body[7:10], "little"),
                bool(body[0] & 0x10))
    if fourcc == b"VP8 ":
        if body[3:6] != b"\x9d\x01\x2a":
            raise HeaderError("WebP: bad VP8 frame start code")
        return _u16(body, 6, "little") & 0x3FFF, _u16(body, 8, "little") & 0x3FFF, alpha
    if body[0] != 0x2F:
        raise HeaderError("WebP: bad VP8L signature")
    bits = _u32(body, 1, "little")
    return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool(bits >> 28 & 1)


def exif_orientation(exif: bytes) -> int:
    if not exif:
        return 1
    try:
        value = Image.Exif()
        value.load(exif if exif.startswith(b"Exif") else b"Exif\x00\x00" + exif)
        o = int(value.get(0x0112, 1) or 1)
    except Exception:  # a damaged EXIF block must not fail a readable image
        return 1
    return o if o in EXIF_OPS else 1


# -- ISO BMFF boxes (AVIF, the JPEG XL and JP2 containers) ----------------------------------------


def boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, body start, body end) of each box in ``data[start:end]``; the last may end past the data."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind, head = _u32(data, pos), data[pos + 4:pos + 8], 8
        if size == 1:
            size, head = int.from_bytes(data[pos + 8:pos + 16], "big"), 16
        elif size == 0:
            size = end - pos
        if size < head:
            raise HeaderError(f"box {kind!r} has an invalid size {size}")
        yield kind, pos + head, pos + size
        pos += size


def _children(data: bytes, body: tuple[int, int], *, full: bool = False) -> dict[bytes, list[tuple[int, int]]]:
    out: dict[bytes, list[tuple[int, int]]] = {}
    start = body[0] + (4 if full else 0)
    for kind, s, e in boxes(data, start, min(body[1], len(data))):
        out.setdefault(kind, []).append((s, e))
    return out


def avif(data: bytes) -> Header:
    top = {kind: (s, e) for kind, s, e in boxes(data)}
    complete = all(e <= len(data) for _, e in top.values())
    if b"meta" not in top:
        raise HeaderError("AVIF: no meta box", truncated=not complete)
    meta = _children(data, top[b"meta"], full=True)
    ipco = _children(data, _children(data, meta[b"iprp"][0])[b"ipco"][0]) if b"iprp" in meta else {}
    sizes = [(_u32(data, s + 4), _u32(data, s + 8)) for s, _ in ipco.get(b"ispe", [])]
    if not sizes:
        raise HeaderError("AVIF: no image size (ispe)", truncated=not complete)
    w, h = max(sizes, key=lambda wh: wh[0] * wh[1])
    frames = av1.frame_sizes(data, meta)
    coded = frames.get(av1.primary_item(data, meta) or -1)
    icc = next((data[s + 4:e] for s, e in ipco.get(b"colr", []) if data[s:s + 4] in (b"prof", b"rICC")), b"")
    bits = 8
    for s, _ in ipco.get(b"av1C", [])[:1]:
        flags = data[s + 2]
        bits = 12 if flags & 0x20 and flags & 0x40 else 10 if flags & 0x40 else 8
    ops: list[Image.Transpose] = []
    for s, _ in ipco.get(b"irot", [])[:1]:  # MIAF order: rotate (counter-clockwise), then mirror
        ops += [Image.Transpose.ROTATE_90] * (data[s] & 3)
    for s, _ in ipco.get(b"imir", [])[:1]:
        ops.append(Image.Transpose.FLIP_TOP_BOTTOM if data[s] & 1 else Image.Transpose.FLIP_LEFT_RIGHT)
    channels = 4 if any(b"alpha" in data[s:e] for s, e in ipco.get(b"auxC", [])) else 3
    return Header(sniff.AVIF, w, h, channels, bits=bits, icc=icc, complete=complete, orientation=_orientation(ops),
                  coded_pixels=max((fw * fh for fw, fh in frames.values()), default=0), coded=coded)


def _orientation(ops: list[Image.Transpose]) -> int:
    """The EXIF orientation that does what ``ops`` do (tried on a small asymmetric image)."""
    probe = Image.frombytes("L", (3, 2), bytes(range(6)))
    want = probe
    for op in ops:
        want = want.transpose(op)
    for code, seq in EXIF_OPS.items():
        got = probe
        for op in seq:
            got = got.transpose(op)
        if got.size == want.size and got.tobytes() == want.tobytes():
            return code
    return 1


# -- JPEG XL -------------------------------------------------------------------------------------


class _Bits:
    """LSB-first bit reader (the JPEG XL codestream's bit order)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def u(self, n: int) -> int:
        v = 0
        for i in range(n):
            v |= (self.data[self.pos >> 3] >> (self.pos & 7) & 1) << i
            self.pos += 1
        return v

    def size(self, div8: bool) -> int:
        if div8:
            return (self.u(5) + 1) * 8
        return self.u((9, 13, 18, 30)[self.u(2)]) + 1


_JXL_RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}


def jxl(data: bytes) -> Header:
    complete = True
    code, exif = data, b""
    if not data.startswith(b"\xff\x0a"):  # the container: the codestream is in jxlc, or starts in the first jxlp
        found = b""
        for kind, s, e in boxes(data):
            complete &= e <= len(data)
            if kind == b"jxlc" and not found:
                found = data[s:e]
            elif kind == b"jxlp" and not found:
                found = data[s + 4:e]
            elif kind == b"Exif":
                exif = data[s + 4:e]  # after the 4-byte offset to the TIFF header
        if not found:
            raise HeaderError("JPEG XL: no codestream box", truncated=not complete)
        code = found
    bits = _Bits(code[2:])
    div8 = bool(bits.u(1))
    height = bits.size(div8)
    ratio = bits.u(3)
    if ratio:
        num, den = _JXL_RATIOS[ratio]
        width = height * num // den
    else:
        width = bits.size(div8)
    orientation = 1
    if not bits.u(1) and bits.u(1):  # not all_default, extra_fields: the orientation comes first
        orientation = 1 + bits.u(3)
    # libjxl applies the orientation while decoding: report it, the caller must not apply it again
    return Header(sniff.JXL, width, height, 3, orientation=orientation, exif=exif, complete=complete)


# -- JPEG 2000 -----------------------------------------------------------------------------------


def jpeg2000(data: bytes) -> Header:
    """Size, components and bit depth from the codestream's SIZ marker; the ICC profile from a JP2's
    colour specification box (method 2 or 3)."""
    at = data.find(b"\xff\x4f\xff\x51")
    if at < 0:
        raise HeaderError("JPEG 2000: no SIZ marker", truncated=True)
    siz = at + 2
    width = _u32(data, siz + 6) - _u32(data, siz + 14)
    height = _u32(data, siz + 10) - _u32(data, siz + 18)
    components = _u16(data, siz + 38)
    depth = (data[siz + 40] & 0x7F) + 1
    icc, complete = b"", data.rstrip(b"\x00").endswith(b"\xff\xd9")
    if at > 0:
        for kind, s, e in boxes(data):
            complete &= e <= len(data)
            if kind == b"jp2h":
                colr = _children(data, (s, e)).get(b"colr", [])
                icc = next((data[cs + 3:ce] for cs, ce in colr if data[cs] in (2, 3)), b"")
    if width <= 0 or height <= 0 or not 1 <= components <= 16384:
        raise HeaderError(f"JPEG 2000: invalid size {width}x{height} with {components} components")
    return Header(sniff.JPEG2000, width, height, min(components, 4), bits=depth, icc=icc, complete=complete)


# -- TIFF samples Pillow has no mode for --------------------------------------------------------------

_TIFF_LAYOUTS = {(1, 1): "L", (2, 1): "LA", (3, 2): "RGB", (4, 2): "RGBA"}  # (samples, photometric) -> mode


def tiff_int(tags: TiffImagePlugin.ImageFileDirectory_v2, tag: int, default: int) -> int:
    """A TIFF tag's (first) value as an int (per-sample tags are tuples)."""
    value = tags.get(tag, default)
    return int((value[0] if isinstance(value, tuple) else value) or default)


def tiff_complete(tags: TiffImagePlugin.ImageFileDirectory_v2, size: int) -> bool:
    """Whether every strip (or tile) the IFD declares lies in the ``size`` bytes of the file."""
    ends = [int(o) + int(n) for o, n in zip(tags.get(273, tags.get(324, ())) or (),
                                            tags.get(279, tags.get(325, ())) or (), strict=False)]
    return max(ends, default=0) <= size


def tiff_strips_oversized(tags: TiffImagePlugin.ImageFileDirectory_v2) -> str | None:
    """What is wrong when an uncompressed, stripped TIFF's strips hold more bytes than its size needs (a
    byte of padding a strip allowed), or None: its width or height then lies about the samples, which an
    uncompressed decode takes row by row at the wrong width (stripes, no error)."""
    counts = tags.get(279) or ()
    if tiff_int(tags, 259, 1) != 1 or not counts or 273 not in tags:
        return None
    width, height = tiff_int(tags, 256, 0), tiff_int(tags, 257, 0)
    samples = tiff_int(tags, 277, 1)
    per_sample = tags.get(258, 1)
    bits = sum(int(b) for b in per_sample) if isinstance(per_sample, tuple) else int(per_sample or 1) * samples
    planes = samples if tiff_int(tags, 284, 1) == 2 else 1
    row = -(-width * bits // planes // 8)  # a row of one plane (planar: every sample its own plane)
    rows = min(tiff_int(tags, 278, height) or height, height)
    strips = len(counts)
    room = planes * -(-height // max(rows, 1)) * rows * row + strips  # whole strips, a byte of padding each
    total = sum(int(n) for n in counts)
    return None if total <= room else f"its strips hold {total} bytes, more than its {width}x{height} needs"


def tiff_layout(tags: TiffImagePlugin.ImageFileDirectory_v2, rawmode: str, *, libtiff: bool) -> tuple[bool, bool]:
    """(separate planes, MinIsWhite left to do) for a TIFF about to be decoded by imagecodecs (``libtiff``:
    it gives planes as (samples, height, width) and the samples as stored) or by Pillow with ``rawmode``
    (which interleaves planes, and inverts 1- to 8-bit MinIsWhite samples only: "L;I", "1;I")."""
    separate = libtiff and tiff_int(tags, 284, 1) == 2
    white = tags.get(262) == 0 and (libtiff or not rawmode.rpartition(";")[2].endswith("I"))  # 0 is tiff_int's "absent"
    return separate, white


def tiff_jpeg_strips_misfit(tags: TiffImagePlugin.ImageFileDirectory_v2, data: bytes) -> str | None:
    """What is wrong when a JPEG-compressed TIFF's first strip (or tile) is a JPEG of another size than the
    header's strip (or tile), or None: libtiff decodes the strips into rows of the header's width with no
    error (a 320 px wide file whose width says 10000 was stored as stripes on black)."""
    if tiff_int(tags, 259, 1) != 7:  # JPEG ("new style"); old-style JPEG (6) is refused by its decoders
        return None
    tiled = 324 in tags
    offsets, counts = tags.get(324 if tiled else 273) or (), tags.get(325 if tiled else 279) or ()
    if not offsets or not counts:
        return None
    start, length = int(offsets[0]), int(counts[0])
    frame = jpeg.frame_size(data[start:start + min(length, 1 << 20)])
    if frame is None:  # no SOF in reach, or a depth libjpeg-turbo's 8-bit check does not cover: the decoder says
        return None
    width, height = tiff_int(tags, 256, 0), tiff_int(tags, 257, 0)
    if tiled:
        want = (tiff_int(tags, 322, 0), tiff_int(tags, 323, 0))
    else:
        want = (width, min(tiff_int(tags, 278, height) or height, height))
    if frame == want:
        return None
    part, (fw, fh) = "tile" if tiled else "strip", frame
    return f"its first JPEG {part} is {fw}x{fh} where its header ({width}x{height}) says {want[0]}x{want[1]}"


def tiff(data: bytes) -> Header:
    """The first IFD of a TIFF whose samples have no Pillow mode (float 16/32/64-bit, 32-bit integer or
    signed RGB), read with Pillow's tag parser; imagecodecs (libtiff) decodes its pixels. Another
    layout (palette of deep samples, CMYK floats, ...) is ``E_UNSUPPORTED``."""
    fp = io.BytesIO(data)
    try:
        tags = TiffImagePlugin.ImageFileDirectory_v2(fp.read(16 if data[2:4] in (b"+\x00", b"\x00+") else 8))
        fp.seek(tags.next)
        tags.load(fp)
    except (OSError, SyntaxError, struct.error) as exc:
        raise HeaderError(f"TIFF: {exc}", truncated=isinstance(exc, EOFError | struct.error)) from None
    samples, photometric, kind = (tiff_int(tags, tag, default) for tag, default in ((277, 1), (262, -1), (339, 1)))
    if (samples, photometric) not in _TIFF_LAYOUTS or kind not in (1, 2, 3):
        raise input_error(errors.UNSUPPORTED, f"TIFF with {samples} samples of format {kind} "
                          f"(photometric {photometric}): no decoder for this layout")
    exif = Image.Exif()
    for tag in (0x010F, 0x0110, 0x0112, 0x0132):  # Make, Model, Orientation, DateTime
        if tag in tags:
            exif[tag] = tags[tag]
    return Header(sniff.TIFF, int(tags[256]), int(tags[257]), samples, bits=tiff_int(tags, 258, 8),
                  frames=2 if tags.next else 1, orientation=exif_orientation(exif.tobytes()),
                  icc=bytes(tags.get(34675, b"") or b""), exif=exif.tobytes(),
                  complete=tiff_complete(tags, len(data)), compression=tiff_int(tags, 259, 1),
                  coded_pixels=tiff_claims(data)[0])


def tiff_claims(data: bytes) -> tuple[int, bool]:
    """The largest image the first IFD can stand for (its largest width x its largest height claim), and
    whether it gives a size twice. Such a tag is read differently by Pillow (the last) and libtiff (the
    first), so the pixel limit takes the largest of each, the file never goes to a decoder whose output
    is not checked (DALI), and the decoded size is checked against the header after the decode."""
    big = data[2:4] in (b"+\x00", b"\x00+")
    order = "little" if data[:2] == b"II" else "big"
    pos = int.from_bytes(data[8:16] if big else data[4:8], order)  # type: ignore[arg-type]
    count_size, entry, value_at = (8, 20, 12) if big else (2, 12, 8)
    count = int.from_bytes(data[pos:pos + count_size], order)  # type: ignore[arg-type]
    claims: dict[int, list[int]] = {256: [0], 257: [0]}
    for i in range(min(count, 4096)):
        at = pos + count_size + i * entry
        if at + entry > len(data):
            break
        tag, kind = int.from_bytes(data[at:at + 2], order), int.from_bytes(data[at + 2:at + 4], order)  # type: ignore[arg-type]
        if tag in claims and kind in (3, 4, 16):  # SHORT, LONG, LONG8
            size = 2 if kind == 3 else 8 if kind == 16 else 4
            claims[tag].append(int.from_bytes(data[at + value_at:at + value_at + size], order))  # type: ignore[arg-type]
    return max(claims[256]) * max(claims[257]), len(claims[256]) > 2 or len(claims[257]) > 2

"""TIFF: the first IFD's tags read for what its decoders get wrong or disagree on (sizes given twice,
strips that do not fit the size, MinIsWhite and planar samples, extra samples, JPEG strips of another
size), and the header of a TIFF whose samples have no Pillow mode."""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image, TiffImagePlugin

from preprocess.core import errors
from preprocess.core.errors import input_error
from preprocess.pipeline.formats import jpeg, orientations, pixels, sniff
from preprocess.pipeline.formats.containers import Header, HeaderError

_LAYOUTS = {(1, 0): "L", (1, 1): "L", (2, 1): "LA", (3, 2): "RGB", (4, 2): "RGBA"}  # (samples, photometric) -> mode


def int_tag(tags: TiffImagePlugin.ImageFileDirectory_v2, tag: int, default: int) -> int:
    """A TIFF tag's (first) value as an int (per-sample tags are tuples); ``default`` when it is absent or
    empty. 0 is a value (MinIsWhite, an unspecified extra sample), not an absence."""
    value = tags.get(tag)
    if isinstance(value, tuple):
        value = value[0] if value else None
    return default if value is None else int(value)


def complete(tags: TiffImagePlugin.ImageFileDirectory_v2, size: int) -> bool:
    """Whether every strip (or tile) the IFD declares lies in the ``size`` bytes of the file."""
    ends = [int(o) + int(n) for o, n in zip(tags.get(273, tags.get(324, ())) or (),
                                            tags.get(279, tags.get(325, ())) or (), strict=False)]
    return max(ends, default=0) <= size


def strips_oversized(tags: TiffImagePlugin.ImageFileDirectory_v2) -> str | None:
    """What is wrong when an uncompressed, stripped TIFF's strips hold more bytes than its size needs (a
    byte of padding a strip allowed), or None: its width or height then lies about the samples, which an
    uncompressed decode takes row by row at the wrong width (stripes, no error)."""
    counts = tags.get(279) or ()
    if int_tag(tags, 259, 1) != 1 or not counts or 273 not in tags:
        return None
    width, height = int_tag(tags, 256, 0), int_tag(tags, 257, 0)
    samples = int_tag(tags, 277, 1)
    per_sample = tags.get(258, 1)
    bits = sum(int(b) for b in per_sample) if isinstance(per_sample, tuple) else int(per_sample or 1) * samples
    planes = samples if int_tag(tags, 284, 1) == 2 else 1
    row = -(-width * bits // planes // 8)  # a row of one plane (planar: every sample its own plane)
    rows = min(int_tag(tags, 278, height) or height, height)
    strips = len(counts)
    room = planes * -(-height // max(rows, 1)) * rows * row + strips  # whole strips, a byte of padding each
    total = sum(int(n) for n in counts)
    return None if total <= room else f"its strips hold {total} bytes, more than its {width}x{height} needs"


def layout(tags: TiffImagePlugin.ImageFileDirectory_v2, rawmode: str, *, libtiff: bool) -> tuple[bool, bool]:
    """(separate planes, MinIsWhite left to do) for a TIFF about to be decoded by imagecodecs (``libtiff``:
    it gives planes as (samples, height, width) and the samples as stored) or by Pillow with ``rawmode``
    (which interleaves planes, and inverts 1- to 8-bit MinIsWhite samples only: "L;I", "1;I")."""
    separate = libtiff and int_tag(tags, 284, 1) == 2
    white = int_tag(tags, 262, -1) == 0 and (libtiff or not rawmode.rpartition(";")[2].endswith("I"))
    return separate, white


def pillow_misreads(tags: TiffImagePlugin.ImageFileDirectory_v2) -> bool:
    """Uncompressed layouts Pillow's raw decoder opens and reads wrong: signed integers (read as unsigned),
    32-bit unsigned grey (read as signed: high values wrap), YCbCr (4 bytes a pixel; E_TRUNCATED)."""
    signed = int_tag(tags, 339, 1) == 2
    photometric = int_tag(tags, 262, -1)
    grey32 = int_tag(tags, 258, 8) == 32 and int_tag(tags, 339, 1) == 1 and photometric in (0, 1)
    ycbcr = photometric == 6 and int_tag(tags, 259, 1) != 7
    return signed or grey32 or ycbcr


def interleaved(arr: np.ndarray, stored: tuple[int, int], *, separate: bool, extra: int, bits: int) -> np.ndarray:
    """imagecodecs' samples of a ``stored`` (width, height) TIFF as pixels: separate planes (it gives them as
    (samples, height, width); a valid file was refused, "77x3 pixels") interleaved, premultiplied alpha
    (ExtraSamples 1) divided out, an unspecified extra sample (ExtraSamples 0: not alpha) dropped."""
    w, h = stored
    if separate and arr.ndim == 3 and arr.shape[1:] == (h, w):
        arr = np.moveaxis(arr, 0, -1)
    if extra == 1 and arr.ndim == 3 and arr.shape[2] in (2, 4):
        arr = pixels.unpremultiplied(arr, bits)
    elif extra == 0 and arr.ndim == 3 and arr.shape[2] in (2, 4):
        arr = arr[:, :, :-1]
    return arr


def jpeg_strips_misfit(tags: TiffImagePlugin.ImageFileDirectory_v2, data: bytes) -> str | None:
    """What is wrong when a JPEG-compressed TIFF's first strip (or tile) is a JPEG of another size than the
    header's strip (or tile), or None: libtiff decodes the strips into rows of the header's width with no
    error (a 320 px wide file whose width says 10000 was stored as stripes on black)."""
    if int_tag(tags, 259, 1) != 7:  # JPEG ("new style"); old-style JPEG (6) is refused by its decoders
        return None
    tiled = 324 in tags
    offsets, counts = tags.get(324 if tiled else 273) or (), tags.get(325 if tiled else 279) or ()
    if not offsets or not counts:
        return None
    start, length = int(offsets[0]), int(counts[0])
    frame = jpeg.frame_size(data[start:start + min(length, 1 << 20)])
    if frame is None:  # no SOF in reach, or a depth libjpeg-turbo's 8-bit check does not cover: the decoder says
        return None
    width, height = int_tag(tags, 256, 0), int_tag(tags, 257, 0)
    if tiled:
        want = (int_tag(tags, 322, 0), int_tag(tags, 323, 0))
    else:
        want = (width, min(int_tag(tags, 278, height) or height, height))
    if frame == want:
        return None
    part, (fw, fh) = "tile" if tiled else "strip", frame
    return f"its first JPEG {part} is {fw}x{fh} where its header ({width}x{height}) says {want[0]}x{want[1]}"


def reduced_copy(tags: TiffImagePlugin.ImageFileDirectory_v2, *, more: bool) -> str | None:
    """Why the first IFD is not the image (None when it is): NewSubfileType bit 0 or SubfileType 2 mark a
    reduced-resolution copy (a thumbnail before the full image); decoded, it was stored as the photo. A file of
    one page (``more`` False) so marked is read: its only page is the image (some writers mislabel it)."""
    if more and (int_tag(tags, 254, 0) & 1 or int_tag(tags, 255, 1) == 2):
        return ("its first page is a reduced-resolution copy (NewSubfileType 1): the full image is on a later "
                "page, which is not read")
    return None


def header(data: bytes) -> Header:
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
    if why := reduced_copy(tags, more=bool(tags.next)):
        raise input_error(errors.UNSUPPORTED, f"TIFF: {why}")
    samples, photometric, kind = int_tag(tags, 277, 1), int_tag(tags, 262, -1), int_tag(tags, 339, 1)
    if (samples, photometric) not in _LAYOUTS or kind not in (1, 2, 3):
        raise input_error(errors.UNSUPPORTED, f"TIFF with {samples} samples of format {kind} "
                          f"(photometric {photometric}): no decoder for this layout")
    exif = Image.Exif()
    for tag in (0x010F, 0x0110, 0x0112, 0x0132):  # Make, Model, Orientation, DateTime
        if tag in tags:
            exif[tag] = tags[tag]
    return Header(sniff.TIFF, int(tags[256]), int(tags[257]), samples, bits=int_tag(tags, 258, 8),
                  frames=2 if tags.next else 1, orientation=orientations.from_exif(exif.tobytes()),
                  icc=bytes(tags.get(34675, b"") or b""), exif=exif.tobytes(),
                  complete=complete(tags, len(data)), compression=int_tag(tags, 259, 1),
                  coded_pixels=claims(data)[0], min_is_white=photometric == 0,
                  separate_planes=int_tag(tags, 284, 1) == 2, extra_samples=int_tag(tags, 338, -1))


def claims(data: bytes) -> tuple[int, bool]:
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

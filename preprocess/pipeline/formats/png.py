"""PNG's chunks, read from the bytes: their CRCs (Pillow checks only some), the EXIF block wherever it is
(Pillow's ``getexif()`` decodes the pixels to find one after them), and whether the image data is the
size the header says (Pillow decodes data that ends early, or is cut at the wrong width, without an error);
a grey or RGB image's tRNS colour key, which Pillow keeps aside (:func:`keyed_out`); its cICP colour
encoding, which Pillow does not read (:func:`cicp`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import imagecodecs
import numpy as np
from PIL import Image

from preprocess.core import errors
from preprocess.core.errors import input_error


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(type, start of its body, end of its body) of each whole chunk of a PNG, up to IEND; stops at a chunk
    cut off by the end of the file."""
    pos = 8
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        end = pos + 8 + length
        if end + 4 > len(data):
            return
        yield data[pos + 4:pos + 8], pos + 8, end
        if data[pos + 4:pos + 8] == b"IEND":
            return
        pos = end + 4


def crc_error(data: bytes) -> str | None:
    """The name of the first chunk whose CRC does not match (Pillow checks only some), or None.
    A chunk cut off by the end of the file is left to the decoder (``E_TRUNCATED``)."""
    for kind, start, end in _png_chunks(data):
        if zlib.crc32(memoryview(data)[start - 4:end]) != int.from_bytes(data[end:end + 4], "big"):  # no copy
            return kind.decode("latin-1")
    return None


_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type


def data_mismatch(data: bytes) -> str | None:
    """What is wrong when a PNG's image data (its IDAT chunks, inflated) holds fewer or more bytes than its
    header's size needs, or None. Pillow stored an image whose data ends early with its missing rows
    black, and a header whose size disagrees with the data fails there only when a row's first byte
    happens not to be a filter type (else the rows are cut at the wrong places: wrong pixels)."""
    chunks = list(_png_chunks(data))
    if not chunks or chunks[0][0] != b"IHDR" or chunks[0][2] - chunks[0][1] < 13 or chunks[-1][0] != b"IEND":
        return None  # Pillow's header errors say what is wrong; a file cut off before IEND is E_TRUNCATED
    i = chunks[0][1]
    width, height = int.from_bytes(data[i:i + 4], "big"), int.from_bytes(data[i + 4:i + 8], "big")
    depth, colour, interlaced = data[i + 8], data[i + 9], data[i + 12] == 1
    bits = depth * _PNG_CHANNELS.get(colour, 1)
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    need = 0
    for x0, y0, dx, dy in passes:
        w, h = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if w > 0 and h > 0:
            need += h * (1 + -(-w * bits // 8))
    inflate, got = zlib.decompressobj(), 0
    try:
        for kind, start, end in chunks:
            if kind == b"IDAT" and got <= need:
                got += len(inflate.decompress(memoryview(data)[start:end], need + 1 - got))
    except zlib.error:
        return None  # the decoder says what
    if got == need:
        return None
    if got > need:
        return f"its image data holds more than the {need} bytes its {width}x{height} needs"
    return f"its image data ends after {got} of the {need} bytes its {width}x{height} needs"


def exif(data: bytes) -> bytes:
    """A PNG's EXIF block (its first eXIf chunk, before or after the pixels) as Pillow keeps it
    (``Exif\0\0`` + the TIFF structure), or b"": read from the chunks, so no pixel is decoded (Pillow's
    own ``getexif()`` decodes the whole image to find a chunk after IDAT)."""
    for kind, start, end in _png_chunks(data):
        if kind == b"eXIf":
            body = data[start:end]
            return body if body.startswith(b"Exif\x00\x00") else b"Exif\x00\x00" + body
    return b""


def cicp(data: bytes) -> tuple[int, int] | None:
    """(colour primaries, transfer characteristics) of a PNG's cICP chunk (H.273 code points, PNG's third
    edition: P3, BT.2020, HDR), or None. It overrides an iCCP profile."""
    for kind, start, end in _png_chunks(data):
        if kind == b"cICP" and end - start == 4:
            return data[start], data[start + 1]
        if kind == b"IDAT":  # cICP comes before the image data
            return None
    return None


def gamma(data: bytes) -> tuple[float, tuple[tuple[float, float], ...] | None] | None:
    """A PNG's gAMA (its file gamma: samples are linear light to the power of it) and cHRM (white, red,
    green, blue), when they say how to see it: not with an sRGB, iCCP or cICP chunk (which win, as in
    browsers), nor a gamma within 3% of sRGB's 1/2.2 (taken as sRGB), nor an invalid one (ignored, as libpng
    does). A browser shows a gAMA 1.0 (linear) PNG far brighter than its numbers read as sRGB."""
    found: dict[bytes, bytes] = {}
    for kind, start, end in _png_chunks(data):
        if kind in (b"sRGB", b"iCCP", b"cICP"):
            return None
        if kind in (b"gAMA", b"cHRM"):
            found.setdefault(kind, data[start:end])
        if kind == b"IDAT":  # both come before the image data
            break
    body = found.get(b"gAMA", b"")
    if len(body) != 4 or not 0.05 <= (g := int.from_bytes(body, "big") / 100000) <= 5.0 or abs(g * 2.2 - 1) < 0.03:
        return None
    chrm = found.get(b"cHRM", b"")
    points = [int.from_bytes(chrm[i:i + 4], "big") / 100000 for i in range(0, 32, 4)] if len(chrm) == 32 else []
    if not all(0.0 < v < 1.0 for v in points):  # an invalid cHRM: ignored (the primaries are sRGB's)
        points = []
    return g, tuple(zip(points[::2], points[1::2], strict=True)) if points else None


def keyed_out(img: Image.Image, rgb: Image.Image, depth: int, data: bytes) -> Image.Image:
    """``rgb`` (``img`` converted) with the pixels that match a grey or RGB PNG's tRNS colour key, which are
    transparent, made white (alpha on white): Pillow keeps the key as the raw sample value of ``depth``
    bits. A 16-bit RGB key is matched on the 16-bit samples (``data`` decoded again: Pillow keeps 8 bits)."""
    key = img.info["transparency"]
    arr = np.asarray(img)
    if img.mode == "RGB" and isinstance(key, tuple) and depth == 16:
        deep = np.asarray(imagecodecs.png_decode(data))
        mask = np.all(deep[:, :, :3] == np.asarray(key[:3], dtype=np.int64), axis=2)
    elif img.mode == "RGB" and isinstance(key, tuple):
        mask = np.all(arr == np.asarray(key[:3], dtype=np.int64), axis=2)
    elif img.mode != "RGB" and isinstance(key, int):
        scale = 255 // ((1 << depth) - 1) if img.mode == "L" and depth < 8 else 1  # Pillow spreads 1/2/4 bits
        mask = arr == (bool(key) if img.mode == "1" else key * scale)
    else:
        raise input_error(errors.UNSUPPORTED, f"a {depth}-bit {img.mode} PNG with a tRNS colour key")
    out = np.array(rgb)
    out[mask] = 255
    return Image.fromarray(out, "RGB")

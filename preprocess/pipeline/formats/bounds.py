"""Bounds on how many pieces a header is made of, checked before any parser walks it.

The header parsers (Pillow's for JPEG, PNG and GIF, ours for WebP and the ISO boxes of AVIF, JPEG 2000 and
JPEG XL) read a file piece by piece in Python: a JPEG's segments and fill bytes, a PNG's chunks, a GIF's
extension blocks, a RIFF's chunks, an ISO file's boxes. Each piece can be a few bytes, so a file under the
size limit can hold millions: 3 million empty PNG chunks (36 MB) or 4 million one-byte GIF comments (20 MB)
kept `run` busy for minutes (Pillow joins GIF comments quadratically), 20 MB of JPEG fill bytes or 7 million
empty APP segments took 20-40 s a file, 15 MB of comments in a PPM header 9 s (a hostile-input sweep,
2026-12-07). Bytes that are no piece at all (junk between JPEG segments, stray bytes between GIF blocks)
cost as much: Pillow skips them one at a time, so each counts. No encoder writes more than a few hundred
such pieces (an ICC profile in 255 APP2 segments; PNG image data in 8 KB chunks: 32,000 for a 256 MB file);
a GIF's image data comes in sub-blocks of 254-255 bytes, so a GIF may also hold one piece per 128 bytes of
its size. More than these bounds is ``E_TOO_LARGE`` before any parser starts, as a scan bomb is
(:data:`preprocess.pipeline.formats.jpeg.MAX_SCANS`). Each count stops at its bound: the check costs at most
that many steps.
"""

from __future__ import annotations

from preprocess.core import errors
from preprocess.pipeline.formats import sniff

MAX_HEADER_PIECES = 10_000  # a JPEG's segments and fill bytes before its first scan; a GIF's extension blocks
MAX_CHUNKS = 100_000  # a PNG's or WebP's chunks, an ISO file's top-level boxes
GIF_BYTES_PER_PIECE = 128  # a GIF may hold one sub-block per this many bytes beyond the bound (encoders: 254-255)
MAX_PPM_HEADER = 65_536  # bytes of a PPM's header, with its comments (Pillow reads it a byte at a time)


def check(fmt: str, data: bytes, path: str | None = None) -> None:
    """Raise ``E_TOO_LARGE`` when ``data`` (of format ``fmt``) is made of more pieces than any encoder writes."""
    counter = _COUNTERS.get(fmt)
    if counter is None:
        return
    limit, what = _LIMITS[fmt]
    if fmt == sniff.GIF:  # an image's LZW data comes in sub-blocks of up to 255 bytes: a share of its size
        limit += len(data) // GIF_BYTES_PER_PIECE
    usual = "a few dozen are usual" if fmt == sniff.PPM else "encoders write at most a few hundred"
    if counter(data, limit) > limit:
        raise errors.input_error(errors.TOO_LARGE, f"a {fmt} of more than {limit:,} {what} ({usual}): each is "
                                 "parsed one by one, a parsing bomb", path)


def _jpeg(data: bytes, limit: int) -> int:
    """Markers and fill bytes before the first scan, up to ``limit + 1``."""
    n, i, end = 0, 2, len(data)
    while i + 4 <= end and n <= limit:
        if data[i] != 0xFF:  # junk between segments: Pillow skips it a byte at a time, so each byte counts
            j = data.find(b"\xff", i)
            n += (j if j >= 0 else end) - i
            if j < 0:
                break
            i = j
            continue
        marker = data[i + 1]
        n += 1
        if marker == 0xFF:  # a fill byte
            i += 1
        elif marker == 0xDA:
            break
        else:
            standalone = marker == 0x01 or 0xD0 <= marker <= 0xD8
            i += 2 if standalone else 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return n


def _png(data: bytes, limit: int) -> int:
    n, pos, end = 0, 8, len(data)
    while pos + 12 <= end and n <= limit:
        n += 1
        if data[pos + 4:pos + 8] == b"IEND":
            break
        pos += 12 + int.from_bytes(data[pos:pos + 4], "big")
    return n


def _riff(data: bytes, limit: int) -> int:
    n, pos, end = 0, 12, len(data)
    while pos + 8 <= end and n <= limit:
        n += 1
        size = int.from_bytes(data[pos + 4:pos + 8], "little")
        pos += 8 + size + (size & 1)
    return n


def _boxes(data: bytes, limit: int) -> int:
    if data[:2] == b"\xff\x0a" or data[:4] == b"\xff\x4f\xff\x51":  # a bare JPEG XL or J2K codestream: no boxes
        return 0
    n, pos, end = 0, 0, len(data)
    while pos + 8 <= end and n <= limit:
        n += 1
        size = int.from_bytes(data[pos:pos + 4], "big")
        if size == 1:
            size = int.from_bytes(data[pos + 8:pos + 16], "big")
        if size < 8:  # 0: to the end; else invalid, for the parser to say
            break
        pos += size
    return n


def _gif(data: bytes, limit: int) -> int:
    """Extension blocks, stray bytes and sub-blocks up to the second image (what Pillow walks in Python to
    open the first frame and to tell whether there is another), and the first image's sub-blocks (its
    decoder reads them one by one), up to ``limit + 1``."""
    n, images, end = 0, 0, len(data)
    pos = 13 + (3 << ((data[10] & 7) + 1) if len(data) > 10 and data[10] & 0x80 else 0)
    while pos < end and n <= limit:
        kind = data[pos]
        if kind == 0x21:  # extension: label, then sub-blocks
            pos, pieces = _sub_blocks(data, pos + 2, limit - n)
            n += 1 + pieces
        elif kind == 0x2C and images == 0:  # the first image: descriptor, local palette, LZW size, sub-blocks
            images += 1
            flags = data[pos + 9] if pos + 9 < end else 0
            pos, pieces = _sub_blocks(data, pos + 11 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0), limit - n)
            n += pieces
        elif kind in (0x2C, 0x3B):  # the second image, or the trailer: Pillow stops here
            break
        else:  # a stray byte: Pillow skips it and reads the next
            n += 1
            pos += 1
    return n


def _sub_blocks(data: bytes, pos: int, limit: int) -> tuple[int, int]:
    """(the position after a chain of sub-blocks from ``pos``, how many), counting up to ``limit + 1``."""
    end, n = len(data), 0
    while pos < end and (size := data[pos]) and n <= limit:
        pos += 1 + size
        n += 1
    return pos + 1, n


def _ppm(data: bytes, limit: int) -> int:
    """Bytes of a PPM/PGM/PBM header (magic number, size and maxval, with the whitespace and comments between
    them), up to ``limit + 1``: Pillow reads it a byte at a time."""
    tokens, pos, end = (3 if data[1:2] in b"14" else 4) - 1, 2, min(len(data), limit + 1)
    while pos < end and tokens:
        if data[pos:pos + 1] == b"#":
            nl = [i for i in (data.find(b"\n", pos, end), data.find(b"\r", pos, end)) if i >= 0]
            pos = min(nl, default=end) + 1
        elif data[pos:pos + 1].isspace():
            pos += 1
        else:
            while pos < end and not data[pos:pos + 1].isspace() and data[pos:pos + 1] != b"#":
                pos += 1
            tokens -= 1
    return min(pos, limit + 1)


_COUNTERS = {sniff.JPEG: _jpeg, sniff.PNG: _png, sniff.GIF: _gif, sniff.WEBP: _riff, sniff.AVIF: _boxes,
             sniff.JPEG2000: _boxes, sniff.JXL: _boxes, sniff.PPM: _ppm}
_LIMITS = {sniff.JPEG: (MAX_HEADER_PIECES, "segments and fill bytes before its first scan"),
           sniff.PNG: (MAX_CHUNKS, "chunks"),
           sniff.GIF: (MAX_HEADER_PIECES, "blocks and sub-blocks (one per 128 bytes allowed) in its first frame"),
           sniff.WEBP: (MAX_CHUNKS, "chunks"), sniff.AVIF: (MAX_CHUNKS, "boxes"),
           sniff.JPEG2000: (MAX_CHUNKS, "boxes"), sniff.JXL: (MAX_CHUNKS, "boxes"),
           sniff.PPM: (MAX_PPM_HEADER, "bytes of header")}

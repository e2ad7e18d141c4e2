"""Parsing bombs (hostile input, round 5): files under the size limit made of millions of tiny header pieces,
each of which a parser walks in Python. Before the bound, each of these kept `run` (and a watch daemon, past
its liveness timeout) busy for 20 s to many minutes per file; valid files with many pieces still decode."""

from __future__ import annotations

import io
import struct
import time
import zlib
from collections.abc import Callable

import imagecodecs
import numpy as np
import pytest
from PIL import Image

from preprocess.core.errors import InputError
from preprocess.pipeline.formats import bounds
from preprocess.pipeline.images import decode_rgb, probe

MAX = 120_000_000


def _saved(rgb: np.ndarray, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **options)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _gif_header_end(gif: bytes) -> int:
    return 13 + (3 << ((gif[10] & 7) + 1) if gif[10] & 0x80 else 0)


def _sub_blocks_of(gif: bytes, size: int) -> bytes:
    """``gif`` with its (first) image's LZW data cut into sub-blocks of ``size`` bytes."""
    pos = _gif_header_end(gif)
    assert gif[pos] == 0x2C and not gif[pos + 9] & 0x80  # the image descriptor, no local palette
    start = end = pos + 11  # after the descriptor and the LZW code size
    data = bytearray()
    while gif[end]:
        data += gif[end + 1:end + 1 + gif[end]]
        end += 1 + gif[end]
    return gif[:start] + b"".join(bytes([len(c)]) + c for c in (data[i:i + size] for i in range(0, len(data), size))) \
        + gif[end:]


def _one_byte_sub_blocks(gif: bytes) -> bytes:
    return _sub_blocks_of(gif, 1)


def _after_app0(jpeg: bytes) -> int:
    assert jpeg[2:4] == b"\xff\xe0"  # Pillow writes JFIF's APP0 first
    return 4 + int.from_bytes(jpeg[4:6], "big")


def _riff(chunks: bytes) -> bytes:
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


BOMBS: dict[str, Callable[[np.ndarray], bytes]] = {
    # 36 MB: 3 million empty chunks before the image data (minutes in Pillow's chunk loop)
    "png_empty_chunks": lambda a: (p := _saved(a, "PNG"))[:33] + _chunk(b"zzZz", b"") * 3_000_000 + p[33:],
    # 20 MB: 4 million one-byte comments (Pillow joins them quadratically: over a minute, then more)
    "gif_comments": lambda a: ((g := _saved(a, "GIF"))[:_gif_header_end(g)] + b"\x21\xfe\x01A\x00" * 4_000_000
                               + g[_gif_header_end(g):]),
    # 11 MB: a 2000x2000 GIF's image data in one-byte sub-blocks (1.5 s, 35 s at 256 MB: Pillow walks them to
    # tell whether a second frame follows)
    "gif_sub_blocks": lambda a: _one_byte_sub_blocks(_saved(np.random.default_rng(0).integers(0, 255, (2000, 2000, 3),
                                                                                              np.uint8), "GIF")),
    # 20 MB of fill bytes before the first segment (8 s to probe, 11 more to decode)
    "jpeg_fill": lambda a: (j := _saved(a, "JPEG"))[:2] + b"\xff" * 20_000_000 + j[2:],
    # 28 MB: 7 million empty APP5 segments (20 s to probe, 21 more to decode)
    "jpeg_segments": lambda a: (j := _saved(a, "JPEG"))[:2] + b"\xff\xe5\x00\x02" * 7_000_000 + j[2:],
    # 16 MB: 2 million unknown chunks (5 s in the header parser, more at 256 MB)
    "webp_chunks": lambda a: _riff(b"ZZZZ\x00\x00\x00\x00" * 2_000_000
                                   + bytes(imagecodecs.webp_encode(a, level=80))[12:]),
    # 16 MB: 2 million empty boxes in a JPEG 2000 file (5 s)
    "jp2_boxes": lambda a: ((j := bytes(imagecodecs.jpeg2k_encode(a, codecformat="jp2")))[:j.index(b"jp2h") - 4]
                            + b"\x00\x00\x00\x08free" * 2_000_000 + j[j.index(b"jp2h") - 4:]),
    # one junk byte, then 2 million empty APP5 segments: Pillow skips junk and walks on (a count that stopped
    # at the junk let the 7 MB file through: 1.5 s to open, the 40 s bomb again at 28 MB)
    "jpeg_junk_then_segments": lambda a: ((j := _saved(a, "JPEG"))[:_after_app0(j)] + b"\x00"
                                          + b"\xff\xe5\x00\x02" * 2_000_000 + j[_after_app0(j):]),
    # one stray byte, then 400,000 one-byte comments (2 MB; Pillow skips the byte and joins the comments)
    "gif_junk_then_comments": lambda a: ((g := _saved(a, "GIF"))[:_gif_header_end(g)] + b"\x00"
                                         + b"\x21\xfe\x01A\x00" * 400_000 + g[_gif_header_end(g):]),
    # 15 MB of comments in a PPM header (9 s: Pillow reads it a byte at a time)
    "ppm_comments": lambda a: b"P6\n" + b"#c\n" * 5_000_000 + b"64 48\n255\n" + a.tobytes(),
}


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_a_header_of_millions_of_pieces_is_refused_at_once(rgb: np.ndarray, kind: str) -> None:
    bomb = BOMBS[kind](rgb)
    start = time.perf_counter()
    with pytest.raises(InputError) as caught:
        probe(bomb, max_pixels=MAX, path="x")
    assert time.perf_counter() - start < 1.0, kind
    assert caught.value.code == "E_TOO_LARGE" and "parsing bomb" in caught.value.message, caught.value.message
    assert caught.value.path == "x" and caught.value.hint


def test_valid_files_with_many_pieces_still_decode(rgb: np.ndarray) -> None:
    """What encoders do write: an ICC profile in 255 APP2 segments and a few hundred fill bytes, image data in
    one-row IDAT chunks, a GIF of hundreds of frames each with its extension blocks, a long PPM comment."""
    jpeg = _saved(rgb, "JPEG")
    app2 = b"".join(b"\xff\xe2\x00\x12ICC_PROFILE\x00" + bytes([i + 1, 255]) + b"xx" for i in range(255))
    png = _saved(rgb, "PNG")
    rows = zlib.compress(b"".join(b"\x00" + rgb[y].tobytes() for y in range(rgb.shape[0])))
    one_row_idats = png[:33] + b"".join(_chunk(b"IDAT", rows[i:i + 7]) for i in range(0, len(rows), 7)) + \
        _chunk(b"IEND", b"")
    frames = [Image.fromarray(np.roll(rgb, i, axis=1)) for i in range(300)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], comment=b"c" * 1000)
    ppm = b"P6\n#" + b"x" * 20_000 + b"\n64 48\n255\n" + rgb.tobytes()
    for data in (jpeg[:2] + app2 + b"\xff" * 300 + jpeg[2:], one_row_idats, gif.getvalue(), ppm):
        assert probe(data, max_pixels=MAX).width == 64
        assert decode_rgb(data).size == (64, 48)
    assert len(one_row_idats) // 19 > 1000  # many chunks, under the bound
    assert bounds.MAX_CHUNKS >= 32_768  # a 256 MB PNG in libpng's 8 KB chunks


def test_a_large_gif_in_254_byte_sub_blocks_is_valid() -> None:
    """Encoders from the classic GIFCOMPR.C (gif.js, AnimatedGifEncoder, netpbm) flush LZW data at 254 bytes:
    a 2000x2000 noise frame is ~17,000 such sub-blocks, over the fixed bound that refused it; a GIF may hold
    one piece per 128 bytes of its size beyond it."""
    noise = np.random.default_rng(1).integers(0, 255, (2000, 2000, 3), np.uint8)
    gif = _sub_blocks_of(_saved(noise, "GIF"), 254)
    assert len(gif) // 255 > bounds.MAX_HEADER_PIECES
    assert probe(gif, max_pixels=MAX).width == 2000

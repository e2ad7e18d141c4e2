"""Decoding what a store holds: stored bytes are checked against the size their row records before a pixel
is decoded, and the training reader decodes a bare stored JPEG without copies.

A row is written from the pixels it stores, so stored bytes whose header gives another size are damaged or
hostile (:func:`check_recorded`: ``E_CORRUPT``): a header claiming 60000x60000 would otherwise be decoded
for seconds, and gigabytes, before failing in a reader's worker or a web page; one with its sides swapped
would read as a silently wrong image. Every face that decodes stored bytes (the training reader,
``preprocess.open_dataset``, the web UI's pictures) checks first; a download gives the bytes as stored.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
from PIL import Image

from preprocess.core import errors
from preprocess.core.errors import input_error
from preprocess.pipeline.formats import jpeg
from preprocess.pipeline.images import decode_rgb, header_size

_SCRATCH = threading.local()  # per thread: the buffer decode_rgb_into decodes bare JPEGs into
SCRATCH_MAX = 64 * 2**20  # its largest size (16 MP): a larger image takes decode_rgb, nothing is kept for it


def check_recorded(data: bytes, recorded: tuple[int, int], path: str | None = None) -> None:
    """``E_CORRUPT`` unless the header of stored bytes gives the (oriented) size their row records, read
    from the header alone (its own errors, for bytes that have none, are the header probe's)."""
    size = jpeg.bare_size(data)
    _check(size if size is not None else header_size(data, path), recorded, path)


def _check(header: tuple[int, int], recorded: tuple[int, int], path: str | None) -> None:
    if header != recorded:
        raise input_error(errors.CORRUPT, f"the stored bytes' header says {header[0]}x{header[1]} pixels where "
                          f"their row records {recorded[0]}x{recorded[1]}; not decoded", path)


def decode_rgb_into(data: bytes, use: Callable[[Image.Image], Image.Image], *,
                    recorded: tuple[int, int] | None = None, cover: tuple[int, int] | None = None) -> Image.Image:
    """``use(decode_rgb(data))`` as an RGB image of its own, its header first checked against ``recorded``
    (:func:`check_recorded`) when given. A bare JPEG (:func:`jpeg.bare_size`: what this project stores) is
    decoded without decode_rgb's copies: libjpeg-turbo decodes straight into this thread's reused RGBX
    buffer, which a Pillow image wraps for ``use`` (a reader's resize) to read. The same pixels either way;
    anything else, and bytes libjpeg complains about, take :func:`decode_rgb` (and its error). With ``cover``
    (width, height), a bare JPEG is decoded at the smallest DCT scale that still covers it (a draft, as
    Pillow's ``Image.draft``: ``use`` gets fewer pixels, from another filter); anything else in full."""
    size = jpeg.bare_size(data)
    if recorded is not None:
        _check(size if size is not None else header_size(data), recorded, None)
    need = size[0] * size[1] * 4 if size is not None else 0
    if size is not None and need <= SCRATCH_MAX:
        buf: np.ndarray | None = getattr(_SCRATCH, "buf", None)
        if buf is None or buf.size < need:
            buf = _SCRATCH.buf = np.empty(need, dtype=np.uint8)
        decoded = jpeg.decode_rgbx_into(data, buf[:need], size, cover)
        if decoded is not None:
            wrapped = Image.frombuffer("RGBX", decoded, buf[:decoded[0] * decoded[1] * 4], "raw", "RGBX", 0, 1)
            return use(wrapped).convert("RGB")  # its own pixels, even where ``use`` gave ``wrapped`` back
    out = use(decode_rgb(data))
    return out if out.mode == "RGB" else out.convert("RGB")

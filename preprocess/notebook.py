"""A version of the dataset from Python (a notebook, a script): :func:`open_dataset`, the store's reader with
every item's ``image`` decoded the way the pipeline decodes (pillow-simd: EXIF orientation, alpha on
white, CMYK, 16-bit; AVIF/WebP/JPEG XL through imagecodecs). Public as ``preprocess.open_dataset``."""

from __future__ import annotations

from PIL import Image

from preprocess.pipeline.images import decode_rgb
from preprocess.pipeline.stored_pixels import check_recorded
from preprocess.store import reader
from preprocess.store.reader import Dataset

__all__ = ["Dataset", "open_dataset"]


def open_dataset(location: str, *, ref: str = "main") -> Dataset:
    """Open ``ref`` (a branch, a tag, a snapshot id or unique prefix, or ``REF~N``) of the dataset at
    ``location`` (a local path or ``s3://bucket/prefix``), read-only, pinned to that snapshot.
    ``ds[i]`` has every field, the stored bytes (``jpeg``) and ``image`` (an RGB PIL image; bytes whose header
    gives another size than their row records are an InputError E_CORRUPT, before any decode)."""
    return reader.open_dataset(location, ref=ref, decode=_decode)


def _decode(data: bytes, recorded: tuple[int, int]) -> Image.Image:
    check_recorded(data, recorded)
    return decode_rgb(data)

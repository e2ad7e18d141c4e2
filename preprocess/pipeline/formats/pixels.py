"""Samples of any type to 8 bits, scaled, never saturated.

- unsigned integers of a known bit depth (8..16: PNG/TIFF 16-bit, 10/12-bit AVIF and JPEG 2000): by
  that depth's full range;
- floats within [0, 1]: by 255;
- anything else (signed or 32-bit integers, floats beyond [0, 1]): stretched linearly from the
  image's own minimum..maximum to 0..255, since such samples have no nominal range; NaN is 0.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def to_8bit(arr: np.ndarray, bits: int | None = None) -> np.ndarray:
    """``arr`` as uint8; ``bits``: the samples' bit depth when it is less than their type's."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * np.uint8(255)
    a = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if arr.dtype.kind == "u" and arr.dtype.itemsize <= 2:
        peak = float((1 << bits) - 1) if bits and bits < 8 * arr.dtype.itemsize else float(np.iinfo(arr.dtype).max)
        if hi <= peak:
            return (a * (255.0 / peak) + 0.5).astype(np.uint8)
    elif arr.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        return (a * 255.0 + 0.5).astype(np.uint8)
    span = hi - lo
    if span <= 0:
        return np.zeros(arr.shape, dtype=np.uint8)
    return ((a - lo) * (255.0 / span) + 0.5).clip(0, 255).astype(np.uint8)


def to_image(arr: np.ndarray, *, bits: int | None = None, cmyk: bool = False) -> Image.Image:
    """Decoded samples (HW or HWC) as an 8-bit Pillow image: L, LA, RGB, RGBA or (``cmyk``) CMYK."""
    eight = to_8bit(arr, bits)
    if eight.ndim == 3 and eight.shape[2] == 1:
        eight = eight[:, :, 0]
    if eight.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(eight), "L")
    channels = eight.shape[2]
    mode = {2: "LA", 3: "RGB", 4: "CMYK" if cmyk else "RGBA"}.get(channels)
    if mode is None:  # more channels than colour + alpha (extra samples): keep the first three
        eight, mode = eight[:, :, :3], "RGB"
    return Image.fromarray(np.ascontiguousarray(eight), mode)

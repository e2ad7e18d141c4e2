"""Samples of any type to 8 bits, scaled, never saturated.

- unsigned integers of a known bit depth (8..32: PNG/TIFF 16-bit, 10/12-bit AVIF and JPEG 2000, 32-bit
  TIFF): by that depth's full range;
- floats within [0, 1]: by 255;
- anything else (signed integers, floats beyond [0, 1]): stretched linearly from the image's own
  minimum..maximum, since such samples have no nominal range.

Float infinities are the ends of the range (+inf white, -inf black) and never move the scale (it
comes from the finite samples). A NaN sample has no value at all: any grey stored for it would be a
guess, so an image holding one is refused (``E_CORRUPT``) rather than stored with black holes.

MinIsWhite samples (TIFF) are inverted within their bit depth first (:func:`white_is_zero`).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from preprocess.core import errors
from preprocess.core.errors import input_error


def to_8bit(arr: np.ndarray, bits: int | None = None) -> np.ndarray:
    """``arr`` as uint8; ``bits``: the samples' bit depth when it is less than their type's."""
    if arr.dtype == np.uint8 and not (bits and bits < 8):
        return arr  # (2- and 4-bit samples from imagecodecs come as 0..3 and 0..15: scaled below)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * np.uint8(255)
    a = arr.astype(np.float64)
    finite = a
    if arr.dtype.kind == "f":
        nan = int(np.count_nonzero(np.isnan(a)))
        if nan:
            raise input_error(errors.CORRUPT, f"{nan} of its {a.size} samples are NaN (not a number): they have no "
                              "value to store")
        finite = a[np.isfinite(a)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if arr.dtype.kind == "u" and arr.dtype.itemsize <= 4:
        peak = float((1 << bits) - 1) if bits and bits < 8 * arr.dtype.itemsize else float(np.iinfo(arr.dtype).max)
        if hi <= peak:
            return (a * (255.0 / peak) + 0.5).astype(np.uint8)
    elif arr.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)  # clip: +inf is 1, -inf is 0
    span = hi - lo
    if span <= 0:
        return np.where(a > lo, 255, 0).astype(np.uint8)  # one value (black), +inf white
    return np.clip((a - lo) * (255.0 / span) + 0.5, 0, 255).astype(np.uint8)


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


def unpremultiplied(arr: np.ndarray, bits: int) -> np.ndarray:
    """Colour samples premultiplied by their alpha (the last sample; TIFF ExtraSamples 1) divided by it
    again, so that alpha composites as straight alpha does: unsigned samples of ``bits`` bits, or floats."""
    a = arr[:, :, -1:].astype(np.float64)
    if arr.dtype.kind == "f":
        colour = np.where(a > 0, arr[:, :, :-1] / np.where(a > 0, a, 1.0), 0.0)
        return np.concatenate([colour, a], axis=2).astype(arr.dtype)
    if arr.dtype.kind != "u":
        raise input_error(errors.UNSUPPORTED, f"premultiplied alpha with {arr.dtype} samples")
    peak = float((1 << bits) - 1 if bits < 8 * arr.dtype.itemsize else np.iinfo(arr.dtype).max)
    colour = np.where(a > 0, arr[:, :, :-1] * (peak / np.maximum(a, 1.0)), 0.0)
    out = np.empty_like(arr)
    out[:, :, :-1] = np.clip(colour + 0.5, 0, peak).astype(arr.dtype)
    out[:, :, -1:] = arr[:, :, -1:]
    return out


def white_is_zero(arr: np.ndarray, bits: int) -> np.ndarray:
    """MinIsWhite samples (TIFF Photometric 0: 0 is white) as MinIsBlack: the grey sample inverted within
    its bit depth, an alpha (extra) sample left as it is. Imagecodecs gives the samples as stored, and
    Pillow inverts only 1- to 8-bit ones: a compressed or 16-bit MinIsWhite file was stored as a negative."""
    out = np.array(arr)
    grey = out if out.ndim == 2 else out[:, :, 0]
    if out.dtype == np.bool_:
        np.logical_not(grey, out=grey)
    elif out.dtype.kind == "u":
        peak = (1 << bits) - 1 if bits < 8 * out.dtype.itemsize else int(np.iinfo(out.dtype).max)
        np.subtract(peak, np.minimum(grey, peak), out=grey)
    else:
        raise input_error(errors.UNSUPPORTED, f"TIFF: MinIsWhite (Photometric 0) with {out.dtype} samples")
    return out


def to_rgb(img: Image.Image, *, bits: int | None = None) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB correctly: deep samples scaled (never saturated, see
    :mod:`preprocess.pipeline.formats.pixels`), alpha composited on white, palettes expanded."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img)
        if mode == "I" and arr.size and int(arr.min()) >= 0 and int(arr.max()) <= 65535:
            # mode "I" holds 16-bit PGMs (and PNGs, on older Pillows) as 32-bit ints: the header's depth when
            # known (a dark 16-bit image is not an 8-bit one), else their range unless every value is 8-bit
            arr = arr.astype(np.uint16) if (bits or int(arr.max()) > 255) else arr.astype(np.uint8)
        return Image.fromarray(to_8bit(arr, bits), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    # CMYK (Adobe-style inverted JPEGs are already un-inverted by the decoder), L, P, 1, YCbCr, ...
    return img.convert("RGB")

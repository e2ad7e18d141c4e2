"""Embedded ICC profiles to sRGB, with LittleCMS (imagecodecs' ``cms_*``).

Every stored image, view and embedding is sRGB; a source with another profile (Adobe RGB, Display
P3, a camera or CMYK press profile) is converted on decode, so its pixels are what the photographer
saw, not raw numbers read as if they were sRGB. The rendering intent is **relative colorimetric**:
colours inside sRGB's gamut are reproduced exactly (white point adapted), colours outside it are
clipped to the gamut's edge; for the matrix-shaper profiles of cameras (Adobe RGB, P3) it is the
same as perceptual, which such profiles do not define. A profile LittleCMS cannot read, or one for
another colour space than the pixels', is ignored (as browsers do) and the pixels are taken as sRGB.
"""

from __future__ import annotations

from functools import cache

import imagecodecs
import numpy as np
from PIL import Image

from preprocess.core import errors
from preprocess.core.errors import InputError, input_error

INTENT = imagecodecs.CMS.INTENT.RELATIVE_COLORIMETRIC
_SPACE = {"rgb": "RGB", "gray": "L", "cmyk": "CMYK"}  # profile colour space -> the Pillow mode it fits
def space_of(mode: str) -> str:
    """The profile colour space (as :data:`_SPACE`'s values) that pixels of Pillow ``mode`` are in: grey (the
    modes Pillow bases on L: 1, L, LA, I, I;16, F ...), CMYK, or RGB (palettes and every other mode)."""
    if mode == "CMYK":
        return "CMYK"
    try:
        return "L" if Image.getmodebase(mode) == "L" else "RGB"
    except KeyError:  # a mode Pillow does not know: as its pixels would be converted, RGB
        return "RGB"


@cache
def _srgb() -> bytes:
    return bytes(imagecodecs.cms_profile("srgb"))


def describe(icc: bytes, mode: str | None = None) -> tuple[str, str] | None:
    """(description, Pillow mode it applies to) of a profile that needs converting; None for no
    profile, an sRGB one, one LittleCMS cannot read, or one for another colour space than that of pixels in
    ``mode`` (a grey profile on a colour photo would make it grey: browsers ignore it, and so is it here)."""
    if not icc:
        return None
    try:
        info = imagecodecs.cms_info(icc)
    except Exception:  # a damaged profile: ignored, like browsers do
        return None
    name = str(info.get("description") or info.get("model") or "unnamed ICC profile")
    space = _SPACE.get(str(info.get("colorspace", "")).lower())
    if space is None or (space == "RGB" and "srgb" in name.lower().replace(" ", "")):
        return None
    if mode is not None and space_of(mode) != space:
        return None
    return name, space


def to_srgb(img: Image.Image, icc: bytes) -> Image.Image | None:
    """``img`` (L, RGB or CMYK, 8-bit) in sRGB as RGB when ``icc`` applies to it; None when it does not, or
    when LittleCMS builds no transform from it (a profile it reads but cannot use: ignored, as browsers do)."""
    found = describe(icc)
    if found is None or found[1] != img.mode:
        return None
    arr = np.asarray(img)
    colorspace = {"L": "gray", "RGB": "rgb", "CMYK": "cmyk"}[img.mode]
    try:
        out = imagecodecs.cms_transform(arr, icc, _srgb(), colorspace=colorspace, outcolorspace="rgb",
                                        intent=INTENT)
    except Exception:  # the profile could not build a transform: as if it were not there
        return None
    return Image.fromarray(np.ascontiguousarray(out), "RGB")


XY = tuple[float, float]
SRGB_PRIMARIES: tuple[XY, XY, XY] = ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06))
D65: XY = (0.3127, 0.3290)
BT2020: tuple[XY, XY, XY] = ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046))
P3: tuple[XY, XY, XY] = ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060))
DCI_WHITE: XY = (0.314, 0.351)
# ITU-T H.273 colour primaries whose gamut is not sRGB's: (red, green, blue), white
_ILLUMINANT_C: XY = (0.310, 0.316)
_BT601_525: tuple[XY, XY, XY] = ((0.630, 0.340), (0.310, 0.595), (0.155, 0.070))
_PRIMARIES = {4: (((0.67, 0.33), (0.21, 0.71), (0.14, 0.08)), _ILLUMINANT_C),  # BT.470 System M
              5: (((0.64, 0.33), (0.29, 0.60), (0.15, 0.06)), D65),  # BT.601 625 lines (PAL)
              6: (_BT601_525, D65), 7: (_BT601_525, D65),  # BT.601 525 lines, SMPTE 240M
              8: (((0.681, 0.319), (0.243, 0.692), (0.145, 0.049)), _ILLUMINANT_C),  # generic film
              9: (BT2020, D65), 11: (P3, DCI_WHITE), 12: (P3, D65),  # BT.2020, DCI-P3, Display P3
              22: (((0.630, 0.340), (0.295, 0.605), (0.155, 0.077)), D65)}  # EBU Tech 3213
GAMMA = {4: 2.2, 5: 2.8, 8: 1.0, 17: 2.6}  # H.273 transfers that are a plain power law (17: JPEG XL's DCI)
HDR = {16: "PQ (SMPTE 2084)", 18: "HLG"}  # transfers that need tone mapping to be seen in sRGB


def from_encoding(primaries: int, transfer: int, fmt: str) -> bytes:
    """An ICC profile for a colour encoding given as H.273 code points (AVIF's ``nclx``, PNG's ``cICP``), or
    b"" for sRGB's (BT.709 primaries, or unspecified; the sRGB curve, or a video one, which is shown as sRGB).
    An HDR transfer is E_UNSUPPORTED: stored as sRGB it would be wrong, and tone mapping is not done here."""
    if transfer in HDR:
        raise hdr(fmt, transfer)
    if primaries not in _PRIMARIES and transfer not in GAMMA:
        return b""
    rgb, white = _PRIMARIES.get(primaries, (SRGB_PRIMARIES, D65))
    return profile(rgb, white, GAMMA.get(transfer))


def hdr(fmt: str, transfer: int) -> InputError:
    return input_error(errors.UNSUPPORTED, f"{fmt} with an HDR transfer, {HDR[transfer]}: no tone mapping to "
                       "sRGB here")


def profile(rgb: tuple[XY, XY, XY] | None, white: XY, gamma: float | None) -> bytes:
    """An ICC profile: RGB with ``rgb`` primaries (grey when None), ``white``, and a power law of ``gamma``
    (None: the sRGB curve)."""
    curve: dict[str, object] = {"gamma": gamma} if gamma is not None else {"transferfunction": _srgb_curve()}
    points = [white, *(rgb or ())]
    try:
        if not all(0.0 < x < 1.0 and 0.0 < y < 1.0 for x, y in points):
            raise ValueError(f"chromaticities outside (0, 1): {points}")
        if rgb is None:
            return bytes(imagecodecs.cms_profile("gray", whitepoint=[*white, 1.0], **curve))  # type: ignore[arg-type]
        chroma = [v for xy in rgb for v in (*xy, 1.0)]
        return bytes(imagecodecs.cms_profile("rgb", whitepoint=[*white, 1.0], primaries=chroma, **curve))  # type: ignore[arg-type]
    except Exception as exc:  # LittleCMS refuses primaries on one line, a white of (0, 0) ...
        raise input_error(errors.CORRUPT, f"its colour encoding makes no colour profile ({exc})") from None


@cache
def _srgb_curve() -> np.ndarray:
    x = np.linspace(0.0, 1.0, 4096)
    return np.round(np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4) * 65535).astype(np.uint16)

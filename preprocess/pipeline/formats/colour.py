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

INTENT = imagecodecs.CMS.INTENT.RELATIVE_COLORIMETRIC
_SPACE = {"rgb": "RGB", "gray": "L", "cmyk": "CMYK"}  # profile colour space -> the Pillow mode it fits


@cache
def _srgb() -> bytes:
    return bytes(imagecodecs.cms_profile("srgb"))


def describe(icc: bytes) -> tuple[str, str] | None:
    """(description, Pillow mode it applies to) of a profile that needs converting; None for no
    profile, an sRGB one, or one LittleCMS cannot read."""
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
    return name, space


def to_srgb(img: Image.Image, icc: bytes) -> Image.Image:
    """``img`` (L, RGB or CMYK, 8-bit) in sRGB as RGB when ``icc`` applies to it; else unchanged."""
    found = describe(icc)
    if found is None or found[1] != img.mode:
        return img
    arr = np.asarray(img)
    colorspace = {"L": "gray", "RGB": "rgb", "CMYK": "cmyk"}[img.mode]
    try:
        out = imagecodecs.cms_transform(arr, icc, _srgb(), colorspace=colorspace, outcolorspace="rgb",
                                        intent=INTENT)
    except Exception:  # the profile could not build a transform: as if it were not there
        return img
    return Image.fromarray(np.ascontiguousarray(out), "RGB")

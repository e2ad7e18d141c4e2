"""EXIF orientation: the eight orientations as Pillow transposes, and one rule for reading the tag.

EXIF 2.32 (tag 0x0112) makes Orientation a SHORT 1..8. A whole number 1..8 of another type (a LONG, a
RATIONAL 6/1) counts as Pillow's ``exif_transpose`` reads it; anything else (text such as "6", out of
range, missing, a damaged block) is 1, so every header reader and engine agrees on a file's pixels.
"""

from __future__ import annotations

import numbers

from PIL import Image

# PIL transpose operations for EXIF orientations 1..8 (EXIF 2.32, tag 0x0112).
EXIF_OPS: dict[int, tuple[Image.Transpose, ...]] = {
    1: (), 2: (Image.Transpose.FLIP_LEFT_RIGHT,), 3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,), 5: (Image.Transpose.TRANSPOSE,), 6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,), 8: (Image.Transpose.ROTATE_90,),
}


def value(raw: object) -> int:
    """An EXIF Orientation value as the orientation to apply (see the module doc): a whole number 1..8, as
    Pillow looks it up (a RATIONAL 6/1 is 6); text, a fraction or anything else is 1."""
    if not isinstance(raw, numbers.Real) or isinstance(raw, bool):
        return 1
    try:
        whole = int(float(raw))
    except (ValueError, OverflowError, ZeroDivisionError):  # NaN, infinities, a RATIONAL n/0
        return 1
    return whole if whole == raw and whole in EXIF_OPS else 1


def from_exif(exif: bytes) -> int:
    """The orientation an EXIF block (with or without its ``Exif\\0\\0`` header) gives; 1 without one."""
    if not exif:
        return 1
    try:
        block = Image.Exif()
        block.load(exif if exif.startswith(b"Exif") else b"Exif\x00\x00" + exif)
        return value(block.get(0x0112, 1))
    except Exception:  # a damaged EXIF block must not fail a readable image
        return 1


def of_ops(ops: list[Image.Transpose]) -> int:
    """The EXIF orientation that does what ``ops`` do (tried on a small asymmetric image)."""
    probe = Image.frombytes("L", (3, 2), bytes(range(6)))
    want = probe
    for op in ops:
        want = want.transpose(op)
    for code, seq in EXIF_OPS.items():
        got = probe
        for op in seq:
            got = got.transpose(op)
        if got.size == want.size and got.tobytes() == want.tobytes():
            return code
    return 1

"""Compare at 100%: two pictures of one source, pixel for pixel, over a chosen square of the stored
image (the item page's comparer; a slider or flicker in the browser).

A :class:`Window` is the square, parsed from the page's URL (``x``, ``y``, ``side``) and clamped to
the image; by default it is centred on the region that changed most. Each side of the comparer is a
crop of that square: of the source (decoded as the pipeline decodes it and resized to the stored
size), of the stored image, or of the same source stored under another spec or in another version
(the square scaled to that image's size, shown at its own 1:1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from PIL import Image

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError
from preprocess.pipeline.regions import Region

SIDES = (128, 256, 384, 512)  # px: the square's side choices
DEFAULT_SIDE = 256
MAX_CROP = 2048  # px: the largest crop served (a sibling much larger than the stored image)
_OTHER = re.compile(r"^(?P<snapshot>[0-9A-HJKMNP-TV-Z]{20}):(?P<row>\d{1,12})\Z")


def _bad(name: str, value: str, expected: str) -> ConfigError:
    return ConfigError(f"bad {name}={value[:40]!r}: expected {expected}", code=ErrorCode.SERVE_PARAM,
                       hint="fix the URL, or open the item page again")


def _int(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = params.get(name) or ""
    if not text:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise _bad(name, text, f"a whole number from {low} to {high}")
    return int(text)


@dataclass(frozen=True)
class Window:
    """A square of the stored image's pixels (clamped to it: smaller when the image is)."""

    x: int
    y: int
    width: int
    height: int

    @classmethod
    def parse(cls, params: Mapping[str, str], size: tuple[int, int], around: Region | None) -> Window:
        """From ``x``, ``y``, ``side`` (SERVE_PARAM names a bad one); centred on ``around`` by default."""
        w, h = size
        side = _int(params, "side", DEFAULT_SIDE, SIDES[0], SIDES[-1])
        if side not in SIDES:
            raise _bad("side", str(side), f"one of {', '.join(map(str, SIDES))}")
        cx, cy = (around.x + around.width // 2, around.y + around.height // 2) if around else (w // 2, h // 2)
        x = _int(params, "x", max(0, cx - side // 2), 0, max(0, w - 1))
        y = _int(params, "y", max(0, cy - side // 2), 0, max(0, h - 1))
        return cls.at(x, y, side, size)

    @classmethod
    def at(cls, x: int, y: int, side: int, size: tuple[int, int]) -> Window:
        w, h = size
        width, height = min(side, w), min(side, h)
        return cls(min(max(0, x), w - width), min(max(0, y), h - height), width, height)

    @property
    def side(self) -> int:
        return max(self.width, self.height)

    def box(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.x + self.width, self.y + self.height

    def scaled(self, size: tuple[int, int], other: tuple[int, int]) -> tuple[int, int, int, int]:
        """This square in an image of size ``other`` (the same part of the picture), as x, y, w, h."""
        fx, fy = other[0] / max(1, size[0]), other[1] / max(1, size[1])
        x, y = round(self.x * fx), round(self.y * fy)
        width, height = round(self.width * fx), round(self.height * fy)
        return x, y, max(1, min(width, other[0] - x)), max(1, min(height, other[1] - y))

    def cells(self, size: tuple[int, int]) -> list[Window]:
        """The squares of this side that tile the image (the region picker's links)."""
        w, h = size
        xs = sorted({min(x, w - self.width) for x in range(0, w, self.width)})
        ys = sorted({min(y, h - self.height) for y in range(0, h, self.height)})
        return [Window(x, y, self.width, self.height) for y in ys for x in xs]


@dataclass(frozen=True)
class Side:
    """One side of the comparer: a picture of the square, and what it is."""

    key: str  # "source", "stored", or "SNAPSHOT:ROW" (the same source stored elsewhere)
    label: str
    url: str  # its crop
    width: int  # the crop's pixels (shown 1:1)
    height: int
    similarity: float | None  # the row's measured similarity (None for the source itself)
    facts: str  # format, size, quality, spec, where


def parse_side(value: str, default: str, allowed: set[str]) -> str:
    """A side's key from the URL (``a`` / ``b``): ``source``, ``stored`` or ``SNAPSHOT:ROW``."""
    if not value:
        return default
    if value in ("source", "stored") or _OTHER.match(value):
        if value not in allowed:
            raise _bad("side", value, "source, stored, or the same source stored elsewhere (see the page)")
        return value
    raise _bad("side", value, "source, stored or SNAPSHOT:ROW")


def other(value: str) -> tuple[str, int] | None:
    m = _OTHER.match(value)
    return (m["snapshot"], int(m["row"])) if m else None


def crop_box(params: Mapping[str, str], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """``x, y, w, h`` of a crop request, checked against the picture's ``size`` (SERVE_PARAM)."""
    w, h = size
    x = _int(params, "x", 0, 0, max(0, w - 1))
    y = _int(params, "y", 0, 0, max(0, h - 1))
    cw = _int(params, "w", min(DEFAULT_SIDE, w), 1, MAX_CROP)
    ch = _int(params, "h", min(DEFAULT_SIDE, h), 1, MAX_CROP)
    return x, y, min(cw, w - x), min(ch, h - y)


def crop(img: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    x, y, w, h = box
    return img.crop((x, y, x + w, y + h))

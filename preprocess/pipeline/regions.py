"""Where two renderings of one image differ most: the square region with the largest mean absolute
difference, for a zoom (``serve``'s item page, ``tune``'s report). One rule, so both show the same
kind of region."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Region:
    """A tile of the stored image (pixels) and the mean absolute difference inside it (0-255)."""

    x: int
    y: int
    width: int
    height: int
    mean_abs_diff: float

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)``, as :meth:`preprocess.pipeline.engines.base.Engine.crop` takes it."""
        return self.x, self.y, self.x + self.width, self.y + self.height


def abs_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| averaged over the channels: [H, W] float32 (0-255) of two HWC uint8 images."""
    diff: np.ndarray = np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(axis=2, dtype=np.float32)
    return diff


def heat(diff: np.ndarray, gain: float = 4.0) -> np.ndarray:
    """A difference map a person can read: white where unchanged, darker where ``diff`` x ``gain`` is
    larger (uint8 [H, W])."""
    out: np.ndarray = np.clip(255.0 - diff * gain, 0, 255).astype(np.uint8)
    return out


def changed_region(diff: np.ndarray, tile: int | None = None) -> Region:
    """The square tile (side ``tile``, by default a sixth of the shorter side, 16-128 px) with the
    largest mean of ``diff`` [H, W], over tiles at half-tile steps covering the whole image."""
    h, w = diff.shape
    side = tile or int(np.clip(min(h, w) // 6, 16, 128))
    side = max(1, min(side, h, w))
    integral = np.zeros((h + 1, w + 1), dtype=np.float64)
    integral[1:, 1:] = diff.astype(np.float64).cumsum(axis=0).cumsum(axis=1)
    ys = _starts(h, side)
    xs = _starts(w, side)
    y0, x0 = np.meshgrid(ys, xs, indexing="ij")
    sums = integral[y0 + side, x0 + side] - integral[y0, x0 + side] - integral[y0 + side, x0] + integral[y0, x0]
    iy, ix = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return Region(x=int(xs[ix]), y=int(ys[iy]), width=side, height=side,
                  mean_abs_diff=float(sums[iy, ix]) / (side * side))


def _starts(length: int, side: int) -> np.ndarray:
    step = max(1, side // 2)
    starts = list(range(0, length - side + 1, step))
    if starts[-1] != length - side:
        starts.append(length - side)  # the last tile touches the far edge
    return np.array(starts, dtype=np.int64)

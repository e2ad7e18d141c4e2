"""Fixtures of the pipeline's tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def rgb(small_photos: list[Path]) -> np.ndarray:
    """A real photo at 64x48, as the hostile-input tests make their files from (a module may define its own)."""
    src = next(p for p in small_photos if p.name == "chelsea.png")
    return np.asarray(Image.open(src).convert("RGB").resize((64, 48)))

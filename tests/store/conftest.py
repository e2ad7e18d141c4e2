"""Fixtures for the history tests: small real-photo folders and tiny, fast specs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

TINY = """
[pipeline]
name = "{name}"
[resize]
mode = "long-side"
size = 256
[quality]
mode = "fixed"
value = {quality}
[gate]
threshold = 0.5
[batch]
size = 8
"""

PICKS = (("apple.jpg", "fruits.jpg"), ("orange.jpg", "chelsea.png"), ("coffee.png", "rocket.jpg"))


@pytest.fixture(scope="session")
def photo_sets(tmp_path_factory: pytest.TempPathFactory, small_photos: list[Path]) -> list[Path]:
    """Three disjoint folders of two small real photos each."""
    by_name = {p.name: p for p in small_photos}
    root = tmp_path_factory.mktemp("photo_sets")
    out = []
    for n, names in enumerate(PICKS):
        d = root / f"set{n}"
        d.mkdir()
        for name in names:
            shutil.copy(by_name[name], d / name)
        out.append(d)
    return out


@pytest.fixture(scope="session")
def tiny_specs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two fast specs (256 px, one fixed quality each: one probe per image) with different fingerprints."""
    root = tmp_path_factory.mktemp("specs")
    out = []
    for name, quality in (("tiny-q80", 80), ("tiny-q40", 40)):
        p = root / f"{name}.toml"
        p.write_text(TINY.format(name=name, quality=quality))
        out.append(p)
    return out

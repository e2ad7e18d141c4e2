"""Fixtures for the history tests: small real-photo folders, tiny fast specs, and one store with
branches, a tag and diverged histories made by real jobs (:func:`hist`)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import icechunk as ic
import pytest

from preprocess.drivers.run import Summary
from preprocess.store import open_repo, refs
from tests.jobs import run_pillow

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


@dataclass
class Hist:
    store: Path
    repo: ic.Repository
    v1: Summary
    lowq: Summary
    main2: Summary
    again: Summary
    root: str
    sets: list[Path]


@pytest.fixture(scope="session")
def hist(tmp_path_factory: pytest.TempPathFactory, photo_sets: list[Path], tiny_specs: list[Path],
         bad_images: dict[str, tuple[bytes, str]]) -> Hist:
    """``main`` = set0 @q80 (tagged v1), then set1 @q80 + a truncated file; ``low-q`` = branched from
    v1, then set0 + set1 @q40 (main and low-q diverged after v1); ``again`` = branched from the empty
    first snapshot, then set0 @q80 again (same keys as v1, another job). Tests that change refs work on
    a copy (``scratch``)."""
    store = tmp_path_factory.mktemp("hist") / "cams.icechunk"
    bad = tmp_path_factory.mktemp("bad")
    (bad / "truncated.jpg").write_bytes(bad_images["truncated.jpg"][0])
    q80, q40 = tiny_specs
    v1 = run_pillow([photo_sets[0]], store, q80, message="first")
    repo = open_repo(str(store), create=False)
    refs.create_tag(repo, "v1")
    refs.create_branch(repo, "low-q", "v1")
    lowq = run_pillow(photo_sets[:2], store, q40, branch="low-q")
    main2 = run_pillow([photo_sets[1], bad], store, q80, message="second")
    root = refs.history(repo, branch="main")[-1].id
    refs.create_branch(repo, "again", root)
    again = run_pillow([photo_sets[0]], store, q80, branch="again")
    return Hist(store, repo, v1, lowq, main2, again, root, photo_sets)


@pytest.fixture
def scratch(hist: Hist, tmp_path: Path) -> ic.Repository:
    copy = tmp_path / "copy.icechunk"
    shutil.copytree(hist.store, copy)
    return open_repo(str(copy), create=False)

"""File names that are not text, or that would drive a terminal (issue 25 items 1 and 7), through a real
`preprocess run` and every face that reads the rows back: the rest of the folder commits, the exact
bytes of each name are kept, and no name reaches a terminal raw."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from preprocess import open_dataset
from preprocess.core import names
from tests.paths import ROOT
from tests.plain import column, open_root

LATIN1 = b"caf\xe9.jpg"  # a camera upload from a Latin-1 system: not UTF-8
CLEARS = b"e\x1b[2Jx\ncommit snapshot=FORGED.jpg"  # clears the screen, forges a log line
BAD = b"bad\xff\x1b[31m.jpg"  # not an image either: its failure line prints the name


def cli(*args: str | bytes | Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "preprocess", *map(os.fsdecode, args)], cwd=ROOT,
                          capture_output=True, check=False, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "300"})  # no folded cells


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, small_photos: list[Path]) -> Path:
    d = tmp_path_factory.mktemp("names") / "in"
    d.mkdir()
    for raw, photo in ((b"plain.jpg", small_photos[0]), (LATIN1, small_photos[1]), (CLEARS, small_photos[2])):
        (d / os.fsdecode(raw)).write_bytes(photo.read_bytes())
    (d / os.fsdecode(BAD)).write_bytes(b"<html>not an image</html>")
    return d


@pytest.fixture(scope="module")
def store(folder: Path) -> tuple[Path, subprocess.CompletedProcess[bytes]]:
    out = folder.parent / "s.icechunk"
    return out, cli("run", folder, "--store", out, "--engine", "pillow")


def _clean(output: bytes) -> str:
    assert b"\x1b" not in output and b"Traceback" not in output, output
    assert not any(line.startswith(b"commit snapshot=FORGED") for line in output.splitlines()), output
    return output.decode("utf-8")  # strict: no undecodable byte reached the terminal either


def test_a_name_that_is_not_utf8_is_stored_and_the_rest_commits(folder: Path, store: tuple[Path, ...]) -> None:
    """`cp b.jpg in/caf$'\\xe9'.jpg; preprocess run in` failed at its commit with a 51-line
    UnicodeEncodeError and committed nothing; every rerun failed the same way."""
    path, done = store
    assert isinstance(done, subprocess.CompletedProcess)
    assert done.returncode == 3, done.stderr  # one failure (the HTML), everything else committed
    stderr = _clean(done.stderr)
    _clean(done.stdout)
    assert f'failed [E_NOT_IMAGE] "{folder}/bad\\377\\033[31m.jpg": ' in stderr
    root = open_root(path)
    stored = sorted(map(str, column(root, "items/source_path")))
    assert len(stored) == 3 and f'"{folder}/caf\\351.jpg"' in stored and f"{folder}/{os.fsdecode(CLEARS)}" in stored
    assert sorted(os.fsencode(names.real(p)) for p in stored) == sorted(
        os.fsencode(folder) + b"/" + raw for raw in (b"plain.jpg", LATIN1, CLEARS))  # the exact bytes
    assert [names.real(str(p)) for p in column(root, "failures/source_path")] == [f"{folder}/{os.fsdecode(BAD)}"]


def test_every_face_finds_and_shows_the_name_escaped(folder: Path, store: tuple[Path, ...], tmp_path: Path) -> None:
    path = store[0]
    assert isinstance(path, Path)
    for raw, shown in ((LATIN1, f'"{folder}/caf\\351.jpg"'),
                       (CLEARS, f'"{folder}/e\\033[2Jx\\ncommit snapshot=FORGED.jpg"')):
        for query in (folder / os.fsdecode(raw), shown):  # the name as typed, or as printed
            found = cli("show", path, "--item", query)
            assert found.returncode == 0, found.stderr
            assert shown in _clean(found.stdout)
        assert open_dataset(str(path)).find(str(folder / os.fsdecode(raw))) != []
        assert open_dataset(str(path)).find(shown) != []
    exported = cli("export", path, tmp_path / "out")
    assert exported.returncode == 0, exported.stderr
    with open(tmp_path / "out" / "manifest.csv", newline="", encoding="utf-8") as f:
        paths = {row["source_path"] for row in csv.DictReader(f)}
    assert f'"{folder}/caf\\351.jpg"' in paths and f"{folder}/{os.fsdecode(CLEARS)}" in paths
    diff = cli("diff", path, "main~1", "main")
    assert diff.returncode == 0 and "caf\\351.jpg" in _clean(diff.stdout), diff.stderr


def test_a_rerun_adds_nothing_and_exits_0(folder: Path, store: tuple[Path, ...]) -> None:
    """Issue 25 item 10: the rerun found only the failure it had recorded, committed nothing and exited 3."""
    path = store[0]
    assert isinstance(path, Path)
    again = cli("run", folder, "--store", path, "--engine", "pillow")
    assert again.returncode == 0, again.stderr
    text = _clean(again.stdout)
    assert "nothing new: no commit" in text and "1 already recorded" in text, text
    assert "no image processed" in text and "0.0 images/s" not in text, text  # not a rate of nothing
    root = open_root(path)
    assert len(column(root, "items/source_path")) == 3 and len(column(root, "failures/source_path")) == 1

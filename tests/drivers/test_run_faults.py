"""`preprocess run` meeting faults (issue 16 items 3 and 9, issue 14 item 7): a full disk, a job that
is refused before it starts, a job with nothing to do. Each ends in one error line with a stable code
and the documented exit code; a refused job creates nothing; the store stays at its last commit and a
rerun completes. Real subprocesses, real photos, a real filesystem that fills up (tests/smallfs.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.drivers.test_kill import rows
from tests.paths import ROOT
from tests.smallfs import fill, small_tmpfs

CLI = [sys.executable, "-m", "preprocess", "run"]
TINY = '[resize]\nsize = 256\n[quality]\nmode = "fixed"\nvalue = 80\n[batch]\nsize = 4\n'


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *map(str, args), "--engine", "pillow", "--json"], cwd=ROOT, capture_output=True,
                          text=True, check=False, env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=300)


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("error[")]


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY)
    return spec


def test_a_full_disk_is_one_error_line_exit_5_and_the_rerun_completes(tmp_path: Path, small_photos: list[Path],
                                                                       tiny: Path) -> None:
    first, more = tmp_path / "src" / "first", tmp_path / "src" / "more"
    first.mkdir(parents=True)
    more.mkdir()
    for p in small_photos[:2]:
        shutil.copy(p, first / p.name)
    for p in small_photos[2:8]:
        shutil.copy(p, more / p.name)
    with small_tmpfs(tmp_path / "disk", "3m") as disk:
        store = disk / "cams.icechunk"
        done = run(first, "--store", store, "--spec", tiny)
        assert done.returncode == 0, done.stderr
        n_first, _, committed = rows(store)

        filler = fill(disk)
        full = run(tmp_path / "src", "--store", store, "--spec", tiny)
        assert full.returncode == 5, full.stderr
        assert len(error_lines(full.stderr)) == 1 and full.stderr.startswith("error[STORE_FULL]: "), full.stderr
        assert "hint: free space" in full.stderr
        assert json.loads(full.stdout)["error"]["code"] == "STORE_FULL"  # --json: the error document, no summary
        assert len(full.stderr.splitlines()) == 2  # the error and its hint: nothing else
        n, _, head = rows(store)
        assert n == n_first == 2 and head == committed  # at its last commit

        filler.unlink()
        again = run(tmp_path / "src", "--store", store, "--spec", tiny)
        assert again.returncode == 0, again.stderr
        n, keys, head = rows(store)
        assert n == 8 and len(set(keys)) == 8 and head != committed


def test_a_refused_run_creates_nothing(tmp_path: Path, small_photos: list[Path], tiny: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(small_photos[0], photos / small_photos[0].name)
    new = tmp_path / "new.icechunk"

    nope = run(photos, "--store", new, "--branch", "nope", "--spec", tiny)  # a new store has only main
    assert nope.returncode == 2 and error_lines(nope.stderr) == [
        f"error[BRANCH_MISSING]: branch 'nope' does not exist: {new} is a new dataset, whose only branch is 'main'"]
    assert not new.exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = run(empty, "--store", new, "--spec", tiny)  # issue 14, item 7: nothing to do
    assert nothing.returncode == 2 and error_lines(nothing.stderr)[0].startswith("error[NO_SOURCES]: ")
    assert "hint: images are found by their suffix" in nothing.stderr
    assert not new.exists()

    filtered = tmp_path / "filtered"  # every file is left out: not an image name, or hidden
    (filtered / ".cache").mkdir(parents=True)
    (filtered / "notes.txt").write_text("not an image")
    (filtered / ".hidden.jpg").write_bytes(small_photos[0].read_bytes())
    (filtered / ".cache" / "x.jpg").write_bytes(small_photos[0].read_bytes())
    assert run(filtered, "--store", new, "--spec", tiny).returncode == 2
    assert not new.exists()

    made = run(photos, "--store", new, "--spec", tiny)
    assert made.returncode == 0, made.stderr
    before = sorted((p.relative_to(new), p.stat().st_mtime_ns) for p in new.rglob("*"))
    missing = run(photos, "--store", new, "--branch", "nope", "--spec", tiny)  # an existing store
    assert missing.returncode == 2 and error_lines(missing.stderr) == [
        "error[BRANCH_MISSING]: branch 'nope' does not exist in this dataset"]
    assert f"`preprocess branch {new} nope main`" in missing.stderr  # the command that makes it
    assert sorted((p.relative_to(new), p.stat().st_mtime_ns) for p in new.rglob("*")) == before

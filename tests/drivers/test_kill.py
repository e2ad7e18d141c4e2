"""A job killed with SIGKILL at any point leaves the store at its last commit; the rerun completes
without duplicates. Real processes, real photos, real store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import icechunk
import pytest
import zarr
from PIL import Image

from tests.paths import ROOT
from tests.plain import column

CLI = [sys.executable, "-m", "preprocess", "run"]


def distinct_photos(camera_photos: list[Path], dest: Path, count: int, base: int = 0) -> None:
    """``count`` distinct real camera images: crops of the 2560x1600 photos at different offsets."""
    dest.mkdir(parents=True)
    for i in range(count):
        img = Image.open(camera_photos[i % len(camera_photos)]).convert("RGB")
        off = base + 40 * (i // len(camera_photos))
        img.crop((off, off, off + 2000, off + 1300)).save(dest / f"img{i:03d}.jpg", quality=90)


def rows(store: Path) -> tuple[int, list[str], str]:
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(store)))
    head = next(iter(repo.ancestry(branch="main")))
    root = zarr.open_group(repo.readonly_session("main").store, mode="r")
    if "items" not in root:
        return 0, [], head.id
    keys = [f"{s}:{f}" for s, f in zip(column(root, "items/source_sha256"), column(root, "items/fingerprint"),
                                        strict=True)]
    return len(keys), keys, head.id


@pytest.mark.slow
def test_sigkill_at_any_point_then_rerun(tmp_path: Path, camera_photos: list[Path]) -> None:
    first, second = tmp_path / "src" / "a", tmp_path / "src" / "b"
    distinct_photos(camera_photos, first, 8)
    distinct_photos(camera_photos, second, 40, base=20)
    store = tmp_path / "cams.icechunk"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([*CLI, str(first), "--store", str(store), "--engine", "pillow", "--json"],
                          cwd=ROOT, env=env, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr
    n_first, _, committed = rows(store)
    assert n_first == 8

    for delay in (0.2, 1.5, 3.0, 4.5, 6.0):
        proc = subprocess.Popen([*CLI, str(tmp_path / "src"), "--store", str(store), "--engine", "pillow",
                                 "--json"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        n, keys, head = rows(store)
        if head != committed:  # the job got to commit before the kill: it must be whole
            assert n == 48 and len(set(keys)) == 48
            break
        assert n == n_first and len(set(keys)) == n_first

    final = subprocess.run([*CLI, str(tmp_path / "src"), "--store", str(store), "--engine", "pillow", "--json"],
                           cwd=ROOT, env=env, capture_output=True, check=False)
    assert final.returncode == 0, final.stderr
    n, keys, _ = rows(store)
    assert n == 48
    assert len(set(keys)) == 48

"""The watch daemon reads like `run` (issue 16, item 2): a symlink dropped into the watched folder
that leads outside it is a failure row (E_SYMLINK_OUTSIDE) with nothing about its target, unless the
daemon runs with follow_symlinks (in-process daemon, real files, real model, real store)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from preprocess.drivers.watch import WatchDaemon, WatchOptions
from tests.deepfs import deep_folders
from tests.drivers.watch.harness import read_store, sha, wait_until
from tests.paths import ROOT


def _watch(incoming: Path, store: Path, follow: bool, until: int) -> None:
    daemon = WatchDaemon(WatchOptions(folder=str(incoming), store=str(store), engine="pillow", quiet=0.2,
                                      commit_interval=0.3, batch_wait=0.1, metrics=None, rescan_interval=60,
                                      follow_symlinks=follow))
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(daemon.run(install_signals=False)))
    runner.start()
    try:
        wait_until(lambda: (s := read_store(store)) and len(s.items) + len(s.failures) >= until, 90,
                   f"{until} rows in the store")
    finally:
        daemon.stop()
        runner.join(25)
    assert codes == [0]


@pytest.mark.parametrize("follow", [False, True], ids=["default", "follow-symlinks"])
def test_links_out_of_the_watched_folder(tmp_path: Path, small_photos: list[Path], follow: bool) -> None:
    incoming, outside = tmp_path / "incoming", tmp_path / "outside"
    incoming.mkdir()
    outside.mkdir()
    inside, other = small_photos[2].read_bytes(), small_photos[3].read_bytes()
    (outside / "other.jpg").write_bytes(other)
    (incoming / "photo.jpg").write_bytes(inside)
    (incoming / "out.jpg").symlink_to(outside / "other.jpg")
    (incoming / "p.jpg").symlink_to("/etc/passwd")
    store = tmp_path / "s.icechunk"
    _watch(incoming, store, follow, until=3)
    state = read_store(store)
    assert state is not None
    failures = {Path(p).name: code for code, p in state.failures}
    if follow:
        assert sorted(state.shas) == sorted([sha(inside), sha(other)])
        assert failures == {"p.jpg": "E_NOT_IMAGE"}
    else:
        assert state.shas == [sha(inside)]
        assert failures == {"out.jpg": "E_SYMLINK_OUTSIDE", "p.jpg": "E_SYMLINK_OUTSIDE"}


def test_a_folder_reached_through_a_link_moves_its_files_under_the_move_to_folder(
        tmp_path: Path, small_photos: list[Path]) -> None:
    """`watch /data/cam --move-to /mnt/disk/cam/archive` where /data links to /mnt/disk: a committed file
    goes to archive/done/<its name> (its path relative to the resolved folder), once, and is not taken
    again from there."""
    tmp = tmp_path.resolve()
    real = tmp / "disk" / "cam"
    real.mkdir(parents=True)
    (tmp / "data").symlink_to(tmp / "disk")
    photo = small_photos[2].read_bytes()
    (real / "photo.jpg").write_bytes(photo)
    store, archive = tmp / "s.icechunk", real / "archive"
    daemon = WatchDaemon(WatchOptions(folder=str(tmp / "data" / "cam"), store=str(store), engine="pillow",
                                      quiet=0.2, commit_interval=0.3, batch_wait=0.1, metrics=None,
                                      rescan_interval=1, move_to=str(archive)))
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(daemon.run(install_signals=False)))
    runner.start()
    try:
        wait_until((archive / "done" / "photo.jpg").exists, 90, "the photo moved to the archive")
        time.sleep(1.5)  # a rescan or two: nothing more is taken
    finally:
        daemon.stop()
        runner.join(25)
    assert codes == [0]
    assert sorted(p.relative_to(real).as_posix() for p in real.rglob("*") if p.is_file()) == \
        ["archive/done/photo.jpg"]
    state = read_store(store)
    assert state is not None and state.shas == [sha(photo)] and state.failures == []


def test_the_daemon_records_what_run_records_for_what_is_not_a_file(tmp_path: Path, small_photos: list[Path]) -> None:
    """Issue 25 item 11: a FIFO or socket with an image name was skipped by `run` without a failure row, and
    the daemon recorded nothing for a broken link or a link to a device that `run` recorded. Both record
    every one of them, with the same code, and neither blocks on any."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "photo.jpg").write_bytes(small_photos[2].read_bytes())
    os.mkfifo(incoming / "fifo.jpg")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(incoming / "socket.jpg"))
    (incoming / "broken.jpg").symlink_to(incoming / "gone.jpg")
    (incoming / "zero.jpg").symlink_to("/dev/zero")
    (incoming / "fifo-link.jpg").symlink_to(incoming / "fifo.jpg")
    try:
        run = subprocess.run([sys.executable, "-m", "preprocess", "run", str(incoming), "--store",
                              str(tmp_path / "run.icechunk"), "--engine", "pillow", "--json"], cwd=ROOT,
                             capture_output=True, text=True, check=False, timeout=300)
        assert run.returncode == 3, run.stderr
        _watch(incoming, tmp_path / "watch.icechunk", False, until=6)
    finally:
        sock.close()
    by_run, by_watch = read_store(tmp_path / "run.icechunk"), read_store(tmp_path / "watch.icechunk")
    assert by_run is not None and by_watch is not None
    expected = {"fifo.jpg": "E_NOT_FILE", "socket.jpg": "E_NOT_FILE", "broken.jpg": "E_UNREADABLE",
                "zero.jpg": "E_SYMLINK_OUTSIDE", "fifo-link.jpg": "E_NOT_FILE"}
    for state in (by_run, by_watch):
        assert {Path(p).name: code for code, p in state.failures} == expected
        assert len(state.items) == 1


def test_the_daemon_records_a_folder_it_cannot_list(tmp_path: Path, small_photos: list[Path]) -> None:
    """A folder the watch could not list (a path over the system's limit here; no permission elsewhere) was
    only said in the log, once: nothing in the dataset said its images were never ingested. It is now an
    E_UNREADABLE row, as in `run`."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "photo.jpg").write_bytes(small_photos[2].read_bytes())
    deep_folders(incoming)
    _watch(incoming, tmp_path / "watch.icechunk", False, until=2)
    state = read_store(tmp_path / "watch.icechunk")
    assert state is not None and len(state.items) == 1
    ((code, path),) = state.failures
    assert code == "E_UNREADABLE" and len(path) > 4096 and Path(path).name.startswith("d")

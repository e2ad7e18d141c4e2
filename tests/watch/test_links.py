"""The watch daemon reads like `run` (issue 16, item 2): a symlink dropped into the watched folder
that leads outside it is a failure row (E_SYMLINK_OUTSIDE) with nothing about its target, unless the
daemon runs with follow_symlinks (in-process daemon, real files, real model, real store)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from preprocess.watch import WatchDaemon, WatchOptions
from tests.watch.harness import read_store, sha, wait_until


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


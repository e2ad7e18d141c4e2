"""A failed commit is not fatal: the daemon reopens the writer and redoes the window's files
(in-process daemon, real files, real model, real store; the storage failure is simulated)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import StorageError
from preprocess.drivers.watch import WatchDaemon, WatchOptions
from preprocess.store import DatasetWriter
from tests.drivers.watch.harness import read_store, sha, wait_until


def test_a_failed_commit_reopens_the_writer_and_redoes_the_window(tmp_path: Path, small_photos: list[Path],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    incoming, store = tmp_path / "incoming", tmp_path / "cams.icechunk"
    incoming.mkdir()
    real_commit = DatasetWriter.commit
    calls: list[int] = []

    def flaky_commit(self: DatasetWriter, message: str, metadata: Any = None, *, allow_empty: bool = False) -> Any:
        calls.append(self.counts.items_added)
        if len(calls) == 1:  # the first commit fails the way a full disk would
            self.close()
            raise StorageError("simulated: no space left on device", code=ErrorCode.STORE_IO)
        return real_commit(self, message, metadata, allow_empty=allow_empty)

    monkeypatch.setattr(DatasetWriter, "commit", flaky_commit)
    daemon = WatchDaemon(WatchOptions(folder=str(incoming), store=str(store), engine="pillow", quiet=0.3,
                                      commit_interval=0.3, batch_wait=0.1, metrics=None, rescan_interval=60))
    assert not daemon.ready()[0]
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(daemon.run(install_signals=False)))
    runner.start()
    try:
        wait_until(lambda: daemon.ready()[0], 60, "the daemon ready")
        photos = [p.read_bytes() for p in small_photos[:3]]
        for i, data in enumerate(photos):
            (incoming / f"p{i}.jpg").write_bytes(data)
        wait_until(lambda: (s := read_store(store)) and len(s.items) >= 3, 60, "the photos stored after a retry")
        assert daemon.ready()[0] and daemon.live()[0]
    finally:
        daemon.stop()
        runner.join(25)
    assert codes == [0]
    assert len(calls) >= 2 and calls[0] >= 1  # a window with rows failed, later ones committed
    state = read_store(store)
    assert state is not None
    assert sorted(state.shas) == sorted(sha(p) for p in photos)  # redone once each, no duplicates
    assert daemon.metrics.registry.get_sample_value("preprocess_watch_commit_errors_total") == 1


def test_a_device_failure_stops_the_daemon_without_committing_the_window(
        tmp_path: Path, small_photos: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from preprocess.core.errors import DeviceError
    from preprocess.pipeline.process import Processor

    incoming, store = tmp_path / "incoming", tmp_path / "cams.icechunk"
    incoming.mkdir()

    # Test double: no GPU here to fail; the processor raises what a sticky CUDA error becomes. The daemon
    # must not turn it into per-file E_ENGINE failures (and commit them): it stops, exit 6 via the CLI.
    def broken(self: Processor, files: Any) -> Any:
        raise DeviceError("GPU fault: CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(Processor, "process", broken)
    daemon = WatchDaemon(WatchOptions(folder=str(incoming), store=str(store), engine="pillow", quiet=0.3,
                                      commit_interval=0.3, batch_wait=0.1, metrics=None, rescan_interval=60))
    raised: list[BaseException] = []

    def run() -> None:
        try:
            daemon.run(install_signals=False)
        except BaseException as exc:  # what the CLI would turn into its exit code
            raised.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    try:
        wait_until(lambda: daemon.ready()[0] or raised, 60, "the daemon ready")
        (incoming / "p0.jpg").write_bytes(small_photos[0].read_bytes())
        wait_until(lambda: raised, 60, "the daemon stopped by the device failure")
    finally:
        daemon.stop()
        runner.join(25)
    assert isinstance(raised[0], DeviceError) and raised[0].exit_code == 6
    state = read_store(store)
    assert state is None or (not state.items and not state.failures)  # nothing committed, no file blamed

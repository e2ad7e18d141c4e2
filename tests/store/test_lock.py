"""One writer per local store: the advisory lock a DatasetWriter holds (another process fails fast
with STORE_LOCKED naming the holder, or waits), and COMMIT_CONFLICT on storage with real
conditional writes (icechunk's in-memory storage stands in for an object store)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import icechunk as ic
import numpy as np
import pytest

from preprocess.core.errors import ConflictError
from preprocess.store import DatasetWriter, open_repo
from preprocess.store.lock import LOCK_FILE, local_root, lock_store
from tests.paths import ROOT
from tests.store.test_store import make_item

HOLD = """
import sys, time
from preprocess.store import open_writer
w = open_writer(sys.argv[1], create=True)
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
w.close()
"""


def _holder(store: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(store), str(seconds)], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_a_second_process_fails_fast_naming_the_holder(tmp_path: Path) -> None:
    store = tmp_path / "s.icechunk"
    proc = _holder(store, 30)
    try:
        repo = open_repo(str(store), create=False)
        t0 = time.monotonic()
        with pytest.raises(ConflictError) as e:
            DatasetWriter(repo, "main")
        assert time.monotonic() - t0 < 1
        assert e.value.code == "STORE_LOCKED" and e.value.exit_code == 4
        assert f"pid {proc.pid}" in str(e.value) and "--wait" in e.value.hint
    finally:
        proc.kill()
        proc.wait()
    # the holder died without closing: the kernel dropped its lock
    DatasetWriter(repo, "main").close()


def test_waiting_takes_the_lock_when_the_holder_finishes(tmp_path: Path) -> None:
    store = tmp_path / "s.icechunk"
    proc = _holder(store, 0.5)
    try:
        w = DatasetWriter(open_repo(str(store), create=False), "main", wait=20)
        w.close()
    finally:
        proc.wait()
    assert proc.returncode == 0


def test_the_lock_is_shared_within_a_process_and_released_on_close(tmp_path: Path) -> None:
    repo = open_repo(str(tmp_path / "s.icechunk"), create=True)
    root = local_root(repo)
    assert root == tmp_path / "s.icechunk" and (root / LOCK_FILE).exists() is False
    a = DatasetWriter(repo, "main")
    b = DatasetWriter(repo, "main")
    a.close()
    probe = (f"from pathlib import Path; from preprocess.store.lock import lock_store; "
             f"lock_store(Path({str(root)!r}))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False,
                          cwd=ROOT)
    assert proc.returncode != 0 and f"pid {os.getpid()}" in proc.stderr  # b still holds it
    b.close()
    lock_store(root).release()  # free again
    assert local_root(ic.Repository.create(ic.in_memory_storage())) is None


def test_commit_conflict_on_storage_with_conditional_writes(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    repo = ic.Repository.create(ic.in_memory_storage())
    a = DatasetWriter(repo, "main")
    b = DatasetWriter(repo, "main")  # no lock on non-local storage: icechunk orders the commits
    a.add_item(make_item(rng, 1, job="a"))
    b.add_item(make_item(rng, 2, job="b"))
    assert a.commit("a", {}) is not None
    with pytest.raises(ConflictError) as e:
        b.commit("b", {})
    assert e.value.code == "COMMIT_CONFLICT" and "rerun" in e.value.hint


def test_a_second_job_fails_fast_and_its_rerun_stores_everything(tmp_path: Path, photo_sets: list[Path],
                                                                 tiny_specs: list[Path]) -> None:
    from preprocess.drivers.run import JobOptions, run_job
    from preprocess.store import open_dataset

    store = tmp_path / "s.icechunk"
    opts = JobOptions(sources=[str(photo_sets[0])], store=str(store), spec_path=str(tiny_specs[0]),
                      engine="pillow", device="cpu")
    first = run_job(opts)
    proc = _holder(store, 30)  # another job is writing this store
    try:
        second = JobOptions(sources=[str(photo_sets[1])], store=str(store), spec_path=str(tiny_specs[0]),
                            engine="pillow", device="cpu")
        with pytest.raises(ConflictError) as e:
            run_job(second)
        assert e.value.code == "STORE_LOCKED" and f"pid {proc.pid}" in str(e.value)
        assert len(open_dataset(str(store))) == first.stored  # nothing of the refused job
    finally:
        proc.kill()
        proc.wait()
    again = run_job(second)
    assert again.stored == 2 and len(open_dataset(str(store))) == first.stored + 2


def test_refs_change_while_a_writer_runs_but_gc_waits_for_it(tmp_path: Path) -> None:
    from preprocess.store import refs

    store = tmp_path / "s.icechunk"
    proc = _holder(store, 30)  # a job (or the watch daemon) is writing this store
    try:
        repo = open_repo(str(store), create=False)
        assert refs.create_tag(repo, "during", "main").kind == "tag"  # only the refs lock, for a moment
        refs.create_branch(repo, "exp", "during")
        with pytest.raises(ConflictError) as e:
            refs.gc(repo, refs.parse_age("0s"))  # would delete the running job's unreferenced chunks
        assert e.value.code == "STORE_LOCKED"
    finally:
        proc.kill()
        proc.wait()
    assert refs.gc(repo, refs.parse_age("0s")).snapshots == []

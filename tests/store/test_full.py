"""A full disk under the store: one error with a stable code (STORE_FULL), the branch at its last
commit, the lock released, nothing half-made; and all of it works again once space is freed.

The ENOSPC always comes from the kernel: /dev/full (anywhere), and a small tmpfs filled to its last
byte (needs root to mount; skipped otherwise, see tests/smallfs.py).
"""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

from preprocess.core.errors import StorageError
from preprocess.store import DatasetWriter, creating, open_dataset, open_repo, probe_writable
from preprocess.store.storage import storage_error, storage_errors
from tests.smallfs import fill, small_tmpfs
from tests.store.test_store import make_item


def test_the_kernels_enospc_is_store_full_and_other_errors_store_io(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as full, storage_errors("write", tmp_path), open("/dev/full", "wb", 0) as f:
        f.write(b"x")  # the kernel answers ENOSPC
    assert full.value.code == "STORE_FULL" and full.value.exit_code == 5
    assert isinstance(full.value.__cause__, OSError) and full.value.__cause__.errno == errno.ENOSPC
    assert "free space" in full.value.hint and str(tmp_path) in full.value.message
    assert "\n" not in full.value.one_line()

    denied = storage_error(PermissionError(errno.EACCES, "Permission denied"), "write", tmp_path)
    assert denied.code == "STORE_IO" and "Permission denied" in denied.message


def test_a_full_disk_fails_the_commit_keeps_the_branch_and_frees_the_lock(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    with small_tmpfs(tmp_path / "disk", "4m") as disk:
        location = str(disk / "ds.icechunk")
        repo = open_repo(location, create=True)
        first = DatasetWriter(repo, "main")
        first.add_item(make_item(rng, 0))
        committed = first.commit("one row")
        first.close()

        filler = fill(disk)
        with pytest.raises(StorageError) as e:
            probe_writable(location)
        assert e.value.code == "STORE_FULL"
        writer = DatasetWriter(repo, "main")
        for i in range(1, 40):
            writer.add_item(make_item(rng, i))
        with pytest.raises(StorageError) as e:
            writer.commit("does not fit")
        assert e.value.code == "STORE_FULL" and "no space left" in e.value.message
        assert "Traceback" not in e.value.one_line() and "\n" not in e.value.one_line()
        assert len(open_dataset(location)) == 1  # the branch is at its last commit
        assert open_dataset(location).snapshot_id == committed

        filler.unlink()  # space again: the lock was released with the failed writer, a rerun goes through
        probe_writable(location)
        again = DatasetWriter(open_repo(location, create=False), "main")
        for i in range(1, 40):
            again.add_item(make_item(rng, i))
        assert again.commit("fits now") is not None
        again.close()
        assert len(open_dataset(location)) == 40


def test_creating_a_store_on_a_full_disk_leaves_nothing_behind(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        filler = fill(disk)
        location = disk / "new.icechunk"
        with pytest.raises(StorageError) as e:
            open_repo(str(location), create=True)
        assert e.value.code == "STORE_FULL"
        # not a half-made repository that would later read as "foreign"; icechunk's abandoned write of the
        # first transaction log can make its folder again after the cleanup (CI saw it once): such strays
        # are recognised and cleared by the next create (tests/store/test_create.py)
        assert not location.exists() or creating.unfinished(location)
        filler.unlink()
        open_repo(str(location), create=True)
        assert open_repo(str(location), create=False).list_branches() == {"main"}

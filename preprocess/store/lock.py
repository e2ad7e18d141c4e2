"""The locks of a local store: one writer at a time, and a moment's lock around every change of the refs.

Local stores are not safe for concurrent commits (icechunk's local storage has no atomic
conditional writes: two processes committing at once can silently lose a commit). So local stores
use two exclusive advisory locks (``fcntl.flock``, :class:`StoreLock`) on files inside the store:

- ``LOCK_FILE``, the writer lock: every writer (a job, the watch daemon) holds it for its whole life,
  so a second writer fails fast with ConflictError STORE_LOCKED naming the holder's pid (or waits up
  to ``wait`` seconds); gc holds it too (it must not delete a running job's unreferenced chunks);
- ``REFS_LOCK_FILE``, the refs lock: held for a moment around every change of the refs (a commit, a
  tag, a branch, a reset), which icechunk keeps in one object; so tagging while a daemon runs is safe.

Within one process a lock is shared (writers there are ordered by icechunk's own conflict check).
Object stores need neither (icechunk's conditional writes order their commits): :func:`lock_repo`
gives None there.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TypedDict

import icechunk as ic

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConflictError
from preprocess.store.storage import storage_error, storage_errors

LOCK_FILE = ".preprocess.lock"  # one writer at a time
REFS_LOCK_FILE = ".preprocess.refs.lock"  # held for a moment: commits and ref changes


class HolderInfo(TypedDict):
    """What a lock file says about its holder (JSON)."""

    pid: int
    host: str
    purpose: str
    since: str
    branches: list[str]


def local_root(repo: ic.Repository) -> Path | None:
    """The directory of a local-filesystem repository (None for any other storage)."""
    lines = dict(line.split(": ", 1) for line in repr(repo.storage).splitlines() if ": " in line)
    if lines.get("type") != "local filesystem" or not lines.get("path"):
        return None
    return Path(lines["path"]).absolute()


class _Held:
    """One process's flock on one lock file, shared by its holders (reference counted), and what the
    file says about it: pid, host, purpose, since, and the branches its writers write."""

    def __init__(self, fd: int, info: HolderInfo) -> None:
        self.fd = fd
        self.count = 0
        self.info = info

    def note(self, branch: str | None) -> None:
        if branch is not None and branch not in self.info["branches"]:
            self.info["branches"].append(branch)
            self.write()

    def write(self) -> None:
        """Best effort: on a full disk the lock holds all the same, and the write that matters reports it."""
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, json.dumps(self.info).encode(), 0)
        except OSError:
            pass


_held: dict[Path, _Held] = {}
_held_guard = threading.Lock()


class StoreLock:
    """The exclusive lock on a local store; release it with :meth:`release` (or a with-block)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._released = False

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        with _held_guard:
            held = _held.get(self.path)
            if held is None:
                return
            held.count -= 1
            if held.count == 0:
                del _held[self.path]
                os.close(held.fd)  # closing the descriptor releases the flock

    def __enter__(self) -> StoreLock:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def lock_store(root: Path, *, wait: float = 0.0, purpose: str = "", name: str = LOCK_FILE,
               branch: str | None = None) -> StoreLock:
    """Take a lock (by default the writer lock) of the local store at ``root``, waiting up to
    ``wait`` seconds. ``branch``: the branch the holder writes, recorded in the lock file (see
    :func:`lock_holder`; a branch being written is not deleted).

    Raises ConflictError STORE_LOCKED when another process holds it, StorageError STORE_IO when
    the lock file cannot be made.
    """
    path = root / name
    with _held_guard:
        held = _held.get(path)
        if held is not None:
            held.count += 1
            held.note(branch)
            return StoreLock(path)
        with storage_errors("lock", root):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        deadline = time.monotonic() + max(wait, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _holder(fd)
                    os.close(fd)
                    waited = f" (waited {wait:g} s)" if wait > 0 else ""
                    raise ConflictError(f"the dataset at {root} is being written by {holder}{waited}",
                                        code=ErrorCode.STORE_LOCKED,
                                        hint="a local dataset takes one writer at a time: wait for it to "
                                             "finish, or rerun with --wait SECONDS") from None
                time.sleep(0.05)
        holder_entry = _Held(fd, _holder_record(purpose, branch))
        holder_entry.write()
        holder_entry.count = 1
        _held[path] = holder_entry
        return StoreLock(path)


def _holder_record(purpose: str, branch: str | None) -> HolderInfo:
    """Who holds the lock, as its file says (what a second writer's STORE_LOCKED names, and which
    branches a delete must leave alone)."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose or " ".join(sys.argv[:2]),
            "since": datetime.now(UTC).isoformat(timespec="seconds"), "branches": [branch] if branch else []}


def lock_repo(repo: ic.Repository, *, wait: float = 0.0, purpose: str = "",
              name: str = LOCK_FILE, branch: str | None = None) -> StoreLock | None:
    """:func:`lock_store` for a local repository; None (no lock needed) for other storage."""
    root = local_root(repo)
    return lock_store(root, wait=wait, purpose=purpose, name=name, branch=branch) if root is not None else None


@dataclass(frozen=True)
class Holder:
    """Who holds a store's lock, from its lock file. ``branches``: the branches its writers write
    (None when the file does not say: a holder of an older version)."""

    pid: int | None
    host: str
    purpose: str
    since: str
    branches: tuple[str, ...] | None

    @classmethod
    def from_info(cls, info: object) -> Holder:
        d = info if isinstance(info, dict) else {}
        pid, branches = d.get("pid"), d.get("branches")
        return cls(pid=pid if isinstance(pid, int) else None, host=str(d.get("host", "?")),
                   purpose=str(d.get("purpose", "")), since=str(d.get("since", "")),
                   branches=tuple(str(b) for b in branches) if isinstance(branches, list) else None)

    def writes(self, branch: str) -> bool:
        """Whether it may be writing ``branch`` (yes when its file does not say)."""
        return self.branches is None or branch in self.branches

    def __str__(self) -> str:
        if self.pid is None:
            return "another process"
        what = f" ({self.purpose})" if self.purpose else ""
        since = f", since {self.since}" if self.since else ""
        return f"pid {self.pid} on {self.host}{what}{since}"


def lock_holder(root: Path, name: str = LOCK_FILE) -> Holder | None:
    """Who holds the lock ``name`` of the local store at ``root`` now (None: nobody). Probes with a
    shared, non-blocking flock that it drops at once."""
    path = root / name
    with _held_guard:
        held = _held.get(path)
        if held is not None:  # this process holds it
            return Holder.from_info(held.info)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise storage_error(exc, f"open the lock file {path}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder_info(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _holder_info(fd: int) -> Holder:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        info = {}
    return Holder.from_info(info)


def _holder(fd: int) -> str:
    return str(_holder_info(fd))

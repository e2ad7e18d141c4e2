"""Where a dataset lives: the one place a location string becomes icechunk storage.

A location is a local path (``/data/ds``, ``./ds``, ``~/ds``, ``file:///data/ds``) or an S3 prefix
(``s3://bucket/prefix``: icechunk's S3 storage; endpoint, region and credentials from the usual AWS
places, see :mod:`preprocess.sources.objects`; plain-http endpoints allowed for local S3 servers).

Local stores are not safe for concurrent commits (icechunk's local storage has no atomic
conditional writes: two processes committing at once can silently lose a commit). So local stores
use two exclusive advisory locks (``fcntl.flock``, :class:`StoreLock`) on files inside the store:

- ``LOCK_FILE``, the writer lock: every writer (a job, the watch daemon) holds it for its whole life,
  so a second writer fails fast with ConflictError STORE_LOCKED naming the holder's pid (or waits up
  to ``wait`` seconds); gc holds it too (it must not delete a running job's unreferenced chunks);
- ``REFS_LOCK_FILE``, the refs lock: held for a moment around every change of the refs (a commit, a
  tag, a branch, a reset), which icechunk keeps in one object; so tagging while a daemon runs is safe.

Within one process a lock is shared (writers there are ordered by icechunk's own conflict check).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlparse

import icechunk as ic

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, ConflictError, NotFoundError, PreprocessError, StorageError
from preprocess.sources.objects import is_object_url, parse_s3, s3_config
from preprocess.store import creating

LOCK_FILE = ".preprocess.lock"  # one writer at a time
REFS_LOCK_FILE = ".preprocess.refs.lock"  # held for a moment: commits and ref changes

log = logging.getLogger("preprocess.store")

# icechunk's log filter for library use: its warnings, except two it prints on every open of a local
# store ("The LocalFileSystem storage is not safe for concurrent commits": the writer lock here
# answers it, and it goes to Python logging, debug, instead) and on every commit ("conditional PUT is
# enabled but `unsafe_use_metadata` is disabled": a storage setting preprocess chooses, nothing a
# user can act on).
ICECHUNK_LOGS = "warn,icechunk_arrow_object_store=error,icechunk_storage::readback=error"
_logs: dict[str, str] = {}  # the filter this process set, if any


def quiet_icechunk(directive: str | None = None) -> None:
    """Set icechunk's log filter (it prints Rust log lines to stderr itself) once per process:
    ``directive`` when given (the CLI passes ``"error"``), else :data:`ICECHUNK_LOGS` on the first
    open. Never when the user set ``ICECHUNK_LOG``: theirs wins."""
    if "ICECHUNK_LOG" in os.environ or (directive is None and _logs):
        return
    chosen = directive or ICECHUNK_LOGS
    ic.set_logs_filter(chosen)
    _logs["filter"] = chosen


def local_path(location: str) -> Path:
    """The absolute local path a location names (ConfigError STORE_URL for any other scheme)."""
    loc = location.strip()
    if not loc:
        raise ConfigError("the dataset location is empty", code=ErrorCode.STORE_PATH,
                          hint="pass a directory path, e.g. --store ./dataset")
    if "://" in loc:
        url = urlparse(loc)
        if url.scheme != "file":
            raise ConfigError(f"{url.scheme}:// datasets are not supported: {location}", code=ErrorCode.STORE_URL,
                              hint="use a local directory path or s3://BUCKET/PREFIX")
        if url.netloc not in ("", "localhost"):
            raise ConfigError(f"file:// URL with a host is not supported: {location}", code=ErrorCode.STORE_URL,
                              hint="write file:///absolute/path or a plain path")
        loc = unquote(url.path)
    return Path(loc).expanduser().absolute()


def is_remote(location: str) -> bool:
    """True for an object-store location (``s3://...``), False for a local path."""
    return is_object_url(location)


def open_storage(location: str) -> ic.Storage:
    """The icechunk storage for ``location`` (the ONE place storage is chosen)."""
    if is_object_url(location):
        return _s3_storage(location)
    return ic.local_filesystem_storage(str(local_path(location)))


def _s3_storage(location: str) -> ic.Storage:
    loc = parse_s3(location)
    if not loc.prefix:
        raise ConfigError(f"a dataset needs a prefix inside the bucket: {location}", code=ErrorCode.STORE_URL,
                          hint="write s3://BUCKET/PREFIX (icechunk does not create repositories at a bucket root)")
    cfg = s3_config()
    keys: dict[str, Any] = {"from_env": True} if cfg.access_key_id is None else {
        "access_key_id": cfg.access_key_id, "secret_access_key": cfg.secret_access_key,
        "session_token": cfg.session_token}
    return ic.s3_storage(bucket=loc.bucket, prefix=loc.prefix, region=cfg.region, endpoint_url=cfg.endpoint,
                         allow_http=cfg.allow_http, force_path_style=cfg.endpoint is not None, **keys)


def _open_remote(location: str, *, create: bool) -> ic.Repository:
    url = parse_s3(location).url
    storage = open_storage(location)
    if storage_call("inspect", where=url, fn=lambda: ic.Repository.exists(storage)):
        return storage_call("open", where=url, fn=lambda: ic.Repository.open(storage))
    if not create:
        raise NotFoundError(f"no dataset at {url}", code=ErrorCode.STORE_MISSING,
                          hint="check the URL and AWS_ENDPOINT_URL, or create the dataset by running a job into it")
    return storage_call("create", where=url, fn=lambda: ic.Repository.create(storage))


def open_repo(location: str, *, create: bool) -> ic.Repository:
    """Open the icechunk repository at ``location``; with ``create``, make it when missing.

    Errors: ConfigError STORE_URL (unsupported scheme), STORE_PATH (cannot create there),
    STORE_MISSING (no repository and not ``create``), STORE_FOREIGN (a file, or a folder holding
    something else: a usage error, exit 2, whose hint depends on ``create``); StorageError STORE_IO
    (icechunk failed to read or write it).
    """
    quiet_icechunk()
    if is_object_url(location):
        return _open_remote(location, create=create)
    path = local_path(location)
    with storage_errors("access", path):
        return _open_repo(path, create=create)


def check_location(location: str) -> bool:
    """True when a dataset exists at ``location``, False when one can be created there; raises what
    :func:`open_repo` would for a writer (STORE_URL, STORE_PATH, STORE_FOREIGN, STORE_IO), creating
    nothing."""
    if is_object_url(location):
        url = parse_s3(location).url
        storage = open_storage(location)
        return bool(storage_call("inspect", where=url, fn=lambda: ic.Repository.exists(storage)))
    path = local_path(location)
    with storage_errors("access", path):
        if _local_exists(path, ic.local_filesystem_storage(str(path)), create=True):
            return True
        _check_creatable(path)
    return False


def _local_exists(path: Path, storage: ic.Storage, *, create: bool) -> bool:
    """Whether a repository is at ``path``; ConfigError STORE_FOREIGN when something else is (its hint
    for a writer when ``create``, else for a reader)."""
    if path.exists() and not path.is_dir():
        raise _foreign(path, "is a file", create=create)
    if path.is_dir():
        if _is_repo(storage, path):
            return True
        if any(path.iterdir()) and not creating.unfinished(path):  # a killed create is resumed, not foreign
            raise _foreign(path, "is a non-empty directory", create=create)
    return False


def _open_repo(path: Path, *, create: bool) -> ic.Repository:
    storage = ic.local_filesystem_storage(str(path))
    log.debug("%s: icechunk's local storage is not safe for concurrent commits; preprocess's writer lock "
              "allows one writer at a time", path)
    if _local_exists(path, storage, create=create):
        return storage_call("open", where=path, fn=lambda: ic.Repository.open(storage))
    if not create:
        raise NotFoundError(f"no dataset at {path}", code=ErrorCode.STORE_MISSING,
                          hint="check the path, or create the dataset by running a job into it")
    _check_creatable(path)
    # under a creation lock: a kill leaves a create the next command resumes, a second creator opens the
    # first one's store, a failed create (a full disk) removes only what it made (preprocess.store.creating)
    return creating.create(
        path, make=lambda: storage_call("create", where=path, fn=lambda: ic.Repository.create(storage)),
        opened=lambda: storage_call("open", where=path, fn=lambda: ic.Repository.open(storage))
        if _is_repo(storage, path) else None)


def _check_creatable(path: Path) -> None:
    """ConfigError STORE_PATH unless a dataset can be created at ``path`` (absent or an empty directory)."""
    if not path.exists():
        parent = path.parent
        if not parent.is_dir():
            raise ConfigError(f"cannot create the dataset: {parent} is not a directory", code=ErrorCode.STORE_PATH,
                              hint="create the parent directory first (only the last path part is created)")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"cannot create the dataset: {parent} is not writable", code=ErrorCode.STORE_PATH,
                              hint="choose a directory you can write to, or fix its permissions")
    elif not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot create the dataset: {path} is not writable", code=ErrorCode.STORE_PATH,
                          hint="choose a directory you can write to, or fix its permissions")


def _is_repo(storage: ic.Storage, path: Path) -> bool:
    return bool(storage_call("inspect", where=path, fn=lambda: ic.Repository.exists(storage)))


def _foreign(path: Path, what: str, *, create: bool) -> ConfigError:
    """A file or a folder of something else where a dataset was expected: the user named the wrong
    path (exit 2). A writer may create a dataset in a new or empty folder; a reader needs one."""
    hint = ("choose a new or empty directory for the dataset (nothing there was changed)" if create else
            "pass the directory a job wrote (`preprocess run ... --store DIR`); nothing there was read or changed")
    return ConfigError(f"{path} {what}, not a dataset (no icechunk repository)",
                       code=ErrorCode.STORE_FOREIGN, hint=hint)


# -- what a failed storage call means (the ONE mapping) --------------------------------------------

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_FULL_TEXT = ("no space left on device", "disk quota exceeded", "(os error 28)", "(os error 122)")


def is_full(exc: BaseException) -> bool:
    """Whether a failed write failed because the disk is full or a quota is exceeded (ENOSPC,
    EDQUOT): from Python's OSError, or the OS error text inside an icechunk error."""
    if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
        return True
    text = str(exc).lower()
    return any(t in text for t in _FULL_TEXT)


def storage_error(exc: BaseException, action: str, where: Path | str | None = None) -> StorageError:
    """THE mapping of a failed storage call (icechunk, zarr or the OS) to an error with a stable code:
    STORE_FULL when the disk is full or a quota is exceeded, else STORE_IO. Every read and write of
    a dataset's storage goes through it (:func:`storage_errors`; the refs' changes too); commits and
    writers are never left half-done by it (the branch stays at its last commit). ``where``: the
    dataset's location, when the caller knows it."""
    remote = isinstance(where, str) and is_object_url(where)
    what = f"{action} the dataset at {where}" if where is not None else action
    if is_full(exc):
        return StorageError(f"cannot {what}: no space left on the disk (or quota)", code=ErrorCode.STORE_FULL,
                            hint="free space on the disk holding the dataset, then rerun: nothing was committed "
                                 "and the dataset is at its last commit (a rerun skips what is stored)")
    if isinstance(exc, OSError) and not isinstance(exc, ic.IcechunkError):
        detail = exc.strerror or str(exc)
    else:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return StorageError(f"cannot {what}: {detail}", code=ErrorCode.STORE_IO,
                        hint="check the bucket, AWS_ENDPOINT_URL, region and credentials" if remote
                        else "check the dataset's storage: path, permissions, free space")


@contextmanager
def storage_errors(action: str, where: Path | str | None = None) -> Iterator[None]:
    """Map a failed storage call inside the block with :func:`storage_error` (our own errors pass)."""
    try:
        yield
    except (PreprocessError, ic.ConflictError):  # a conflict is not a storage failure: the caller's
        raise
    except (ic.IcechunkError, OSError) as exc:
        raise storage_error(exc, action, where) from exc


def storage_call[T](action: str, fn: Callable[[], T], where: Path | str | None = None) -> T:
    """``fn()``, its storage failure mapped as :func:`storage_errors` maps it."""
    with storage_errors(action, where):
        return fn()


def probe_writable(location: str, size: int = 1 << 20) -> None:
    """Write (and fsync, and remove) ``size`` bytes inside a local dataset's directory: StorageError
    STORE_FULL while its disk cannot take them. Object stores are not probed (they do not fill up)."""
    if is_object_url(location):
        return
    probe = local_path(location) / f".preprocess.probe.{os.getpid()}"
    with storage_errors("write", probe.parent):
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, bytes(size))
                os.fsync(fd)
            finally:
                os.close(fd)
        finally:
            probe.unlink(missing_ok=True)


# -- the writer lock (local stores) ----------------------------------------------------------------


def local_root(repo: ic.Repository) -> Path | None:
    """The directory of a local-filesystem repository (None for any other storage)."""
    lines = dict(line.split(": ", 1) for line in repr(repo.storage).splitlines() if ": " in line)
    if lines.get("type") != "local filesystem" or not lines.get("path"):
        return None
    return Path(lines["path"]).absolute()


class _Held:
    """One process's flock on one lock file, shared by its holders (reference counted), and what the
    file says about it: pid, host, purpose, since, and the branches its writers write."""

    def __init__(self, fd: int, info: dict[str, Any]) -> None:
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


def _holder_record(purpose: str, branch: str | None) -> dict[str, Any]:
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

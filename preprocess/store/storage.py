"""Where a dataset lives: the one place a :class:`~preprocess.sources.location.Location` becomes
icechunk storage, and the one mapping of a failed storage call to an error.

A location is a local path (``/data/ds``, ``./ds``, ``~/ds``, ``file:///data/ds``) or an S3 prefix
(``s3://bucket/prefix``: icechunk's S3 storage; endpoint, region and credentials from the usual AWS
places, see :mod:`preprocess.sources.objects`; plain-http endpoints allowed for local S3 servers).
Every function here takes a parsed :class:`Location` (a string is parsed once, on the way in, by
:meth:`Location.of_store`). The locks of local stores are :mod:`preprocess.store.lock`'s.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import icechunk as ic

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, DamagedError, NotFoundError, PreprocessError, StorageError
from preprocess.sources.location import Location, S3Location, Where, is_object_url
from preprocess.sources.objects import s3_config
from preprocess.store import creating

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


def local_path(location: Where | Location) -> Path:
    """The absolute local path a dataset location names (ConfigError STORE_URL for any other scheme,
    an ``s3://`` URL included)."""
    return Location.of_store(location).local


# icechunk's Python binding finishes a read on a tokio thread, which then drops the awaiting task's context
# holding the GIL; a process that exits in that window has CPython end the thread during finalization, and
# the drop crashes it (SIGSEGV or abort at exit, after all the output: gdb shows pyo3_async_runtimes'
# TaskLocalsInner dropped into context_tp_dealloc). 5 of 48 short scripts that open a store, 4 running at
# once on 2 cores; 0 of 96 with a wait this long before finalization (10 and 50 ms alike).
EXIT_SETTLE_S = 0.03
_settling: set[int] = set()  # the process that registered the wait (a forked child registers its own)


def settle_at_exit() -> None:
    """Once per process that opens a store (:func:`open_repo`): let icechunk's threads finish before the
    interpreter finalizes."""
    if os.getpid() not in _settling:
        _settling.add(os.getpid())
        atexit.register(time.sleep, EXIT_SETTLE_S)


def open_storage(location: Where | Location) -> ic.Storage:
    """The icechunk storage for ``location`` (the ONE place storage is chosen)."""
    loc = Location.of_store(location)
    if loc.object is not None:
        return _s3_storage(loc.object, loc.text)
    return ic.local_filesystem_storage(str(loc.local))


def _s3_storage(loc: S3Location, given: str) -> ic.Storage:
    if not loc.prefix:
        raise ConfigError(f"a dataset needs a prefix inside the bucket: {given}", code=ErrorCode.STORE_URL,
                          hint="write s3://BUCKET/PREFIX (icechunk does not create repositories at a bucket root)")
    cfg = s3_config()
    if cfg.access_key_id is None:
        return ic.s3_storage(bucket=loc.bucket, prefix=loc.prefix, region=cfg.region, endpoint_url=cfg.endpoint,
                             allow_http=cfg.allow_http, force_path_style=cfg.endpoint is not None, from_env=True)
    return ic.s3_storage(bucket=loc.bucket, prefix=loc.prefix, region=cfg.region, endpoint_url=cfg.endpoint,
                         allow_http=cfg.allow_http, force_path_style=cfg.endpoint is not None,
                         access_key_id=cfg.access_key_id, secret_access_key=cfg.secret_access_key,
                         session_token=cfg.session_token)


# The first look at an object store tries 3 times within ~1 s: with icechunk's default of 10 tries and
# backoff doubling from 0.1 s, an endpoint that refuses connections (a wrong AWS_ENDPOINT_URL, a server not
# started) answered STORE_IO after 30-40 s of silence. Reads and writes after it keep the default retries.
# An endpoint that accepts connections and never answers hung every command for good, deaf to Ctrl-C (a call
# inside icechunk's runtime never returns to Python's signal handlers): each attempt has a time limit, the first
# look a short one (3 tries of 5 s: STORE_IO in ~15 s), the reads and writes after it a longer one.
FIRST_LOOK = ic.StorageSettings(retries=ic.StorageRetriesSettings(max_tries=3, initial_backoff_ms=200,
                                                                  max_backoff_ms=1000),
                                timeouts=ic.StorageTimeoutSettings(connect_timeout_ms=5_000, read_timeout_ms=5_000))
REMOTE = ic.RepositoryConfig(storage=ic.StorageSettings(timeouts=ic.StorageTimeoutSettings(
    connect_timeout_ms=10_000, read_timeout_ms=60_000)))


def _remote_exists(storage: ic.Storage, url: str) -> bool:
    return bool(storage_call("inspect", where=url, fn=lambda: ic.Repository.exists(storage, FIRST_LOOK)))


def _open_remote(loc: S3Location, given: str, *, create: bool) -> ic.Repository:
    url = loc.url
    storage = _s3_storage(loc, given)
    if _remote_exists(storage, url):
        return storage_call("open", where=url, fn=lambda: ic.Repository.open(storage, REMOTE))
    if not create:
        raise NotFoundError("there is no dataset", code=ErrorCode.STORE_MISSING, path=url,
                            hint="check the URL and AWS_ENDPOINT_URL, or create the dataset by running a job into it")
    return storage_call("create", where=url, fn=lambda: ic.Repository.create(storage, REMOTE))


def open_repo(location: Where | Location, *, create: bool) -> ic.Repository:
    """Open the icechunk repository at ``location``; with ``create``, make it when missing.

    Errors: ConfigError STORE_URL (unsupported scheme), STORE_PATH (cannot create there),
    STORE_MISSING (no repository and not ``create``), STORE_FOREIGN (a file, or a folder holding
    something else: a usage error, exit 2, whose hint depends on ``create``); StorageError STORE_IO
    (icechunk failed to read or write it).
    """
    quiet_icechunk()
    settle_at_exit()
    loc = Location.of_store(location)
    if loc.object is not None:
        return _open_remote(loc.object, loc.text, create=create)
    path = loc.local
    with storage_errors("access", path):
        return _open_repo(path, create=create)


def check_location(location: Where | Location) -> bool:
    """True when a dataset exists at ``location``, False when one can be created there; raises what
    :func:`open_repo` would for a writer (STORE_URL, STORE_PATH, STORE_FOREIGN, STORE_IO), creating
    nothing."""
    loc = Location.of_store(location)
    if loc.object is not None:
        return _remote_exists(_s3_storage(loc.object, loc.text), loc.object.url)
    path = loc.local
    with storage_errors("access", path):
        if _local_exists(path, ic.local_filesystem_storage(str(path)), create=True):
            return True
        _check_creatable(path)
    return False


def _local_exists(path: Path, storage: ic.Storage, *, create: bool) -> bool:
    """Whether a repository is at ``path``; ConfigError STORE_FOREIGN when something else is (its hint
    for a writer when ``create``, else for a reader)."""
    if path.exists() and not path.is_dir():
        raise _foreign(path, "a file", create=create)
    if path.is_dir():
        if _is_repo(storage, path):
            return True
        if any(path.iterdir()) and not creating.unfinished(path):  # a killed create is resumed, not foreign
            raise _foreign(path, "a non-empty directory", create=create)
    return False


def _open_repo(path: Path, *, create: bool) -> ic.Repository:
    storage = ic.local_filesystem_storage(str(path))
    log.debug("%s: icechunk's local storage is not safe for concurrent commits; preprocess's writer lock "
              "allows one writer at a time", path)
    if _local_exists(path, storage, create=create):
        return storage_call("open", where=path, fn=lambda: ic.Repository.open(storage))
    if not create:
        raise NotFoundError("there is no dataset", code=ErrorCode.STORE_MISSING, path=str(path),
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
    return ConfigError(f"{what}, not a dataset (no icechunk repository)", code=ErrorCode.STORE_FOREIGN, hint=hint,
                       path=str(path))


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


def storage_error(exc: BaseException, action: str, where: Location | Path | str | None = None) -> StorageError:
    """THE mapping of a failed storage call (icechunk, zarr or the OS) to an error with a stable code:
    STORE_FULL when the disk is full or a quota is exceeded, else STORE_IO. Every read and write of
    a dataset's storage goes through it (:func:`storage_errors`; the refs' changes too); commits and
    writers are never left half-done by it (the branch stays at its last commit). ``where``: the
    dataset's location, when the caller knows it."""
    remote = (isinstance(where, Location) and where.remote) or is_object_url(where)
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
def storage_errors(action: str, where: Location | Path | str | None = None) -> Iterator[None]:
    """Map a failed storage call inside the block with :func:`storage_error` (our own errors pass)."""
    try:
        yield
    except (PreprocessError, ic.ConflictError):  # a conflict is not a storage failure: the caller's
        raise
    except (ic.IcechunkError, OSError) as exc:
        raise storage_error(exc, action, where) from exc


@contextmanager
def read_errors() -> Iterator[None]:
    """Map what a read of a dataset whose files were damaged or cut on disk raises to STORE_IO with a hint,
    never a traceback: icechunk's errors (a chunk or snapshot file cut short, gone or unparsable), zarr's
    checksum ValueError (a shard index) and a codec's RuntimeError (zstd: "Data corruption detected")."""
    try:
        yield
    except (PreprocessError, ic.ConflictError):
        raise
    except (ic.IcechunkError, OSError) as exc:
        if "object not found" in str(exc).lower():  # "check path, permissions" said nothing of the likely cause
            raise StorageError("cannot read the dataset's stored rows: a file of the version read is gone",
                               code=ErrorCode.STORE_IO,
                               hint="gc deletes a version no branch or tag reaches once older than --older-than: "
                                    "open the ref again for its version now; else `preprocess verify STORE` "
                                    "names the rows whose files were lost") from exc
        if not _damaged(str(exc)):
            raise storage_error(exc, "read the dataset's stored rows") from exc
        raise damaged_error(str(exc)) from exc
    except (ValueError, RuntimeError) as exc:
        if not _damaged(str(exc)):
            raise
        raise damaged_error(str(exc)) from exc


# What zarr's checksums, zstd and icechunk's readers say of a file whose bytes were changed or cut on disk.
# zstd's words for a frame whose bytes changed (its header, sizes or body), icechunk's for a file it cannot parse
# (the last line: a header or an offset inside a file that no longer parses, a version byte that reads as newer)
_DAMAGE = ("checksum", "corrupt", "decompress", "src size is incorrect", "unknown frame descriptor",
           "destination buffer is too small", "frame requires too much memory", "unsupported frame parameter",
           "frame parameter unsupported", "dictionary mismatch",
           "invalid flatbuffer", "deserializ", "invalid magic numbers",
           "requested range was invalid", "invalidrange",  # these two: a file shorter than its manifest says
           "invalid icechunk metadata file", "icechunk header", "file type code", "cannot read this file type",
           "compression algorithm", "is out of bounds", "only supports up to version")


def _damaged(text: str) -> bool:
    return any(word in text.lower() for word in _DAMAGE)


def damaged_error(text: str) -> DamagedError:
    """STORE_IO for a read that found a file of the dataset damaged (its hint says so)."""
    detail = (text.strip().splitlines() or ["?"])[0][:120]
    if "only supports up to version" in text:  # a flipped bit in a file's version byte reads as a newer format
        return DamagedError(f"cannot read the dataset's stored rows: a file of it names a format this icechunk does "
                            f"not read ({detail})", hint="if a newer preprocess wrote the dataset, upgrade; else its "
                            "files were changed on disk: `preprocess verify STORE` lists the rows it damaged")
    return DamagedError(f"cannot read the dataset's stored rows: a file of it is damaged ({detail})")


def storage_call[T](action: str, fn: Callable[[], T], where: Location | Path | str | None = None) -> T:
    """``fn()``, its storage failure mapped as :func:`storage_errors` maps it."""
    with storage_errors(action, where):
        return fn()


def probe_writable(location: Where | Location, size: int = 1 << 20) -> None:
    """Write (and fsync, and remove) ``size`` bytes inside a local dataset's directory: StorageError
    STORE_FULL while its disk cannot take them. Object stores are not probed (they do not fill up)."""
    loc = Location.of_store(location)
    if loc.remote:
        return
    probe = loc.local / f".preprocess.probe.{os.getpid()}"
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

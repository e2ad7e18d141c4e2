"""Where a dataset lives: the one place a location string becomes icechunk storage.

Only local paths are supported now (``/data/ds``, ``./ds``, ``~/ds``, ``file:///data/ds``).
Object stores (``s3://`` ...) come later and will be added here, and only here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

import icechunk as ic

from preprocess.errors import ConfigError, StorageError


def local_path(location: str) -> Path:
    """The absolute local path a location names (ConfigError STORE_URL for any other scheme)."""
    loc = location.strip()
    if not loc:
        raise ConfigError("the dataset location is empty", code="STORE_PATH",
                          hint="pass a directory path, e.g. --store ./dataset")
    if "://" in loc:
        url = urlparse(loc)
        if url.scheme != "file":
            raise ConfigError(f"{url.scheme}:// datasets are not supported yet: {location}", code="STORE_URL",
                              hint="use a local directory path for now (object stores come later)")
        if url.netloc not in ("", "localhost"):
            raise ConfigError(f"file:// URL with a host is not supported: {location}", code="STORE_URL",
                              hint="write file:///absolute/path or a plain path")
        loc = unquote(url.path)
    return Path(loc).expanduser().absolute()


def open_storage(location: str) -> ic.Storage:
    """The icechunk storage for ``location`` (the ONE place storage is chosen)."""
    return ic.local_filesystem_storage(str(local_path(location)))


def open_repo(location: str, *, create: bool) -> ic.Repository:
    """Open the icechunk repository at ``location``; with ``create``, make it when missing.

    Errors: ConfigError STORE_URL (unsupported scheme), STORE_PATH (cannot create there),
    STORE_MISSING (no repository and not ``create``); StorageError STORE_FOREIGN (something else
    is there), STORE_IO (icechunk failed to read or write it).
    """
    path = local_path(location)
    try:
        return _open_repo(path, create=create)
    except OSError as exc:
        if isinstance(exc, StorageError):
            raise
        raise StorageError(f"cannot access the dataset at {path}: {exc.strerror or exc}", code="STORE_IO",
                           hint="check the path's permissions") from exc


def _open_repo(path: Path, *, create: bool) -> ic.Repository:
    storage = ic.local_filesystem_storage(str(path))
    if path.exists() and not path.is_dir():
        raise _foreign(path, "is a file")
    if path.is_dir():
        if _is_repo(storage, path):
            return _call(path, "open", lambda: ic.Repository.open(storage))
        if any(path.iterdir()):
            raise _foreign(path, "is a non-empty directory")
    if not create:
        raise ConfigError(f"no dataset at {path}", code="STORE_MISSING",
                          hint="check the path, or create the dataset by running a job into it")
    if not path.exists():
        parent = path.parent
        if not parent.is_dir():
            raise ConfigError(f"cannot create the dataset: {parent} is not a directory", code="STORE_PATH",
                              hint="create the parent directory first (only the last path part is created)")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"cannot create the dataset: {parent} is not writable", code="STORE_PATH",
                              hint="choose a directory you can write to, or fix its permissions")
    elif not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot create the dataset: {path} is not writable", code="STORE_PATH",
                          hint="choose a directory you can write to, or fix its permissions")
    return _call(path, "create", lambda: ic.Repository.create(storage))


def _is_repo(storage: ic.Storage, path: Path) -> bool:
    return bool(_call(path, "inspect", lambda: ic.Repository.exists(storage)))


def _foreign(path: Path, what: str) -> StorageError:
    return StorageError(f"{path} {what} but not an icechunk repository", code="STORE_FOREIGN",
                        hint="choose a new or empty directory for the dataset (nothing there was changed)")


def _call[T](path: Path, action: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except ic.IcechunkError as exc:
        raise StorageError(f"cannot {action} the dataset at {path}: {exc}", code="STORE_IO",
                           hint="check the path's permissions and free space") from exc


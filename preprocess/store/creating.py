"""Creating a local store so that a kill or a second creator never leaves it unusable.

icechunk writes a new repository in steps (its snapshots and transactions folders, then the ``repo``
object that makes it one), so a process killed a few milliseconds into a create left a folder that
was no repository and not empty: every later command refused it (``STORE_FOREIGN``). And two
processes creating the same store raced: the loser's cleanup removed the winner's folder.

So a create goes through a marker inside the store, ``CREATING_FILE``, locked (``flock``) while one
process creates. It is an empty folder: icechunk creates a repository only where it finds no object,
and an empty folder is none.

1. the folder is made (or is an empty one), the marker made, opened and locked: a second creator
   waits for the lock (``wait`` seconds at most: ConflictError ``STORE_LOCKED``);
2. whoever holds the lock looks again: a repository there (another creator finished) is opened as it
   is; else what a killed creator left beside its marker is removed and the repository created (a
   folder that holds anything without a marker is never emptied, but for a failed create's strays: empty
   ``snapshots``/``transactions`` folders, or ones holding icechunk's first snapshot object alone);
3. the marker is removed when the repository is complete. A marker left behind means a create that
   did not finish: the next command resumes it (:func:`unfinished` tells the location check so).

A failed create (a full disk) removes only what it made itself, under the lock: never another's store.
What it cannot remove is a write still on its way: icechunk writes the first snapshot and its transaction
log together and, when one fails, gives up on the other, whose write (a blocking thread nobody waits for)
runs on and may make its folder again after the cleanup. Such strays (:func:`_strays`) are recognised by
the one object they can hold and cleared by the next create, so they never make the folder "foreign".
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, ConflictError

CREATING_FILE = ".preprocess.creating"
WAIT = 60.0  # seconds a second creator waits for the first


# What a folder holds while icechunk creates a repository in it (its ``repo`` object is written last).
_BEING_MADE = frozenset({CREATING_FILE, "snapshots", "transactions", "repo"})
# icechunk's first snapshot id: the one object a create writes in ``snapshots`` and in ``transactions``.
FIRST_SNAPSHOT = "1CECHNKREP0F1RSTCMT0"


def unfinished(path: Path) -> bool:
    """Whether the folder ``path`` holds nothing but a repository being created (now, or by a process that
    was killed): the marker and what icechunk writes first. Such a folder is resumed, never foreign."""
    try:
        entries = set(os.listdir(path))
    except OSError:
        return False
    staged = {_staged(e) for e in entries}
    if staged <= _BEING_MADE and bool(staged & {CREATING_FILE, "repo"}):  # a marker, or one just finished
        return True
    return bool(entries) and _strays(path)


def _strays(path: Path) -> bool:
    """Whether ``path`` holds nothing (its marker aside) but what a failed create's last write can leave:
    ``snapshots`` and ``transactions`` folders holding at most the first snapshot's object (or its staged
    ``#N`` file). A user's folder never looks like that; anything else there is never removed."""
    try:
        entries = set(os.listdir(path)) - {CREATING_FILE}
        if not entries <= {"snapshots", "transactions"}:
            return False
        return all({_staged(f) for f in os.listdir(path / e)} <= {FIRST_SNAPSHOT} for e in entries)
    except OSError:  # a file where a folder was expected, or unreadable: not ours
        return False


def _staged(name: str) -> str:
    """The object a local store's file is being written as: object_store writes ``NAME#N`` and links it to
    ``NAME``, so a create killed while writing ``repo`` leaves ``repo#1`` beside the marker."""
    head, sep, tail = name.partition("#")
    return head if sep and tail.isdigit() else name


def create[R](path: Path, *, make: Callable[[], R], opened: Callable[[], R | None], wait: float = WAIT) -> R:
    """The repository at ``path``: ``opened()`` when one is there once the creation lock is held (a
    concurrent creator made it), else ``make()`` after removing what a killed create left."""
    while True:
        made_dir = _make_dir(path)
        try:
            killed = not _make_dir(path / CREATING_FILE)  # a marker there: a create is running, or was killed
            fd = os.open(path / CREATING_FILE, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:  # the creator before us finished (or gave up) between our look and our open
            continue
        try:
            _lock(fd, path, wait)
            if os.fstat(fd).st_nlink == 0:  # the creator before us finished (or gave up): look again
                found = opened()
                if found is not None:
                    return found
                continue
            return _create_locked(path, made_dir, killed, make=make, opened=opened)
        finally:
            os.close(fd)


def _create_locked[R](path: Path, made_dir: bool, killed: bool, *, make: Callable[[], R],
                      opened: Callable[[], R | None]) -> R:
    found = opened()
    if found is None:
        if not killed and not _strays(path):  # not ours to remove: touch nothing
            os.rmdir(path / CREATING_FILE)
            raise ConfigError(f"{path} is a non-empty directory, not a dataset (no icechunk repository)",
                              code=ErrorCode.STORE_FOREIGN,
                              hint="choose a new or empty directory for the dataset (nothing there was changed)")
        _clear(path)  # a killed create's leftovers, or a failed one's strays
        try:
            found = make()
        except BaseException:
            _clear(path)
            os.rmdir(path / CREATING_FILE)
            if made_dir:
                _remove_empty(path)
            raise
    os.rmdir(path / CREATING_FILE)
    return found


def _make_dir(path: Path) -> bool:
    try:
        path.mkdir()
    except FileExistsError:
        return False
    return True


def _lock(fd: int, path: Path, wait: float) -> None:
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise ConflictError(f"another process is creating the dataset at {path}",
                                    code=ErrorCode.STORE_LOCKED, hint="wait for it to finish, then rerun") from None
            time.sleep(0.05)


def _clear(path: Path) -> None:
    """Remove everything in ``path`` but the marker (only ever called while holding its lock)."""
    for child in path.iterdir():
        if child.name == CREATING_FILE:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _remove_empty(path: Path) -> None:
    with contextlib.suppress(OSError):  # not empty: something else is there now
        path.rmdir()

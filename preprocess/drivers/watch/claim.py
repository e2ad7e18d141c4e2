"""Who takes files from a watched folder: a daemon that moves them away (``--move-to``) must be the only one.

Two daemons on one folder (each into its own store) both store every file, as long as neither moves
files: a daemon that moves a committed file to ``MOVE_TO/done`` takes it from the other before the
other has read it, and the other misses it without a word (24 of 31 files in one store, in the red
team's run). So every daemon holds a lock on the watched folder itself (``flock`` on the folder's
descriptor: nothing is written into it) for its life: shared when it leaves files where they are,
exclusive when it moves them. A second daemon that would break this waits ``--wait`` seconds for the
first to stop, then fails with ConflictError ``WATCH_FOLDER_BUSY`` (exit 4) before it takes anything.
"""

from __future__ import annotations

import fcntl
import os
import time

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConflictError


class FolderClaim:
    """The lock on a watched folder; :meth:`release` (or process exit) gives it up."""

    def __init__(self, folder: str, *, moves: bool, wait: float = 0.0) -> None:
        self.folder = folder
        self._how = fcntl.LOCK_EX if moves else fcntl.LOCK_SH
        self._fd: int | None = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self._fd, self._how | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self.release()
                    raise _busy(folder, moves) from None
                time.sleep(0.2)

    def renew(self) -> bool:
        """Lock the folder that now stands at the path (the one locked was removed, or renamed, and made anew):
        False when another daemon holds it so that the two conflict (the old lock is kept, for what it is worth)."""
        try:
            fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, self._how | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.release()
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _busy(folder: str, moves: bool) -> ConflictError:
    why = ("this daemon moves committed files away (--move-to), so the other would miss them" if moves else
           "that daemon moves committed files away (--move-to), so this one would miss them")
    return ConflictError("another watch daemon takes files from this folder, and " + why,
                         code=ErrorCode.WATCH_FOLDER_BUSY, path=folder,
                         hint="give each daemon its own folder (a daemon without --move-to may share one with "
                              "others without it), stop the other one, or pass --wait SECONDS")

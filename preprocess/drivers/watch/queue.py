"""The bounded queue of files on their way to the engine.

A file enters when an event or a rescan names it (:meth:`FileQueue.offer`), waits until it is
*quiet* (its size, mtime and ctime unchanged for ``quiet`` seconds, and no writer is known to hold it
open), then is *ready*; the daemon :meth:`~FileQueue.take` s ready files in batches. Waiting plus
ready files never exceed ``capacity``: when full, offers are refused and the queue remembers that
it overflowed, so the daemon rescans the folder once there is room again. The folder itself is the
buffer of a burst; memory stays bounded.

Files handed out are remembered with their (size, mtime, ctime) as *handled*, so the same version of a
file is never taken twice by this process (events for it, rescans); a changed file is taken again.
The handled index holds one small entry per file in the folder (moved or deleted files leave it).
"""

from __future__ import annotations

import os
import stat as stat_mod
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Stat:
    size: int
    mtime_ns: int
    # The change time: a file replaced by other bytes of the same size and mtime (cp -p, rsync -a's rename over
    # it, tar x; fixed-size PPM/BMP frames) is another version; a writer cannot set ctime. Not the inode: FUSE and
    # CIFS mounts (polled) may give a file another number at any time. A chmod -R changes ctime too: the files
    # are read again, and each is a duplicate of its row.
    ctime_ns: int = 0

    @classmethod
    def _of(cls, st: os.stat_result) -> Stat:
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    @classmethod
    def of(cls, path: str) -> Stat | None:
        """The file's (size, mtime, ctime); for what is not a regular file, even through a link (a FIFO,
        a socket, a device, a broken link, a link to a folder), the entry's own: it is taken like a file and the
        read refuses it, as in ``run`` (a failure row, never a read that blocks). So are a folder that cannot
        be listed and a path that cannot be looked at (over the system's limit): the read records them as
        ``E_UNREADABLE``. None when it is gone or a folder."""
        try:
            st = os.stat(path)
        except OSError:
            st = None
        if st is not None and stat_mod.S_ISREG(st.st_mode):
            return cls._of(st)
        try:
            own = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError:  # there, but not to be looked at (ENAMETOOLONG, EACCES): the read says why
            return UNSEEN
        if stat_mod.S_ISDIR(own.st_mode):
            return None if _listable(path) else cls._of(own)
        return cls._of(own)


UNSEEN = Stat(-1, -1)  # the stat of a path that cannot be looked at


def _listable(folder: str) -> bool:
    try:
        os.scandir(folder).close()
    except OSError:
        return False
    return True


@dataclass
class _Waiting:
    stat: Stat | None  # None until first checked
    changed_at: float  # when the stat last changed (monotonic)
    noticed_at: float


@dataclass(frozen=True)
class Ready:
    """A quiet file, handed to the daemon with the stat it was quiet at."""

    path: str
    stat: Stat
    noticed_at: float  # monotonic
    ready_at: float  # monotonic


class FileQueue:
    """Thread-safe: events and rescans offer from their threads, the daemon settles and takes."""

    def __init__(self, capacity: int, quiet: float, *, open_hold: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self.quiet = quiet
        self.open_hold = open_hold  # a file held open but unchanged this long is taken anyway
        self._clock = clock
        self._lock = threading.Lock()
        self._waiting: dict[str, _Waiting] = {}
        self._ready: deque[Ready] = deque()
        self._ready_paths: set[str] = set()
        self._handled: dict[str, Stat] = {}
        self._opens: dict[str, int] = {}
        self.overflowed = False
        self.refused = 0  # offers refused because the queue was full
        self.seen = 0  # new file versions noticed
        self.peak = 0

    # -- from event / scan threads ---------------------------------------------------------------

    def offer(self, path: str) -> bool:
        """Note that ``path`` may be new or changed; False (and ``overflowed``) when full."""
        with self._lock:
            w = self._waiting.get(path)
            if w is not None or path in self._ready_paths:
                return True  # re-checked at the next settle / when read (the read verifies the stat)
            if len(self._waiting) + len(self._ready) >= self.capacity:
                self.overflowed = True
                self.refused += 1
                return False
            now = self._clock()
            self._waiting[path] = _Waiting(None, now, now)
            self.peak = max(self.peak, len(self._waiting) + len(self._ready))
            return True

    def opened(self, path: str) -> None:
        with self._lock:
            self._opens[path] = self._opens.get(path, 0) + 1

    def closed(self, path: str) -> None:
        with self._lock:
            n = self._opens.get(path, 0) - 1
            if n > 0:
                self._opens[path] = n
            else:
                self._opens.pop(path, None)

    def discard(self, path: str) -> None:
        """The file is gone (deleted or moved away)."""
        with self._lock:
            self._waiting.pop(path, None)
            self._handled.pop(path, None)
            self._opens.pop(path, None)

    def is_handled(self, path: str, st: Stat) -> bool:
        with self._lock:
            return self._handled.get(path) == st

    def room(self) -> int:
        with self._lock:
            return self.capacity - len(self._waiting) - len(self._ready)

    # -- from the daemon ---------------------------------------------------------------------------

    def settle(self) -> int:
        """Check waiting files; move the quiet ones to ready. Returns how many became ready."""
        with self._lock:
            paths = list(self._waiting)
        stats = {p: Stat.of(p) for p in paths}  # outside the lock: stat can be slow (NFS)
        now = self._clock()
        moved = 0
        with self._lock:
            for path, st in stats.items():
                w = self._waiting.get(path)
                if w is None:
                    continue
                if st is None or self._handled.get(path) == st:
                    del self._waiting[path]  # gone, or this very version was already taken
                    continue
                if st != w.stat:
                    if w.stat is None:
                        self.seen += 1
                    w.stat, w.changed_at = st, now
                    continue
                quiet_for = now - w.changed_at
                if quiet_for < self.quiet or (self._opens.get(path, 0) > 0 and quiet_for < self.open_hold):
                    continue
                del self._waiting[path]
                self._ready.append(Ready(path, st, w.noticed_at, now))
                self._ready_paths.add(path)
                moved += 1
        return moved

    def take(self, n: int) -> list[Ready]:
        """Up to ``n`` ready files, oldest first; they count as handled from now on."""
        out: list[Ready] = []
        with self._lock:
            while self._ready and len(out) < n:
                r = self._ready.popleft()
                self._ready_paths.discard(r.path)
                self._handled[r.path] = r.stat
                out.append(r)
        return out

    def drop_ready(self) -> int:
        """Forget every file not yet taken (at shutdown: the next start's rescan finds them)."""
        with self._lock:
            n = len(self._ready) + len(self._waiting)
            self._ready.clear()
            self._ready_paths.clear()
            self._waiting.clear()
            return n

    def forget(self, path: str) -> None:
        """Make a handled file eligible again (its commit failed, or it changed while being read)."""
        with self._lock:
            self._handled.pop(path, None)

    def prune_handled(self, present: set[str], kept: tuple[str, ...] = ()) -> None:
        """Keep handled entries only for ``present`` files (after a complete scan) and files under the folders
        ``kept`` (the scan could not list them: their files are not known to be gone)."""
        under = tuple(os.path.join(k, "") for k in kept)
        with self._lock:
            for path in [p for p in self._handled if p not in present and not p.startswith(under)]:
                del self._handled[path]

    def oldest_ready_age(self) -> float:
        with self._lock:
            return self._clock() - self._ready[0].ready_at if self._ready else 0.0

    def take_overflow(self) -> bool:
        """True once after an overflow, when there is room for a rescan to add files again."""
        with self._lock:
            if self.overflowed and len(self._waiting) + len(self._ready) <= self.capacity * 3 // 4:
                self.overflowed = False
                return True
            return False

    @property
    def ready(self) -> int:
        with self._lock:
            return len(self._ready)

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    @property
    def handled(self) -> int:
        with self._lock:
            return len(self._handled)

    def __len__(self) -> int:
        with self._lock:
            return len(self._waiting) + len(self._ready)

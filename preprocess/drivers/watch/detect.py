"""Finding new files: filesystem events (inotify via watchdog, or polling) plus full rescans.

Events only *offer* paths to the :class:`~preprocess.drivers.watch.queue.FileQueue`; the queue's quiet
period decides when a file is taken. Events can be lost (inotify queue overflow, a full queue,
a daemon restart), so the folder is rescanned fully at start, every ``rescan_interval`` seconds,
after watchdog reports lost events, and whenever the queue has room again after refusing files.
Polling (``--poll``, and automatically on NFS/SMB/FUSE mounts, where inotify sees no remote
writes) uses watchdog's PollingObserver.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from preprocess.core import names
from preprocess.drivers.watch.queue import FileQueue, Stat
from preprocess.sources.files import is_candidate, walk_images

log = logging.getLogger("preprocess.drivers.watch")

# Filesystems whose remote changes inotify does not see: poll them.
EVENTLESS_FS = frozenset({"nfs", "nfs4", "cifs", "smb", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs",
                          "lustre", "gpfs", "davfs", "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone",
                          "fuse.glusterfs", "fuse.ceph", "fuse.cephfs", "fuse.juicefs", "fuse.mountpoint-s3"})

_EVENTS = [FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileDeletedEvent, FileClosedEvent,
           FileClosedNoWriteEvent, FileOpenedEvent, DirCreatedEvent, DirMovedEvent]


def filesystem_type(path: str | Path, mounts: str = "/proc/mounts") -> str:
    """The type of the filesystem holding ``path`` (longest mount point prefix), or "" if unknown."""
    target = os.path.realpath(path)
    best, kind = "", ""
    try:
        with open(mounts, encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                point = parts[1].replace("\\040", " ")
                inside = target == point or target.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, kind = point, parts[2]
    except OSError:
        return ""
    return kind


@dataclass(frozen=True)
class Scanning:
    """How a :class:`Detector` looks: events or polling, how often it polls and rescans, what it skips."""

    poll: bool = False  # poll instead of inotify (automatic on NFS/SMB/FUSE)
    poll_interval: float = 1.0
    rescan_interval: float = 300.0
    exclude: tuple[str, ...] = ()  # folders inside the watched one that are never taken
    follow_symlinks: bool = False  # walk into links to folders outside (found by scans: inotify sees no events there)


class Detector:
    """Watches ``folder`` recursively and keeps offering its image files to ``queue``."""

    def __init__(self, folder: str, queue: FileQueue, scanning: Scanning,
                 on_lost_events: Callable[[], None] | None = None, relock: Callable[[], bool] | None = None) -> None:
        self.folder = os.path.realpath(folder)  # rows record paths under the resolved folder, as run does
        self.queue = queue
        self.poll_interval = scanning.poll_interval
        self.rescan_interval = scanning.rescan_interval
        self.exclude = tuple(os.path.realpath(e) for e in scanning.exclude)
        self.follow = scanning.follow_symlinks
        self.on_lost_events = on_lost_events
        fs = filesystem_type(self.folder)
        self.fs_type = fs
        self.mode = self._chosen = "polling" if scanning.poll or fs in EVENTLESS_FS else "inotify"
        self.scans = 0
        self._observer: BaseObserver | None = None
        self._stop = threading.Event()
        self._said: set[str] = set()  # folders the scan could not list, each said once
        self._wake = threading.Event()
        self._dirs: set[str] = set()
        self._full = True
        self._lock = threading.Lock()
        self._scanner = threading.Thread(target=self._scan_loop, name="watch-scanner", daemon=True)
        self._hook = _LostEventsHook(self)
        self._folder_id = self._identity()
        self.folder_gone = False  # the folder was removed (or renamed) and no folder stands at its path yet
        self.relock = relock  # locks a folder made anew (the daemon's FolderClaim.renew): False when another has it
        self.lock_lost = False  # another daemon locked the folder made anew first

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._observer = self._start_observer()
        logging.getLogger("watchdog.observers.inotify_c").addHandler(self._hook)
        self._scanner.start()

    def _start_observer(self) -> BaseObserver:
        handler = _Handler(self)
        if self.mode == "inotify":
            try:
                obs: BaseObserver = Observer()
                obs.schedule(handler, self.folder, recursive=True, event_filter=_EVENTS)
                obs.start()
                return obs
            except OSError as exc:  # e.g. the inotify watch limit
                log.warning("inotify unavailable, polling instead", extra={"fields": {"error": str(exc)}})
                self.mode = "polling"
        obs = PollingObserver(timeout=self.poll_interval)
        obs.schedule(handler, self.folder, recursive=True, event_filter=_EVENTS)
        obs.start()
        return obs

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        logging.getLogger("watchdog.observers.inotify_c").removeHandler(self._hook)
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._scanner.is_alive():
            self._scanner.join(timeout=5)

    @property
    def alive(self) -> bool:
        obs = self._observer
        return (obs is not None and obs.is_alive() and self._scanner.is_alive() and not self.folder_gone
                and not self.lock_lost)

    def _identity(self) -> tuple[int, int] | None:
        """The folder's (device, inode); None when nothing (or a file) stands at its path. Another error (a
        network share briefly unreachable: ESTALE, EIO) is not "gone": the identity is taken as unchanged."""
        try:
            st = os.stat(self.folder)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError:
            return self._folder_id
        return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None

    def _watching(self) -> bool:
        """Every emitter of the observer lives (inotify's ends when its folder is deleted; a new folder at the
        path may get the same inode number)."""
        obs = self._observer
        return obs is not None and all(e.is_alive() for e in obs.emitters)

    def check_folder(self) -> bool:
        """Watch the folder again when it was removed or renamed and made anew (``mv in in.1; mkdir in``):
        inotify watches the old folder's inode, and its events stopped without a word while the observer
        thread lived on. While no folder stands at the path, :attr:`alive` is False (/healthz fails).
        True when it now watches a new folder."""
        now = self._identity()
        if now == self._folder_id and not self.folder_gone and self._watching():
            return False
        if now is None:
            if not self.folder_gone:
                log.warning("the watched folder is gone: waiting for a folder at %s", names.quote(self.folder))
                self.folder_gone = True
            return False
        log.warning("the watched folder %s was replaced: watching the new one (rescanned)", names.quote(self.folder))
        self._folder_id, self.folder_gone = now, False
        old, self._observer = self._observer, None
        if old is not None:
            old.stop()
            old.join(timeout=5)
        self.mode = self._chosen  # inotify again, if a folder gone while its watch was set made it poll
        self._observer = self._start_observer()
        self.request_rescan()
        if self.relock is not None and not self.relock():  # /healthz fails: a restart says WATCH_FOLDER_BUSY
            self.lock_lost = True
            log.error("another watch daemon locked the new folder at %s first: this one can no longer be sure it "
                      "is the only one to move files from it", names.quote(self.folder))
        return True

    # -- scanning --------------------------------------------------------------------------------

    def request_rescan(self, folder: str | None = None) -> None:
        """Scan the whole tree (or just ``folder``) soon, in the scanner thread."""
        with self._lock:
            if folder is None:
                self._full = True
            else:
                self._dirs.add(folder)
        self._wake.set()

    def _scan_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                full, dirs = self._full, self._dirs
                self._full, self._dirs = False, set()
            self._wake.clear()
            try:
                if full:
                    self.scan(self.folder)
                    self.scans += 1
                else:
                    for d in sorted(dirs):
                        self.scan(d)
            except Exception:  # a scan must never kill the scanner; the next one retries
                log.exception("rescan failed")
            if self._wake.wait(self.rescan_interval):
                continue
            with self._lock:
                self._full = True

    def scan(self, top: str) -> int:
        """Offer every image file under ``top`` not yet handled; stops early when the queue is full.

        A folder that cannot be listed is offered too (its read records it as an E_UNREADABLE row, as in
        ``run``). A complete scan of the whole folder also drops handled entries of files that are gone
        (their delete events may have been lost)."""
        if top != self.folder and not self._inside(top):  # excluded, hidden, or not in the folder
            return 0
        present: set[str] = set()
        unlisted: list[str] = []
        offered, full = self._offer_all(self._images(top, unlisted), present)
        if not full:
            more, full = self._offer_all(self._unlistable(unlisted), present)
            offered += more
        if top == self.folder and not full and not self._stop.is_set():  # a folder it could not list (a share's
            self.queue.prune_handled(present, kept=tuple(unlisted))  # brief EIO) keeps what it had: no re-reads
        return offered

    def _images(self, top: str, unlisted: list[str]) -> Iterator[str]:
        """What ``run`` would list under ``top`` (the same walk: image files, and links to folders outside,
        which the read refuses unless --follow-symlinks) until stopped; the folders it cannot list go to
        ``unlisted``."""

        def unlistable(e: OSError) -> None:
            if not isinstance(e, FileNotFoundError | NotADirectoryError):  # gone, or a file now: nothing to say
                unlisted.append(str(e.filename))

        def pruned(folder: str) -> bool:  # once stopped, every folder is left out: the walk ends at once
            return self._stop.is_set() or self.excluded(folder) or self.excluded(os.path.realpath(folder))

        for path in walk_images(top, (self.folder,), follow=self.follow, onerror=unlistable, prune=pruned):
            if self._stop.is_set():
                return
            yield path

    def _unlistable(self, folders: list[str]) -> Iterator[str]:
        """Of the folders a walk could not list, those inside the watched folder that still cannot be (said once)."""
        for folder in folders:
            if self._inside(folder) and Stat.of(folder) is not None:  # not hidden or excluded; still unlistable
                self._unlisted(folder)
                yield folder

    def _offer_all(self, paths: Iterable[str], present: set[str]) -> tuple[int, bool]:
        """(how many of ``paths`` were offered, whether the queue filled up: the rest wait for a rescan)."""
        offered = 0
        for path in paths:
            if (took := self._offer(path, present)) is None:
                return offered, True
            offered += took
        return offered, False

    def _offer(self, path: str, present: set[str]) -> int | None:
        """Offer ``path`` unless this version was handled: 1 offered, 0 not, None when the queue is full."""
        present.add(path)
        st = Stat.of(path)
        if st is None or self.queue.is_handled(path, st):
            return 0
        return 1 if self.queue.offer(path) else None

    def _unlisted(self, where: str) -> None:
        """A folder the scan cannot list (no permission, a path over the system's limit): said once, not
        silently skipped; it is offered as a file, so its failure row is recorded as ``run`` records it."""
        if where not in self._said:
            self._said.add(where)
            log.warning("cannot list the folder %s: the images in it are not ingested (recorded as E_UNREADABLE)",
                        names.quote(where))

    def excluded(self, path: str) -> bool:
        return any(path == e or path.startswith(e + os.sep) for e in self.exclude)

    def wanted(self, path: str) -> bool:
        """An image file inside the folder, not hidden (nor in a hidden folder), not excluded."""
        return is_candidate(Path(path)) and self._inside(path)

    def _inside(self, path: str) -> bool:
        """Inside the folder, not hidden (nor in a hidden folder), not excluded."""
        if not path.startswith(self.folder + os.sep) or self.excluded(path):
            return False
        return not any(part.startswith(".") for part in os.path.relpath(path, self.folder).split(os.sep))


class _Handler(FileSystemEventHandler):
    def __init__(self, detector: Detector) -> None:
        self.d = detector

    def on_any_event(self, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path) if event.dest_path else ""
        if self.d.excluded(src) and (not dest or self.d.excluded(dest)):
            return  # inside --move-to or the store: dropped first (a commit writes dozens of files there)
        if not event.is_directory:
            self._file(event.event_type, src, dest)
        elif event.event_type in ("created", "moved"):  # a folder dropped in whole: its files may have no events
            self.d.request_rescan(dest or src)

    def _file(self, kind: str, src: str, dest: str) -> None:
        d, q = self.d, self.d.queue
        if kind == "deleted":
            q.discard(src)
        elif kind == "moved":
            q.discard(src)
            if dest and d.wanted(dest):
                q.offer(dest)
        elif kind == "opened":
            if d.wanted(src):
                q.opened(src)
        elif kind in ("closed", "closed_no_write"):
            q.closed(src)
            if kind == "closed" and d.wanted(src):
                q.offer(src)
        elif kind in ("created", "modified") and d.wanted(src):
            q.offer(src)
        elif kind == "created" and os.path.islink(src) and os.path.isdir(src):
            d.request_rescan(os.path.dirname(src))  # a link to a folder: the walk says what it is (as in run)


class _LostEventsHook(logging.Handler):
    """watchdog only logs an inotify queue overflow: turn that log line into a rescan."""

    def __init__(self, detector: Detector) -> None:
        super().__init__(logging.WARNING)
        self.d = detector

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.d.request_rescan()
            if self.d.on_lost_events is not None:
                self.d.on_lost_events()

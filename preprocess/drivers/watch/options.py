"""The watch daemon's options: parsed and checked before anything starts."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError
from preprocess.pipeline.devices import DeviceChoice, EngineChoice
from preprocess.sources.location import Location, is_object_url

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*\Z")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str, *, name: str) -> float:
    """``"30s"``, ``"500ms"``, ``"2m"``, ``"1h"`` or plain seconds (``"2.5"``) -> seconds."""
    m = _DURATION.match(text)
    if not m:
        raise ConfigError(f"{name}: {text!r} is not a duration", code=ErrorCode.WATCH_OPTION,
                          hint="write e.g. 30s, 500ms, 2m, 1h or a number of seconds")
    return float(m.group(1)) * _UNIT[m.group(2)]


def parse_address(text: str) -> tuple[str, int] | None:
    """``HOST:PORT`` (port 0 picks a free one), ``PORT`` (on 127.0.0.1) or ``off`` -> None."""
    t = text.strip()
    if t.lower() in ("off", "none", ""):
        return None
    host, sep, port = t.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", t
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--metrics: {text!r} is not HOST:PORT", code=ErrorCode.WATCH_OPTION,
                          hint="e.g. 127.0.0.1:9400, 0.0.0.0:9400 (all interfaces), 9400, or off")
    return host, int(port)


@dataclass(frozen=True)
class WatchOptions:
    folder: str
    store: str
    spec_path: str | None = None
    branch: str = "main"
    engine: EngineChoice = "auto"
    device: DeviceChoice = "auto"
    commit_every: int = 500  # images (items + failures) per commit at most
    commit_interval: float = 30.0  # seconds from the first uncommitted image to its commit, at most
    poll: bool = False  # poll instead of inotify (automatic on NFS/SMB/FUSE)
    poll_interval: float = 1.0
    quiet: float = 2.0  # a file is taken once its size and mtime were stable this long
    rescan_interval: float = 300.0  # full rescans (events can be lost)
    queue_size: int = 1000  # files waiting (quiet period + ready) at most; the folder holds the rest
    batch_wait: float = 0.5  # a partial batch waits this long for more ready files
    move_to: str | None = None  # after their commit: files go to MOVE_TO/done/..., MOVE_TO/failed/...
    metrics: tuple[str, int] | None = ("127.0.0.1", 9400)
    liveness_timeout: float = 120.0  # /healthz fails when the main loop was stuck this long
    message: str = ""
    wait: float = 0.0  # seconds to wait at start for another writer of the same local store
    follow_symlinks: bool = False  # follow symlinks that lead outside the folder (default: refuse them)

    def never_taken(self) -> tuple[str, ...]:
        """The folders no file is taken from and whose events are dropped first: ``--move-to``, and a local
        store (it may lie inside the watched folder: its files are no images, but each commit writes dozens)."""
        store = Location.of_store(self.store)
        return tuple(str(x) for x in (self.move_to, None if store.remote else store.local) if x is not None)

    def check(self) -> None:
        if is_object_url(self.folder):
            raise ConfigError("watch needs a local (or mounted) folder: S3 prefixes cannot be watched",
                              code=ErrorCode.WATCH_FOLDER, path=self.folder,
                              hint="run `preprocess run s3://...` on a schedule instead (a run adds only new ones)")
        folder = Path(self.folder)
        if not folder.is_dir():
            raise ConfigError("the watched folder does not exist or is not a folder", code=ErrorCode.WATCH_FOLDER,
                              path=self.folder, hint="create it first, or mount it (it is never created)")
        if self.commit_every < 1:
            raise ConfigError("--commit-every must be at least 1", code=ErrorCode.WATCH_OPTION)
        for name, value in (("--commit-interval", self.commit_interval), ("--poll-interval", self.poll_interval),
                            ("--rescan-interval", self.rescan_interval), ("--liveness-timeout",
                                                                          self.liveness_timeout)):
            if value <= 0:
                raise ConfigError(f"{name} must be above zero", code=ErrorCode.WATCH_OPTION)
        if self.quiet < 0 or self.batch_wait < 0:
            raise ConfigError("--quiet and --batch-wait cannot be negative", code=ErrorCode.WATCH_OPTION)
        if self.queue_size < 1:
            raise ConfigError("--queue-size must be at least 1", code=ErrorCode.WATCH_OPTION)
        if self.move_to is not None:
            check_move_to(Path(self.move_to), folder)
        store = Location.of_store(self.store)
        if not store.remote and folder.resolve().is_relative_to(store.local.resolve()):
            raise ConfigError("the store cannot be the watched folder, nor a folder holding it", path=self.store,
                              code=ErrorCode.WATCH_OPTION,
                              hint="keep the store beside the watched folder (or inside it: it is never scanned)")


def check_move_to(move_to: Path, folder: Path) -> None:
    """``--move-to`` must be a folder this process can write, or one it can create (nothing is made here):
    else every committed file would fail to move, one error line each, while /readyz said ok."""
    if move_to.resolve() == folder.resolve():
        raise ConfigError("--move-to cannot be the watched folder itself", code=ErrorCode.WATCH_OPTION,
                          hint="use a folder beside it, or a subfolder (which is then not watched)")
    existing = move_to.absolute()
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent  # the nearest part of the path that exists: the rest is created at the first move
    if not existing.is_dir():
        raise ConfigError(f"--move-to {move_to}: {existing} is not a folder", code=ErrorCode.WATCH_OPTION,
                          hint="name a folder (created if missing) beside the watched one")
    if not os.access(existing, os.W_OK | os.X_OK):  # also false on a read-only mount
        raise ConfigError(f"--move-to {move_to}: {existing} cannot be written by this process",
                          code=ErrorCode.WATCH_OPTION,
                          hint="give the daemon's user write access to it (systemd: add it to ReadWritePaths=; "
                               "a container: mount it read-write), or pass another folder")

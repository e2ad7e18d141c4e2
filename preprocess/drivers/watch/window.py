"""A commit window: what the daemon took since its last commit, and when to commit it.

The daemon commits a window when it holds ``commit_every`` rows (items + failures) or when its
first file was taken ``commit_interval`` seconds ago, whichever comes first, and at shutdown.
After the commit, the window's files may be moved to ``done/`` and ``failed/`` folders.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from preprocess.drivers.watch.queue import UNSEEN, Stat

Outcome = Literal["stored", "failed", "duplicate"]


@dataclass(frozen=True)
class Taken:
    path: str
    stat: Stat  # the version that was read
    outcome: Outcome

    @property
    def closed_at(self) -> float:
        """Unix time of the file's last write (its mtime: when the writer closed it, near enough)."""
        return self.stat.mtime_ns / 1e9


@dataclass
class Window:
    """The files taken since the last commit (their rows are the ingest's: see
    :attr:`preprocess.drivers.ingest.Ingest.pending_rows`)."""

    files: list[Taken] = field(default_factory=list)
    opened_at: float | None = None  # monotonic time of its first file

    def add(self, taken: Taken) -> None:
        if self.opened_at is None:
            self.opened_at = time.monotonic()
        self.files.append(taken)

    def due(self, *, rows: int, every: int, interval: float, now: float | None = None) -> str | None:
        """Why this window (holding ``rows`` uncommitted rows) should be committed now ("count" /
        "interval"), or None."""
        if rows >= every:
            return "count"
        if self.opened_at is not None and (now or time.monotonic()) - self.opened_at >= interval:
            return "interval"
        return None


NAME_MAX = 255  # bytes in one file name (Linux filesystems)


@dataclass
class Moves:
    """What :func:`move_settled` did: the (from, to) pairs moved, and the (path, error) of those it could not."""

    moved: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def move_settled(files: list[Taken], folder: str, move_to: str) -> Moves:
    """Move committed files to MOVE_TO/done/<relative path> (or failed/).

    A file that changed since it was read is left where it is (its new version is taken again), and so
    is a folder that could not be listed (recorded as a failure, never moved); a name already taken in
    the destination gets a numbered suffix, its stem shortened to fit a file name's 255 bytes. A file
    that cannot be moved is reported and the others are moved.
    """
    out = Moves()
    for f in files:
        if Stat.of(f.path) != f.stat or f.stat == UNSEEN or os.path.isdir(f.path):  # changed; not a file
            continue
        try:
            out.moved.append((f.path, _move(f, folder, move_to)))
        except OSError as exc:
            out.failed.append((f.path, exc.strerror or str(exc)))
    return out


def _move(f: Taken, folder: str, move_to: str) -> str:
    rel = os.path.relpath(f.path, folder)
    dest = Path(move_to) / ("failed" if f.outcome == "failed" else "done") / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    n, target = 0, dest
    while target.exists():
        n += 1
        target = dest.with_name(numbered(dest.name, n))
    shutil.move(f.path, target)
    return str(target)


def numbered(name: str, n: int) -> str:
    """``name`` with ``.n`` before its suffix (``a.jpg`` -> ``a.1.jpg``), its stem cut (on bytes) to keep the
    whole within :data:`NAME_MAX` bytes."""
    p = Path(name)
    stem, tail = os.fsencode(p.stem), os.fsencode(f".{n}{p.suffix}")
    cut = max(NAME_MAX - len(tail), 1)
    if not any("\udc80" <= ch <= "\udcff" for ch in p.stem):  # UTF-8 text: cut between two characters
        while 1 < cut < len(stem) and stem[cut] & 0xC0 == 0x80:
            cut -= 1
    return os.fsdecode(stem[:cut] + tail)

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

from preprocess.drivers.watch.queue import Stat

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


def move_settled(files: list[Taken], folder: str, move_to: str) -> list[tuple[str, str]]:
    """Move committed files to MOVE_TO/done/<relative path> (or failed/); returns (from, to) pairs.

    A file that changed since it was read is left where it is (its new version is taken again);
    a name already taken in the destination gets a numbered suffix.
    """
    moved: list[tuple[str, str]] = []
    for f in files:
        if Stat.of(f.path) != f.stat:
            continue
        rel = os.path.relpath(f.path, folder)
        dest = Path(move_to) / ("failed" if f.outcome == "failed" else "done") / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        n = 0
        target = dest
        while target.exists():
            n += 1
            target = dest.with_name(f"{dest.stem}.{n}{dest.suffix}")
        shutil.move(f.path, target)
        moved.append((f.path, str(target)))
    return moved

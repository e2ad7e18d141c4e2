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
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from preprocess.job import Summary, Tally
from preprocess.process import Plan
from preprocess.watch.queue import Stat

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
    summary: Summary
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    files: list[Taken] = field(default_factory=list)
    listed: list[tuple[str, str]] = field(default_factory=list)  # (path, sha256) of files read
    rows: int = 0  # rows added to the writer (items + failures)
    opened_at: float | None = None  # monotonic time of its first file

    def __post_init__(self) -> None:
        self.tally = Tally(self.summary)

    @classmethod
    def new(cls, p: Plan, *, job_id: str, branch: str, store: str) -> Window:
        return cls(Summary(job_id=job_id, snapshot=None, branch=branch, store=store, engine=p.engine,
                           device=p.device, spec=p.spec_path, fingerprint=p.fingerprint, model=p.model))

    def add(self, taken: Taken) -> None:
        if self.opened_at is None:
            self.opened_at = time.monotonic()
        self.files.append(taken)
        self.summary.sources += 1
        self.summary.skipped += taken.outcome == "duplicate"

    def due(self, *, every: int, interval: float, now: float | None = None) -> str | None:
        """Why this window should be committed now ("count" / "interval"), or None."""
        if self.rows >= every:
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

"""How long-running work reports progress: one protocol for the CLI's bars (run, tune), plain lines (logs,
CI) and silence."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class Progress(Protocol):
    """``start(total)``, then ``advance`` as steps finish (images for a job, as each lane finishes a
    chunk, then their bytes in and out once stored; sweep steps for tune), then ``finish`` (also
    after a failure). ``advance`` may be called from several threads at once."""

    def start(self, total: int) -> None: ...
    def advance(self, steps: int, bytes_in: int = 0, bytes_out: int = 0) -> None: ...
    def finish(self) -> None: ...


class SilentProgress:
    """Reports nothing (``--json``, tests, Ray with no terminal)."""

    def start(self, total: int) -> None: ...
    def advance(self, steps: int, bytes_in: int = 0, bytes_out: int = 0) -> None: ...
    def finish(self) -> None: ...


class LineProgress:
    """Progress as plain lines, for logs and CI (no terminal to redraw a bar on): ``LABEL: N/M UNIT
    (P%), R UNIT/s, ETA S`` at most every ``every`` seconds, and a last line when it finishes. The time left
    is from the rate since the first step was done: the time before it (a model loaded, the first batch
    measured together) is start-up, and once counted it said 5 minutes left of a 40-second tune."""

    def __init__(self, write: Callable[[str], None], label: str, unit: str = "images", every: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._write, self._label, self._unit, self._every, self._clock = write, label, unit, every, clock
        self._lock = threading.Lock()  # advance may be called from several threads
        self._total = self._done = 0
        self._t0 = self._last = 0.0
        self._first: tuple[float, int] | None = None  # when the first steps were done, and how many

    def start(self, total: int) -> None:
        self._total, self._done, self._first = total, 0, None
        self._t0 = self._last = self._clock()
        self._write(f"{self._label}: 0/{total} {self._unit}")

    def advance(self, steps: int, bytes_in: int = 0, bytes_out: int = 0) -> None:
        with self._lock:
            self._done += steps
            now = self._clock()
            if self._first is None and self._done > 0:
                self._first = (now, self._done)
            if now - self._last >= self._every and self._done < self._total:
                self._last = now
                self._write(self.line(now))

    def line(self, now: float) -> str:
        elapsed = max(now - self._t0, 1e-9)
        rate = self._done / elapsed
        t1, d1 = self._first or (now, self._done)
        steady = (self._done - d1) / (now - t1) if now > t1 else 0.0
        eta = (self._total - self._done) / steady if steady > 0 else float("inf")
        share = self._done / self._total if self._total else 1.0
        return (f"{self._label}: {self._done}/{self._total} {self._unit} ({share:.0%}), {rate:.1f} {self._unit}/s, "
                f"ETA {_duration(eta)}")

    def finish(self) -> None:
        elapsed = self._clock() - self._t0
        rate = self._done / elapsed if elapsed > 0 else 0.0
        self._write(f"{self._label}: {self._done}/{self._total} {self._unit} in {_duration(elapsed)} "
                    f"({rate:.1f} {self._unit}/s)")


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    s = round(seconds)
    return f"{s // 60}:{s % 60:02d}" if s >= 60 else f"{s} s"

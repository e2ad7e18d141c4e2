"""Timing: seconds per stage, summed (:class:`Timings`), and when something started (:class:`Stopwatch`).

The one way the package measures time: the job, the watch daemon and the Ray driver time their
stages with :meth:`Timings.stage`; a stage measured elsewhere (another thread, a Ray actor) is
added with :meth:`Timings.add` or :meth:`Timings.merge`; a thread going through stages one after
the other (the gate's rounds, a lane's chunk) ticks :class:`Laps`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime


class Timings:
    """Seconds per stage, summed over every time the stage ran."""

    def __init__(self, seconds: Mapping[str, float] | None = None) -> None:
        self.seconds: dict[str, float] = dict(seconds or {})

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def merge(self, other: Mapping[str, float]) -> None:
        for stage, secs in other.items():
            self.add(stage, secs)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as stage ``name`` (also when it raises)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def rounded(self, digits: int = 4) -> dict[str, float]:
        return {k: round(v, digits) for k, v in self.seconds.items()}


class Laps:
    """Consecutive stages of one thread: ``laps(stage)`` adds the time since the previous call (or since
    the start) to ``stage`` in ``sink`` (a :class:`Timings` or a plain dict; nothing when None)."""

    def __init__(self, sink: Timings | dict[str, float] | None) -> None:
        self.sink = sink.seconds if isinstance(sink, Timings) else sink
        self.t = time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        if self.sink is not None:
            self.sink[stage] = self.sink.get(stage, 0.0) + now - self.t
        self.t = now


class Stopwatch:
    """When something started: wall-clock time (ISO 8601, UTC) and elapsed seconds (monotonic)."""

    def __init__(self) -> None:
        self.started_at = datetime.now(UTC).isoformat()
        self._t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self._t0


def now_iso() -> str:
    return datetime.now(UTC).isoformat()

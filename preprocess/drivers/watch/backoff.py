"""When the daemon retries a store that failed (a full disk, a conflict, a storage error).

After a failure the daemon takes no files for ``delay`` seconds (``start``, doubling with each
failure in a row, at most ``cap``), then probes the store and reopens its writer (writable again);
a commit that succeeds ends the run of failures. :meth:`Backoff.detail` is what ``/readyz`` shows meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from preprocess.core.errors import PreprocessError

START = 1.0  # seconds before the first retry
CAP = 60.0  # the longest wait between retries


@dataclass
class Backoff:
    start: float = START
    cap: float = CAP
    failures: int = 0  # in a row, since the last successful commit
    delay: float = 0.0  # the current wait (0 while the store works)
    retry_at: float = 0.0  # monotonic time of the next retry
    error: PreprocessError | None = None  # the last failure

    def failed(self, exc: PreprocessError, now: float) -> float:
        """Note a failure; returns the seconds until the next retry."""
        self.failures += 1
        self.error = exc
        self.delay = min(self.cap, self.start * 2 ** (self.failures - 1))
        self.retry_at = now + self.delay
        return self.delay

    def due(self, now: float) -> bool:
        return now >= self.retry_at

    @property
    def down(self) -> bool:
        """The store failed and was not yet found writable again."""
        return self.error is not None

    def reopened(self) -> None:
        """The probe wrote and the writer reopened: writable again. The failures in a row are kept
        until a commit succeeds, so a window that fails again waits longer."""
        self.error = None

    def succeeded(self) -> bool:
        """A commit went through: the failures are over. Returns whether there were any."""
        had = self.failures > 0
        self.failures = 0
        self.delay = 0.0
        self.error = None
        return had

    def detail(self, now: float) -> dict[str, Any]:
        """The store's state for ``/readyz``: writable, or the last error and when the next retry is."""
        if self.error is None:
            return {"writable": True}
        return {"writable": False, "code": self.error.code, "error": self.error.one_line(),
                "failures": self.failures, "retry_in_s": round(max(0.0, self.retry_at - now), 3)}

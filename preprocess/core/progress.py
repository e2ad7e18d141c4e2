"""How long-running work reports progress: one protocol for the CLI's bars (run, tune) and silence."""

from __future__ import annotations

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

"""SIGINT and SIGTERM in the command line: one line, exit 130, never a traceback, never a commit cut
in the middle of being reported.

The process entry point (``preprocess/__main__.py``) calls :func:`install` before anything slow is
imported. From then on the first SIGINT or SIGTERM raises :class:`Interrupted` in the main thread,
wherever it is (imports, planning, reading, processing): the with-blocks and ``finally`` clauses on
the way out discard what was not committed and release the store's lock, and the entry point prints
:meth:`Interrupted.one_line` and exits 130 (:func:`leave`). A second signal exits at once (130; the store is then as
after a SIGKILL: at its last commit).

A commit runs inside :func:`held`: a signal during it takes effect when it ends, so the outcome is
always known; the interrupt then says which snapshot was committed (:func:`committed`). A signal that
a library swallowed (a bare ``except:``) still stops the job at the next :func:`check`, and never lets
a commit begin.

The watch daemon installs its own handlers (finish the batch, commit, exit 0). Library users who
never call :func:`install` see none of this: :func:`held`, :func:`check` and :func:`committed` do
nothing then.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import Any

from preprocess.core.errors import EXIT_INTERRUPTED

SIGNALS = (signal.SIGINT, signal.SIGTERM)


# What an interrupt leaves of a command that commits a job (``run``): its words until the command says otherwise.
# A job is one commit, so its images are processed again by a rerun (those that earlier commits hold are not).
JOB_LEFT = ("nothing was committed (the dataset stays at its last commit, unlocked; a rerun processes this "
            "job's images again)")
JOBS = frozenset({"run", "watch"})  # the commands that commit a job


class Interrupted(BaseException):
    """The process got SIGINT or SIGTERM. A BaseException, like KeyboardInterrupt, so that
    ``except Exception`` does not stop it (typer turns KeyboardInterrupt into a silent exit)."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, signum: int, committed: str | None = None, *, left: str = JOB_LEFT, done: str = "") -> None:
        super().__init__(signum)
        self.signum = signum
        self.committed = committed  # the snapshot this process committed last, if any
        self.left = left  # what an interrupt before the command's end leaves (:func:`install`, :func:`leaves`)
        self.done = done  # what it finished before the interrupt (:func:`finished`)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    def one_line(self) -> str:
        if self.done:
            return f"interrupted by {self.name} after {self.done}"
        if self.committed:
            return (f"interrupted by {self.name} after the commit: snapshot {self.committed} holds the job "
                    "(a rerun adds nothing)")
        if self.left:
            return f"interrupted by {self.name}: {self.left}"
        return f"interrupted by {self.name}"


class _State:
    """What this process's handler saw (a plain class: this module is imported first, so it keeps
    its imports few)."""

    def __init__(self) -> None:
        self.installed = False
        self.signals = 0  # received since install
        self.first: int | None = None  # the first signal
        self.holding = 0  # depth of held() blocks
        self.snapshots: list[str] = []  # committed by this process
        self.left = JOB_LEFT  # what an interrupt leaves: a job's words, or the command's (:func:`install`)
        self.done = ""


_state = _State()


def install(command: str | None = "run") -> None:
    """Make SIGINT and SIGTERM raise :class:`Interrupted` (a signal inherited as ignored, e.g. by a
    background job of a shell, stays ignored). ``command``: the subcommand (None: not known yet); only a job
    (:data:`JOBS`) says what an interrupt leaves of the dataset, other commands say only that they were
    interrupted, unless they say more (:func:`leaves`)."""
    if not _state.installed:
        _state.left = JOB_LEFT if command in JOBS else ""
    for sig in SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, _on_signal)
    if not _state.installed:
        sys.unraisablehook = _quiet_interrupts(sys.unraisablehook)
    _state.installed = True


def _quiet_interrupts(hook: Callable[[Any], object]) -> Callable[[Any], object]:
    """``hook``, but silent for an :class:`Interrupted` raised where Python cannot raise (the signal landed
    in a weakref callback, such as importlib's module-lock cleanup, or a ``__del__``): it printed
    "Exception ignored in ..." and a traceback; the signal is acted upon at the next :func:`check` or
    :func:`held`, as one that a library swallowed."""

    def quiet(unraisable: Any) -> object:
        if isinstance(unraisable.exc_value, Interrupted):
            return None
        return hook(unraisable)

    return quiet


def reinstall() -> None:
    """Take the signals back after a library replaced the handlers (``ray.init`` does); does
    nothing unless :func:`install` was called."""
    if _state.installed:
        install()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    s = _state
    s.signals += 1
    if s.signals > 1:
        os.write(2, f"interrupted again by {signal.Signals(signum).name}: exiting at once (the dataset "
                    "stays at its last commit)\n".encode())
        os._exit(EXIT_INTERRUPTED)
    s.first = signum
    if not s.holding:
        _raise()


def _raise() -> None:
    found = pending()
    assert found is not None
    raise found


def check() -> None:
    """Raise :class:`Interrupted` when a signal came and was not acted upon (a library swallowed it)."""
    if _state.first is not None:
        _raise()


def pending() -> Interrupted | None:
    """The interrupt of the signal this process got, if any (to tell an error a library made of it)."""
    if _state.first is None:
        return None
    return Interrupted(_state.first, _state.snapshots[-1] if _state.snapshots else None, left=_state.left,
                       done=_state.done)


def leaves(what: str) -> None:
    """Say what an interrupt of this command leaves (a command that commits nothing: ``export`` removes
    what it wrote); the interrupt's line says it instead of a job's words. Nothing unless installed."""
    if _state.installed:
        _state.left = what


def finished(what: str) -> None:
    """Say that the command's outcome is complete (``the export to OUT``): an interrupt after it says so.
    Nothing unless installed."""
    if _state.installed:
        _state.done = what


def handled() -> Interrupted | None:
    """Take the pending interrupt as dealt with (the watch daemon stopping during its start-up, exit
    0): it is not reported again on the way out; a second signal still exits at once."""
    found = pending()
    _state.first = None
    return found


@contextmanager
def held() -> Iterator[None]:
    """A block a signal does not cut (a commit): a signal during it raises when the block ends
    (after a normal end; an error from the block goes first). Refuses to begin after a signal."""
    check()
    _state.holding += 1
    try:
        yield
    finally:
        _state.holding -= 1
    if not _state.holding and _state.first is not None:
        _raise()


def leave(code: int) -> None:
    """Exit now with ``code``, whatever ended the command: the job has unwound (nothing uncommitted is
    kept, the lock is released), so the interpreter's slow teardown is skipped. Python resets the
    signal handlers to their defaults late in that teardown, and a Ctrl-C landing there would kill the
    process by the signal (exit -2) without a line; until ``os._exit`` the handler stays. A first
    signal from here on is only noted (the exit reports it: one line, 130), a second exits at once.
    A local Ray started by this process is shut down first."""
    _state.holding += 1
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):
            stream.flush()
    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        ray.shutdown()
    late = pending()
    if late is not None and code != EXIT_INTERRUPTED:  # it came after the command's own ending
        os.write(2, (late.one_line() + "\n").encode())
        code = EXIT_INTERRUPTED
    os._exit(code)


def committed(snapshot: str) -> None:
    """Note a snapshot this process committed (what an interrupt after it reports)."""
    if _state.installed:
        _state.snapshots.append(snapshot)

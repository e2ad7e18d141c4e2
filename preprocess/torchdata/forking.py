"""Forking and icechunk: when a DataLoader worker may be forked, and the one-line error when it may not.

icechunk runs a tokio runtime whose threads start when it is imported; a process forked after that
inherits the runtime without its threads, and its first read of any repository hangs (measured:
``import icechunk`` in the parent, then a forked child opening a store never returns). A process
that never imported icechunk forks safely, and a forked worker then starts at once: it inherits
torch, numpy, zarr and the decoders, imports only icechunk, and opens the store at its first item.

So the reader keeps its process free of icechunk when it can: the version's rows and columns are read
in a short-lived forked child (:func:`in_child`), and :func:`preprocess.torchdata.loader` forks its
workers while icechunk is not loaded (else it starts them from a forkserver). A worker forked from a
process that had icechunk raises :class:`WorkerForked` at its first item.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, InternalError

FORK_HINT = ("pass multiprocessing_context='forkserver' (or 'spawn') to the DataLoader, or use "
             "preprocess.loader(), which forks only while that is safe")


def icechunk_loaded() -> bool:
    return "icechunk" in sys.modules


def can_fork() -> bool:
    """Whether a worker forked now could read a store (Linux: macOS frameworks do not survive fork either)."""
    return sys.platform == "linux" and not icechunk_loaded()


_at_fork = {"icechunk": False}  # set in the parent just before every fork; the child inherits the value


def _note_fork() -> None:
    _at_fork["icechunk"] = icechunk_loaded()


os.register_at_fork(before=_note_fork)


def forked_with_icechunk() -> bool:
    """In a forked child: whether its parent had icechunk loaded when it forked."""
    return _at_fork["icechunk"]


class WorkerForked(ConfigError):
    """A worker forked from a process that had icechunk loaded. One line, whatever it is built from:
    torch's DataLoader re-raises a worker's error in the main process as ``type(error)(traceback
    text)``, and this type answers that with its own line and the fix, not a 30-line traceback."""

    code = ErrorCode.TORCH_FORK
    hint = FORK_HINT

    def __init__(self, *_: object) -> None:
        super().__init__("a DataLoader worker was forked from a process that had loaded icechunk (a forked "
                         "child cannot read a store then: it would hang)")

    def __str__(self) -> str:
        return f"error[{self.code}]: {self.message}; fix: {self.hint}"

    def __reduce__(self) -> tuple[type[WorkerForked], tuple[()]]:
        return WorkerForked, ()


def _run[T](send: Connection, call: Callable[[], T]) -> None:
    try:
        result: tuple[bool, object] = (True, call())
    except BaseException as exc:  # every failure goes back to the parent, which raises it
        result = (False, exc)
    try:
        send.send(result)
    except Exception as exc:  # an exception that does not pickle: its line
        send.send((False, InternalError(f"{type(result[1]).__name__}: {result[1]} ({exc})")))


def in_child[T](call: Callable[[], T], result: type[T]) -> T:
    """``call()`` in a forked child (so that what it imports and opens stays out of this process), its
    result or exception passed back. Only where :func:`can_fork`."""
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_run, args=(send, call), daemon=True, name="preprocess-read-version")
    child.start()
    send.close()
    try:
        ok, value = recv.recv()
    except EOFError:
        raise InternalError(f"the process reading the version ended without an answer (exit {child.exitcode})",
                            hint="run it again; if it persists, report it with the log") from None
    finally:
        recv.close()
        child.join()
    if not ok:
        assert isinstance(value, BaseException)
        raise value
    assert isinstance(value, result)
    return value

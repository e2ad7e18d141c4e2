"""The process entry point (the ``preprocess`` command and ``python -m preprocess``).

The SIGINT/SIGTERM handlers go in first, before anything slow is imported, so that an interrupt at
any moment, start-up included, ends in one line and exit 130 (see :mod:`preprocess.core.interrupts`):
also when a library turned the interrupt into an error of its own (pybind11 reports an exception in
a module's initialisation as ``ImportError: initialization failed``: onnxruntime's, while it is
imported). Every ending leaves through :func:`~preprocess.core.interrupts.leave`, so that a signal in
the interpreter's teardown (where Python resets the handlers) cannot kill the process without a line.
"""

from __future__ import annotations

import sys

from preprocess.core import interrupts


def main() -> None:
    interrupts.install(_subcommand(sys.argv[1:]))
    if sys.argv[1:] == ["--version"]:  # answered before typer and the commands are imported (as cli.app does)
        import preprocess

        print(f"preprocess {preprocess.__version__}")
        return
    try:
        interrupts.leave(_command())
    except interrupts.Interrupted as exc:
        # Wherever the first signal landed: in the command, while its ending was handled, or in leave()
        # before it holds the signals. From here a second signal exits at once, with its line.
        interrupts.leave(_report(exc))


def _subcommand(args: list[str]) -> str | None:
    """The subcommand ``args`` name (the first word that is not an option), else None."""
    return next((a for a in args if not a.startswith("-")), None)


def _command() -> int:
    """The command's exit code, however it ended but by a signal (:class:`~interrupts.Interrupted` goes up)."""
    try:
        from preprocess.cli import main as cli

        cli()
        return 0
    except SystemExit as exc:
        return _exit_code(exc)
    except Exception as exc:
        pending = interrupts.pending()
        if pending is not None:
            return _report(pending)  # what the signal became inside a library
        return _bug(exc)


def _bug(exc: Exception) -> int:
    """An exception no command turned into an error line: a bug. Its traceback (where), then the error line
    every other failure ends with, and exit 70, as README's exit codes say (it was Python's 1)."""
    import traceback

    from preprocess.core.errors import InternalError, first_line

    traceback.print_exception(exc)
    sys.stderr.write(f"error[{InternalError.code}]: {type(exc).__name__}: {first_line(exc)}\n  hint: "
                     f"{InternalError.hint}\n")
    return InternalError.exit_code


def _report(exc: interrupts.Interrupted) -> int:
    sys.stderr.write(exc.one_line() + "\n")
    return exc.exit_code


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None or isinstance(exc.code, int):
        return int(exc.code or 0)
    sys.stderr.write(f"{exc.code}\n")
    return 1


if __name__ == "__main__":
    main()

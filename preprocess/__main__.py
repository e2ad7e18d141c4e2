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
    interrupts.install()
    if sys.argv[1:] == ["--version"]:  # answered before typer and the commands are imported (as cli.app does)
        import preprocess

        print(f"preprocess {preprocess.__version__}")
        return
    try:
        from preprocess.cli import main as cli

        cli()
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc)
    except interrupts.Interrupted as exc:
        code = _report(exc)
    except Exception:
        pending = interrupts.pending()
        if pending is None:
            raise  # a bug: its traceback, exit 1
        code = _report(pending)  # what the signal became inside a library
    interrupts.leave(code)


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

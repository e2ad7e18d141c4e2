"""The process entry point (the ``preprocess`` command and ``python -m preprocess``).

The SIGINT/SIGTERM handlers go in first, before anything slow is imported, so that an interrupt at
any moment, start-up included, ends in one line and exit 130 (see :mod:`preprocess.core.interrupts`).
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
    except interrupts.Interrupted as exc:
        sys.stderr.write(exc.one_line() + "\n")
        interrupts.leave(exc.exit_code)


if __name__ == "__main__":
    main()

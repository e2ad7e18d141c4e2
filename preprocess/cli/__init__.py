"""The ``preprocess`` command line: one module per command group, registered on one typer app."""

from __future__ import annotations

import sys

from preprocess.cli import history, models, run, serve, tune, watch  # noqa: F401  (registers the commands)
from preprocess.cli.app import app, err

__all__ = ["app", "main"]


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted: nothing was committed by the unfinished job")
        sys.exit(130)



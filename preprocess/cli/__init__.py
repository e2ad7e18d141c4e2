"""The ``preprocess`` command line: one module per command group, registered on one typer app.

The process starts in ``preprocess/__main__.py`` (signal handlers first), which calls :func:`main`.
"""

from __future__ import annotations

from preprocess.cli import history, ls, models, run, serve, tune, verify, watch  # noqa: F401  (registers the commands)
from preprocess.cli.app import app
from preprocess.cli.helptext import command

__all__ = ["app", "command", "main"]


def main() -> None:
    command(app)(prog_name="preprocess")

"""The ``preprocess`` command line: one module per command group, registered on one typer app.

The process starts in ``preprocess/__main__.py`` (signal handlers first), which calls :func:`main`.
"""

from __future__ import annotations

from preprocess.cli import history, models, run, serve, tune, watch  # noqa: F401  (registers the commands)
from preprocess.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    app()

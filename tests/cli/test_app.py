"""Help text says what the commands do (issue 14, broken 8): rich renders typer's help as markup, so a
``[word]`` in a help text (``pip install 'preprocess[ray]'``) vanished unless escaped; and every
command that takes a store says that ``s3://`` works."""

from __future__ import annotations

from typing import Any

import typer
from rich.text import Text
from typer.testing import CliRunner

from preprocess.cli import app


def commands() -> dict[str, Any]:
    root: Any = typer.main.get_command(app)  # typer vendors click: a group with .commands
    found = {}
    for name, cmd in root.commands.items():
        found.update({f"{name} {sub}": c for sub, c in getattr(cmd, "commands", {}).items()} or {name: cmd})
    return found


def test_no_help_text_loses_brackets_to_rich_markup() -> None:
    checked = 0
    for name, cmd in commands().items():
        for text in [cmd.help or "", *(getattr(p, "help", None) or "" for p in cmd.params)]:
            shown = Text.from_markup(text).plain
            assert shown == text.replace("\\[", "["), (name, text, shown)
            checked += 1
    assert checked > 50
    out = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "250"}).output
    assert "pip install 'preprocess[ray]'" in out


def test_every_store_argument_says_s3_works() -> None:
    for name in ("log", "show", "diff", "tag", "branch", "reset", "export", "gc", "serve"):
        store = next(p for p in commands()[name].params if p.name == "store")
        assert "s3://" in store.help and "a local path" in store.help, name
        assert "(a local path)" not in store.help
    run_store = next(p for p in commands()["run"].params if p.name == "store")
    assert "s3://" in run_store.help

"""Help text says what the commands do (issue 14, broken 8): rich renders typer's help as markup, so a
``[word]`` in a help text (``pip install 'preprocess[ray]'``) vanished unless escaped; and every
command that takes a store says that ``s3://`` works."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
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
    for name in ("log", "show", "diff", "tag", "branch", "reset", "export", "gc", "verify", "serve"):
        store = next(p for p in commands()[name].params if p.name == "store")
        assert "s3://" in store.help and "a local path" in store.help, name
        assert "(a local path)" not in store.help
    run_store = next(p for p in commands()["run"].params if p.name == "store")
    assert "s3://" in run_store.help
    # an operator's first deployment: `watch --help` said "a local path" while an S3 dataset works (the
    # folder is what must be local)
    watch_store = next(p for p in commands()["watch"].params if p.name == "store")
    assert "s3://" in watch_store.help, watch_store.help


def test_help_keeps_paragraphs_whole_and_shows_no_type_for_flags() -> None:
    """issue 23, bug 10: typer kept the docstrings' hard line breaks, so help was wrapped again
    mid-sentence; and flags read ``--json <bool>`` as if they took a value."""
    import os
    import subprocess
    import sys

    def help_of(name: str, columns: int) -> str:
        env = {**os.environ, "COLUMNS": str(columns), "TERM": "dumb", "NO_COLOR": "1"}
        return subprocess.run([sys.executable, "-m", "preprocess", name, "--help"], env=env, capture_output=True,
                              text=True, check=True).stdout

    wide = help_of("watch", 250)
    assert "exits 0 (twice: 130). A full disk is retried (/readyz says why). Exit 2:" in wide
    for name in ("log", "ls", "run"):
        shown = help_of(name, 80)
        assert "<bool>" not in shown and "--json" in shown, name


def test_errors_under_json_are_json_documents_too(tmp_path: Path) -> None:
    import json

    r = CliRunner().invoke(app, ["log", "/nonexistent/store", "--json"])
    assert r.exit_code == 2
    doc = json.loads(r.stdout)
    assert doc["version"] == 1 and doc["command"] == "log" and "result" not in doc
    assert doc["error"]["code"] == "STORE_MISSING" and doc["error"]["exit_code"] == 2 and doc["error"]["hint"]
    assert r.stderr.startswith("error[STORE_MISSING]")  # the line a person reads, as without --json
    # the location an error concerns is its "path" (a newcomer's walkthrough, session 7: it was null where the
    # message named it, for a missing or foreign store and a folder without images)
    assert doc["error"]["path"] == "/nonexistent/store"
    foreign = json.loads(CliRunner().invoke(app, ["log", "/etc/passwd", "--json"]).stdout)["error"]
    assert (foreign["code"], foreign["path"]) == ("STORE_FOREIGN", "/etc/passwd")
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = CliRunner().invoke(app, ["run", str(empty), "--store", str(tmp_path / "s.icechunk"), "--json"])
    assert json.loads(nothing.stdout)["error"]["path"] == str(empty), nothing.output


def test_every_exit_code_of_watch_names_its_codes() -> None:
    """`watch --help` said "4 STORE_LOCKED", but a second daemon on a folder that one of them moves files from
    exits 4 as well, with WATCH_FOLDER_BUSY (README, "Exit codes"): the help names both."""
    help_text = " ".join((commands()["watch"].help or "").split())
    assert "4 STORE_LOCKED or WATCH_FOLDER_BUSY;" in help_text, help_text


def test_a_file_named_like_an_option_gets_a_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A newcomer's walkthrough (session 7): `run -leading.jpg` said "no such option: -l", hint `--help` only."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "-leading.jpg").write_bytes(b"")
    r = CliRunner().invoke(app, ["run", "-leading.jpg", "--store", "s.icechunk"])
    assert r.exit_code == 2 and "error[CLI_USAGE]" in r.stderr, r.output
    assert "-leading.jpg is a file: write ./-leading.jpg, or put -- before it" in r.stderr, r.stderr
    other = CliRunner().invoke(app, ["run", "-x", "--store", "s.icechunk"])
    assert "is a file" not in other.stderr and "see `preprocess run --help`" in other.stderr

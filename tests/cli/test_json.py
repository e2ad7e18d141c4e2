"""Every `--json` is a documented, versioned document (issue 23): real outputs of each command, and of
an error, validate against docs/json-schema.json, and docs/json.md names every command it covers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
from typer.testing import CliRunner

from preprocess.cli import app
from tests.paths import ROOT
from tests.store.conftest import Hist

SCHEMA = json.loads((ROOT / "docs" / "json-schema.json").read_text())


def document(*args: str) -> Any:
    r = CliRunner().invoke(app, [*args, "--json"])
    doc = json.loads(r.stdout)
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)
    return doc


def test_every_commands_json_validates_against_the_schema(hist: Hist, tmp_path: Path, tiny_specs: list[Path],
                                                           photo_sets: list[Path]) -> None:
    s = str(hist.store)
    shown = {(a[0], *a[1:]): document(*a) for a in (
        ("log", s), ("log", s, "low-q"), ("show", s), ("show", s, "v1"), ("show", s, "--item", "apple.jpg"),
        ("show", s, "--item", "truncated.jpg"), ("diff", s, "main", "low-q"), ("ls", s), ("ls", s, "low-q", "-w",
        "quality < 50"), ("branch", s), ("tag", s), ("models", "list"))}
    assert {d["command"] for d in shown.values()} == {"log", "show", "diff", "ls", "branch", "tag", "models list"}
    assert all(d["version"] == 1 and "error" not in d for d in shown.values())
    copy = tmp_path / "c.icechunk"
    shutil.copytree(hist.store, copy)
    c = str(copy)
    for args in (("tag", c, "t1", "main~1"), ("branch", c, "exp", "v1"), ("reset", c, "again", "v1"),
                 ("export", c, str(tmp_path / "out"), "--ref", "low-q"), ("gc", c, "--older-than", "0s", "--dry-run")):
        assert "error" not in document(*args), args
    ran = document("run", str(photo_sets[2]), "--store", str(tmp_path / "new.icechunk"), "--spec",
                   str(tiny_specs[0]), "--engine", "pillow")
    assert ran["command"] == "run" and ran["stored"] == 2


def test_errors_validate_and_say_the_code_under_json(hist: Hist, tmp_path: Path) -> None:
    for args, code in ((("log", str(hist.store), "nope"), "REF_MISSING"),
                       (("ls", str(hist.store), "-w", "x <"), "WHERE_INVALID"),
                       (("show", str(tmp_path)), "STORE_MISSING"),
                       (("log", str(hist.store), "--limit", "-3"), "CLI_USAGE")):
        doc = document(*args)
        assert doc["error"]["code"] == code and doc["error"]["exit_code"] == 2, args


def test_the_docs_name_every_command_and_the_schema() -> None:
    doc = (ROOT / "docs" / "json.md").read_text()
    commands = ("log", "show", "diff", "ls", "branch", "tag", "reset", "export", "gc", "verify", "run", "tune",
                "models list")
    for command in commands:
        assert f"`{command}`" in doc, command
    assert "json-schema.json" in doc and '"version": 1' in doc

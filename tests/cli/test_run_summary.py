"""The run summary's similarity line names every view the gate checked (a newcomer's third walkthrough:
it printed the first check's, the whole view's, alone, while the crops check was the one that bound; `ls
--sort similarity_crops` then showed 0.9754 beside the summary's "min 0.9915")."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from preprocess.cli import app
from preprocess.core.errors import failure_hint
from preprocess.store import open_dataset

SPEC = """
[pipeline]
name = "two-views"
[resize]
mode = "long-side"
size = 256
[quality]
mode = "fixed"
value = 60
[gate.views]
whole = 0.5
crops = 0.5
"""


def test_the_summary_gives_each_checked_views_min_and_mean(tmp_path: Path, photo_sets: list[Path]) -> None:
    spec = tmp_path / "two-views.toml"
    spec.write_text(SPEC)
    store = tmp_path / "s.icechunk"
    args = ["run", str(photo_sets[0]), "--spec", str(spec), "--engine", "pillow", "--store", str(store)]
    r = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    rows = open_dataset(str(store)).items_table(["similarity_whole", "similarity_crops"])
    whole, crops = [float(v) for v in rows["similarity_whole"]], [float(v) for v in rows["similarity_crops"]]
    assert f"whole min {min(whole):.4f}" in r.stdout and f"crops min {min(crops):.4f}" in r.stdout, r.stdout
    doc = json.loads(CliRunner().invoke(app, [*args[:-1], str(tmp_path / "b.icechunk"), "--json"]).stdout)
    assert set(doc["views"]) == {"whole", "crops"} and abs(doc["views"]["crops"]["min"] - min(crops)) < 2e-6
    assert doc["warnings"] == []  # it names its views
    whole_only = tmp_path / "whole-only.toml"
    whole_only.write_text(SPEC.split("[gate.views]", maxsplit=1)[0])  # no views: the whole frame alone, and it says so
    doc = json.loads(CliRunner().invoke(app, ["run", str(photo_sets[0]), "--spec", str(whole_only), "--engine",
                                              "pillow", "--store", str(tmp_path / "c.icechunk"), "--json"]).stdout)
    assert len(doc["warnings"]) == 1 and "gate.views is not given" in doc["warnings"][0], doc["warnings"]


def test_each_failures_code_gets_its_hint_once(tmp_path: Path, photo_sets: list[Path]) -> None:
    """`run` printed each failure's code and message but no hint, where the web UI's failures page says what
    to do (a newcomer's third walkthrough). Each code's hint now follows its first file."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (folder / name).write_bytes(b"")
    (folder / "c.png").write_text("not an image")
    r = CliRunner().invoke(app, ["run", str(folder), "--engine", "pillow", "--store", str(tmp_path / "s.icechunk")],
                           env={"COLUMNS": "200"})
    lines = [ln.strip() for ln in r.stderr.splitlines() if ln.startswith("  ")]
    empty = "hint: " + failure_hint("E_EMPTY")
    assert lines.count(empty) == 1 and lines[lines.index(empty) - 1].startswith("failed [E_EMPTY]"), lines
    assert "hint: " + failure_hint("E_NOT_IMAGE") in lines and failure_hint("E_NOT_IMAGE")

"""Walkthrough finding 3: two files with the same content in one job, into a brand-new store, were
counted as "1 already stored" (nothing was stored before). The summary now says it is a duplicate of
another file in this job and names both; ``--json`` lists it under ``duplicates``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from preprocess.cli import app


def test_a_second_copy_in_one_job_is_a_duplicate_not_already_stored(tmp_path: Path, photo_sets: list[Path],
                                                                     tiny_specs: list[Path]) -> None:
    folder = tmp_path / "in"
    shutil.copytree(photo_sets[2], folder)
    first = sorted(folder.iterdir())[0]
    shutil.copy(first, folder / f"zz-copy-of-{first.name}")
    args = ["run", str(folder), "--spec", str(tiny_specs[0]), "--engine", "pillow"]
    r = CliRunner().invoke(app, [*args, "--store", str(tmp_path / "a.icechunk")], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    assert "3 found, 2 stored, 0 already stored, 1 duplicate of another file in this job" in r.stdout, r.stdout
    assert f"zz-copy-of-{first.name}: the same content as {first}" in r.stdout, r.stdout
    doc = json.loads(CliRunner().invoke(app, [*args, "--store", str(tmp_path / "b.icechunk"), "--json"]).stdout)
    assert doc["skipped"] == 1 and doc["duplicates"] == [{"path": str(folder / f"zz-copy-of-{first.name}"),
                                                          "same_as": str(first), "same_as_outcome": "stored"}], doc
    again = CliRunner().invoke(app, [*args, "--store", str(tmp_path / "a.icechunk")], env={"COLUMNS": "250"})
    assert "3 found, 0 stored, 3 already stored, 0 failed" in again.stdout, again.stdout  # stored before: not dups
    copy = f"zz-copy-of-{first.name}"  # its name is in the commit's provenance: `show --item` finds its row
    shown = CliRunner().invoke(app, ["show", str(tmp_path / "a.icechunk"), "--item", copy], env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    assert f"had the same content as {first}" in " ".join(shown.stderr.split()) and first.name in shown.stdout
    doc = json.loads(CliRunner().invoke(app, ["show", str(tmp_path / "a.icechunk"), "--item", copy, "--json"]).stdout)
    assert doc["same_as"] == str(first) and doc["items"][0]["source"]["source_path"] == str(first)
    missing = CliRunner().invoke(app, ["show", str(tmp_path / "a.icechunk"), "--item", "no-such.jpg"])
    assert missing.exit_code == 2 and "ITEM_MISSING" in missing.output


def test_a_second_copy_of_a_file_that_failed_says_it_failed(tmp_path: Path, photo_sets: list[Path],
                                                             tiny_specs: list[Path]) -> None:
    """The duplicate line said "stored under that name" when the first copy had failed (nothing stored)."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a-cut.jpg").write_bytes(sorted(photo_sets[2].iterdir())[0].read_bytes()[:200])  # truncated
    shutil.copy(folder / "a-cut.jpg", folder / "b-copy.jpg")
    r = CliRunner().invoke(app, ["run", str(folder), "--spec", str(tiny_specs[0]), "--engine", "pillow", "--store",
                                 str(tmp_path / "s.icechunk")], env={"COLUMNS": "250"})
    assert "1 duplicate of another file in this job, 1 failed" in r.stdout, r.stdout
    assert f"b-copy.jpg: the same content as {folder / 'a-cut.jpg'}, failed under that name" in r.stdout, r.stdout
    again = CliRunner().invoke(app, ["run", str(folder), "--spec", str(tiny_specs[0]), "--engine", "pillow",
                                     "--store", str(tmp_path / "s.icechunk")], env={"COLUMNS": "250"})
    assert "0 failed (1 already recorded)" in again.stdout, again.stdout  # its failure is known: no new row
    assert "b-copy.jpg: the same content as" in again.stdout and "failed under that name" in again.stdout

"""`preprocess ls STORE [REF] --where ...` (issue 23): a version's rows that match, with the commit that
added each, as a table or JSON; a bad expression is one line naming what is wrong."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from typer.testing import CliRunner

from preprocess.cli import app
from preprocess.store import open_dataset
from tests.store.conftest import Hist


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_ls_where_similarity_prints_the_matching_rows(hist: Hist) -> None:
    s = str(hist.store)
    t = open_dataset(s, ref="low-q").items_table(["similarity", "source_path"])
    cut = float(np.median(t["similarity"].astype(np.float64)))
    want = [i for i, v in enumerate(t["similarity"]) if v < np.float32(cut)]
    assert 0 < len(want) < len(t["similarity"])
    r = cli("ls", s, "low-q", "--where", f"similarity < {cut}")
    assert r.exit_code == 0, r.output
    shown = [int(line.split()[0]) for line in r.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert shown == want
    assert f"{len(want)} of {len(t['similarity'])} rows match" in r.stderr
    assert cli("ls", s, "low-q").stderr == ""  # every row: nothing to add on stderr (a walkthrough, session 7)
    doc = json.loads(cli("ls", s, "low-q", "--where", f"similarity < {cut}", "--json").stdout)
    assert doc["version"] == 1 and doc["command"] == "ls" and doc["matched"] == len(want)
    assert [row["row"] for row in doc["rows"]] == want and all(row["commit"] for row in doc["rows"])
    assert all(row["similarity"] < cut for row in doc["rows"])


def test_ls_filters_by_name_commit_and_several_conditions(hist: Hist) -> None:
    s = str(hist.store)
    every = json.loads(cli("ls", s, "low-q", "--json").stdout)["rows"]
    named = json.loads(cli("ls", s, "low-q", "-w", "name ~ apple", "--json").stdout)["rows"]
    assert named and all(r["source_path"].endswith("apple.jpg") for r in named)
    by_commit = json.loads(cli("ls", s, "low-q", "-w", f"commit = {str(hist.lowq.snapshot)[:6]}",
                               "--json").stdout)["rows"]
    assert [r["row"] for r in by_commit] == [r["row"] for r in every if r["commit"] == hist.lowq.snapshot]
    both = json.loads(cli("ls", s, "low-q", "-w", "name ~ apple", "-w", f"commit = {hist.lowq.snapshot}",
                          "--json").stdout)["rows"]
    assert [r["row"] for r in both] == [r["row"] for r in named if r["commit"] == hist.lowq.snapshot]
    either = json.loads(cli("ls", s, "low-q", "-w", "quality = 40 or quality = 80", "--sort", "quality", "--desc",
                            "--json").stdout)["rows"]
    assert [r["quality"] for r in either] == sorted((r["quality"] for r in every), reverse=True)


def test_a_bad_expression_is_one_line_naming_what_is_wrong(hist: Hist) -> None:
    s = str(hist.store)
    for where, words in (("simlarity < 0.9", "did you mean 'similarity'"), ("similarity ~ 3", "is a number"),
                         ("similarity <", "FIELD OP VALUE"), ("quality = 40 name ~ a", "'and' or 'or'")):
        r = cli("ls", s, "--where", where)
        assert r.exit_code == 2 and r.stderr.startswith("error[WHERE_INVALID]") and words in r.stderr, (where, r.stderr)
    assert cli("ls", s, "--sort", "nope").stderr.startswith("error[STORE_FIELD]")


def test_a_limit_below_one_is_an_error_not_an_empty_listing(hist: Hist) -> None:
    """``--limit 0`` printed an empty table, as if no row matched; the help says 1 or more."""
    for limit in ("0", "-1"):
        r = cli("ls", str(hist.store), "--limit", limit)
        assert r.exit_code == 2 and r.stderr.startswith("error[CLI_USAGE]") and "--limit" in r.stderr, r.output
    assert len(json.loads(cli("ls", str(hist.store), "--limit", "1", "--json").stdout)["rows"]) == 1


def test_sort_takes_the_fields_where_takes(hist: Hist) -> None:
    """``--where "name ~ ..."`` worked but ``--sort name`` was "no such field" (a newcomer's walkthrough)."""
    s = str(hist.store)
    rows = json.loads(cli("ls", s, "low-q", "--sort", "name", "--desc", "--json").stdout)["rows"]
    names = [str(r["source_path"]).rsplit("/", 1)[-1] for r in rows]
    assert len(names) > 1 and names == sorted(names, reverse=True)
    r = cli("ls", s, "--sort", "nam")
    assert r.exit_code == 2 and r.stderr.startswith("error[STORE_FIELD]") and "did you mean 'name'" in r.stderr


def test_on_80_columns_file_names_are_whole(hist: Hist) -> None:
    """On an 80-column terminal the file column was squeezed to ~7 characters ("BytheWa" / "ter.jpg")."""
    r = CliRunner().invoke(app, ["ls", str(hist.store), "low-q"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    rows = json.loads(cli("ls", str(hist.store), "low-q", "--json").stdout)["rows"]
    names = {str(row["source_path"]).rsplit("/", 1)[-1] for row in rows}
    assert names and all(f" {name} " in r.stdout for name in names), r.stdout


def test_a_commit_no_snapshot_of_the_history_has_is_ref_missing_not_zero_rows(hist: Hist) -> None:
    """Walkthrough finding 4: ``--where "commit = NOPE"`` printed "0 of 26 rows match" and exit 0."""
    s = str(hist.store)
    r = cli("ls", s, "-w", "commit = NOPE")
    assert r.exit_code == 2 and r.stderr.startswith("error[REF_MISSING]: commit = NOPE"), r.output
    known = (hist.v1.snapshot or "")[:6]
    typo = known[:5] + ("X" if known[5] != "X" else "Y")
    r = cli("ls", s, "-w", f"commit = {typo}")
    assert r.exit_code == 2 and f"did you mean '{known}'" in r.stderr, r.output
    assert cli("ls", s, "-w", "commit = AB").exit_code == 2  # fewer than 4 characters names nothing
    assert cli("ls", s, "-w", f"commit = {known}").exit_code == 0


def test_ordering_by_a_field_the_table_does_not_show_shows_it(hist: Hist) -> None:
    """`ls --sort capture_time` ordered by a column it did not show (a newcomer's walkthrough); an alias
    (`--sort time`) shows the field it names."""
    s = str(hist.store)
    r = cli("ls", s, "low-q", "--sort", "source_bytes")
    assert r.exit_code == 0, r.output
    assert "source_bytes" in r.stdout
    rows = json.loads(cli("ls", s, "low-q", "--sort", "source_bytes", "--json").stdout)["rows"]
    assert all(str(row["source_bytes"]) in r.stdout for row in rows)
    assert "source_bytes" not in cli("ls", s, "low-q", "--sort", "quality").stdout  # a shown field: no extra column
    assert "capture_time" in cli("ls", s, "low-q", "--sort", "time").stdout


def test_ls_json_carries_every_row_field(hist: Hist) -> None:
    """`ls --help` promised "--json: every field", but the rows held ten of them: not the gate's checks
    (``similarity_crops``, ``crop_box``, ``checks``), the encoder, the probes or the source's sha256."""
    from preprocess.store.where import ITEM_FIELDS

    s = str(hist.store)
    rows = json.loads(cli("ls", s, "--json").stdout)["rows"]
    assert rows and all(set(ITEM_FIELDS) <= set(row) for row in rows), sorted(rows[0])
    t = open_dataset(s).items_table(["similarity_crops", "source_sha256", "checks"])
    assert [r["source_sha256"] for r in rows] == [str(v) for v in t["source_sha256"]]
    assert [r["checks"] for r in rows] == [str(v) for v in t["checks"]]
    assert "every row field" in cli("ls", "--help").stdout


def test_the_column_of_the_order_leaves_no_file_name_split(hist: Hist) -> None:
    """On a 110-column terminal `ls --sort similarity_crops` added its column and kept the whole source paths,
    folded mid-word ("/tmp/walk3/photo" / "s/opencv/leuvenB" / ".jpg"): it shows file names, whole."""
    s = str(hist.store)
    paths = [str(r["source_path"]) for r in json.loads(cli("ls", s, "--json").stdout)["rows"]]
    for sort in ("similarity_crops", "probes", "encoder"):
        r = CliRunner().invoke(app, ["ls", s, "--sort", sort], env={"COLUMNS": "110"})
        assert r.exit_code == 0, r.output
        body = [line for line in r.stdout.split("\u2500")[-1].splitlines()[1:] if line.strip()]
        assert len(body) == len(paths) and all(line.split()[0].isdigit() for line in body), (sort, r.stdout)
        assert all(os.path.basename(p) in r.stdout for p in paths), (sort, r.stdout)


def test_a_row_with_no_value_matches_no_ordering_and_sorts_last() -> None:
    """A newcomer's walkthrough (session 7): `--where "capture_time < 2000-01-01"` listed the 14 rows with no
    capture time (an empty text sorts before any), and `--sort time` put them first, where its help says NaN
    last. Pure (the columns are given): `ls` and the web UI's search share this evaluation."""
    from preprocess.store.where import parse, sort_order

    times = np.asarray(["2024-05-01T10:00:00", "", "1999-12-31T23:00:00", ""], dtype=np.dtypes.StringDType())
    cameras = np.asarray(["Canon", "", "Nokia", "Apple"], dtype=np.dtypes.StringDType())
    column = {"capture_time": times, "camera_model": cameras}.__getitem__
    assert parse("capture_time < 2000-01-01").mask(column, 4).tolist() == [False, False, True, False]
    assert parse("time >= 2000").mask(column, 4).tolist() == [True, False, False, False]
    assert parse("camera < Z").mask(column, 4).tolist() == [True, False, True, True]
    assert parse('camera = ""').mask(column, 4).tolist() == [False, True, False, False]  # = still finds none
    assert parse('camera != ""').mask(column, 4).tolist() == [True, False, True, True]
    assert sort_order(times, numeric=False, descending=False).tolist() == [2, 0, 1, 3]
    assert sort_order(times, numeric=False, descending=True).tolist() == [0, 2, 3, 1]
    sims = np.asarray([0.99, np.nan, 0.98], dtype=np.float32)
    assert sort_order(sims, numeric=True, descending=False).tolist() == [2, 0, 1]
    assert sort_order(sims, numeric=True, descending=True).tolist() == [0, 2, 1]


def test_narrow_terminals_leave_columns_out_not_names_or_ids_split(hist: Hist) -> None:
    """A newcomer's walkthrough (session 7): at 60 columns `ls` dropped the file column and `log` split each
    snapshot id over two lines (at 40 it dropped the ids). `ls` leaves out its least needed columns first;
    `log` under 72 columns prints --oneline's lines."""
    s = str(hist.store)
    rows = json.loads(cli("ls", s, "low-q", "--json").stdout)["rows"]
    names = {str(row["source_path"]).rsplit("/", 1)[-1] for row in rows}
    ids = [c["id"] for c in json.loads(cli("log", s, "--json").stdout)["commits"]]
    for columns in ("40", "60"):
        r = CliRunner().invoke(app, ["ls", s, "low-q"], env={"COLUMNS": columns})
        assert r.exit_code == 0 and all(f" {name} " in r.stdout for name in names), r.stdout
        assert max(len(line.rstrip()) for line in r.stdout.splitlines()) <= int(columns), r.stdout
        assert "left out at " in r.stdout and "--json has every field" in " ".join(r.stdout.split()), r.stdout
        log = CliRunner().invoke(app, ["log", s], env={"COLUMNS": columns})
        assert log.exit_code == 0 and all(i[:12] in log.stdout for i in ids), log.stdout
    wide = CliRunner().invoke(app, ["ls", s, "low-q"], env={"COLUMNS": "80"})
    assert " commit " in wide.stdout and " similarity " in wide.stdout
    assert "left out" not in wide.stdout  # said only when a column is left out (a walkthrough, session 8)


def test_a_time_that_is_no_time_is_refused_not_compared_as_text(hist: Hist) -> None:
    """A walkthrough (session 7): `--where "time >= 2026-13-45"` listed 0 rows (a text comparison), and the web
    UI's captured_from=2026-13-45 answered 200 where captured_from=notadate was a 400."""
    from preprocess.store.where import is_time

    assert all(is_time(t) for t in ("2026", "2026-11", "2026-11-05", "2026-11-05T08:30", "2026-11-05 08:30:59"))
    assert not any(is_time(t) for t in ("2026-13-45", "2026-02-30", "26-11-05", "notadate", "2026-11-05T25:00"))
    r = cli("ls", str(hist.store), "--where", "time >= 2026-13-45")
    assert r.exit_code == 2 and r.stderr.startswith("error[WHERE_INVALID]") and "not a time" in r.stderr, r.output
    assert cli("ls", str(hist.store), "--where", "time >= 2026-11").exit_code == 0


def test_a_version_with_no_stored_image_says_so_not_an_empty_table(hist: Hist) -> None:
    """`ls` of a store of failures only printed an empty table headed "file" (a web UI audit, 2026-12-07)."""
    r = cli("ls", str(hist.store), hist.root)
    assert r.exit_code == 0 and r.stdout == "" and "holds no stored image" in r.stderr, r.output
    assert json.loads(cli("ls", str(hist.store), hist.root, "--json").stdout)["total"] == 0


def test_the_crops_view_is_listed_beside_the_whole_view(tmp_path: Path, small_photos: list[Path]) -> None:
    """`ls` showed the whole view's similarity alone where the crops view bound 27 of 30 rows (`fruits.jpg`
    "q87 0.9980" read as overkill; its crops were 0.9831; a newcomer's walkthrough, 2026-12-07)."""
    from tests.jobs import run_pillow

    spec = tmp_path / "views.toml"
    spec.write_text('[resize]\nsize = 256\n[gate.views]\nwhole = 0.99\ncrops = 0.97\n')
    run_pillow(small_photos[:2], tmp_path / "s.icechunk", spec)
    rows = json.loads(cli("ls", str(tmp_path / "s.icechunk"), "--json").stdout)["rows"]
    r = cli("ls", str(tmp_path / "s.icechunk"))
    assert r.exit_code == 0 and " whole " in r.stdout and " crops " in r.stdout, r.stdout
    for row in rows:
        assert f"{row['similarity_crops']:.4f}" in r.stdout and f"{row['similarity']:.4f}" in r.stdout
    narrow = CliRunner().invoke(app, ["ls", str(tmp_path / "s.icechunk")], env={"COLUMNS": "60"})
    assert " crops " in narrow.stdout and max(len(line.rstrip()) for line in narrow.stdout.splitlines()) <= 60

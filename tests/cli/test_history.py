"""`preprocess log|show|diff|branch|tag|export|gc` as a user meets them (issue 14): every ``--json`` is the
same bytes twice, tables fit 80 columns without cutting ids or names, the list / create / --delete
forms of branch and tag, ``log STORE REF``, and a folder that is not a dataset is a usage error for
every command that takes a store."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from preprocess.cli import app
from preprocess.cli.app import out
from tests.store.conftest import Hist


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_every_json_output_is_the_same_bytes_twice(hist: Hist, tmp_path: Path) -> None:
    s = str(hist.store)
    sha = hist.sets[0] / "apple.jpg"
    for args in (("log", s), ("log", s, "low-q"), ("show", s), ("show", s, "main~1"), ("show", s, "v1"),
                 ("show", s, "--item", "apple.jpg"), ("show", s, "low-q", "--item", str(sha)),
                 ("show", s, "main", "--item", "truncated.jpg"), ("diff", s, "main", "low-q"),
                 ("diff", s, "v1", "again"), ("branch", s), ("tag", s), ("models", "list")):
        first, second = cli(*args, "--json"), cli(*args, "--json")
        assert first.exit_code == 0, (args, first.output)
        assert first.stdout == second.stdout, args
        doc = json.loads(first.stdout)
        assert doc["version"] == 1 and doc["command"].split()[0] == args[0] and "error" not in doc, args
    # what writes: the same command on two identical copies prints the same bytes
    copies = [tmp_path / "a" / "c.icechunk", tmp_path / "b" / "c.icechunk"]
    for c in copies:
        shutil.copytree(hist.store, c)
    for args in (("tag", "{s}", "t1", "main~1"), ("branch", "{s}", "exp", "v1"), ("reset", "{s}", "again", "v1"),
                 ("branch", "{s}", "--delete", "exp"), ("tag", "{s}", "--delete", "t1"),
                 ("export", "{s}", "{d}/out", "--ref", "low-q")):
        outs = [cli(*(a.format(s=c, d=c.parent) for a in args), "--json") for c in copies]
        assert outs[0].exit_code == 0, (args, outs[0].output)
        assert outs[0].stdout.replace(str(copies[0].parent), "X") == outs[1].stdout.replace(str(copies[1].parent), "X")
    gcs = [json.loads(cli("gc", str(c), "--older-than", "0s", "--dry-run", "--json").stdout) for c in copies]
    assert gcs[0].pop("cutoff") != "" and gcs[1].pop("cutoff") != ""  # the one field that is "now"
    assert gcs[0] == gcs[1] and gcs[0]["snapshots"] == [hist.again.snapshot]


def test_tables_fit_80_columns_without_cutting_ids_or_names(hist: Hist, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(out, "_width", 80)
    s = str(hist.store)
    for args in (("log", s), ("log", s, "low-q"), ("show", s), ("show", s, "--item", "apple.jpg"),
                 ("diff", s, "main", "low-q"), ("diff", s, "v1", "again"), ("branch", s), ("tag", s),
                 ("models", "list")):
        r = cli(*args)
        assert r.exit_code == 0, (args, r.output)
        lines = r.stdout.splitlines()
        assert lines and max(len(line) for line in lines) <= 80, (args, r.stdout)
        assert "…" not in r.stdout, (args, r.stdout)  # folded, never cut
    log = cli("log", s).stdout
    assert (hist.main2.snapshot or "")[:12] in log and "second" in log and "tiny-q80" in log
    assert "mobilenetv2-imagenet" in cli("models", "list").stdout


def test_diff_on_80_columns_shows_whole_file_names_as_ls_does(hist: Hist, monkeypatch: pytest.MonkeyPatch) -> None:
    """Walkthrough finding 2: diff printed the whole source path in a narrow folded column, so at 80
    columns names broke mid-word ("/tmp/nc1/photos/open" / "cv/aero3.jpg"). Now, as ls: file names."""
    monkeypatch.setattr(out, "_width", 80)
    s = str(hist.store)
    for args in (("diff", s, "v1", "main"), ("diff", s, "main", "low-q")):
        r = cli(*args)
        assert r.exit_code == 0, (args, r.output)
        shown = json.loads(cli(*args, "--json").stdout)
        paths = [p["source_path"] for p in shown["pairs"]] + [r["source_path"] for r in shown["added"]]
        assert paths, args
        for path in paths:
            assert f" {str(path).rsplit('/', 1)[-1]} " in r.stdout, (args, path, r.stdout)
        assert str(hist.sets[0].parent) not in r.stdout, (args, r.stdout)  # no path, folded or not


def test_branch_and_tag_list_create_and_delete(hist: Hist, tmp_path: Path) -> None:
    copy = tmp_path / "c.icechunk"
    shutil.copytree(hist.store, copy)
    s = str(copy)
    listed = json.loads(cli("branch", s, "--json").stdout)["branches"]
    assert [(b["name"], b["snapshot"]) for b in listed] == [
        ("again", hist.again.snapshot), ("low-q", hist.lowq.snapshot), ("main", hist.main2.snapshot)]
    assert listed[2]["message"] == "second" and listed[2]["kind"] == "branch" and listed[2]["written_at"]
    table = cli("branch", s).stdout
    assert all(name in table for name in ("again", "low-q", "main", "second"))
    assert cli("tag", s, "v0", "main~1").exit_code == 0
    assert [t["name"] for t in json.loads(cli("tag", s, "--json").stdout)["tags"]] == ["v0", "v1"]
    r = cli("branch", s, "--delete", "low-q")
    assert r.exit_code == 0 and hist.lowq.snapshot in r.stdout
    assert cli("tag", s, "-d", "v0").exit_code == 0
    assert [b["name"] for b in json.loads(cli("branch", s, "--json").stdout)["branches"]] == ["again", "main"]
    for args, code, exit_code in ((("branch", s, "--delete", "main"), "BRANCH_MAIN", 2),
                                  (("branch", s, "--delete", "mian"), "BRANCH_MISSING", 2),
                                  (("tag", s, "--delete", "v0"), "TAG_MISSING", 2),
                                  (("branch", s, "x", "--delete", "again"), "CLI_USAGE", 2),
                                  (("log", s, "main", "--branch", "again"), "CLI_USAGE", 2)):
        r = cli(*args)
        assert r.exit_code == exit_code and r.stderr.startswith(f"error[{code}]"), (args, r.output)


def test_log_takes_a_ref_as_argument_or_option(hist: Hist) -> None:
    s = str(hist.store)
    by_arg, by_opt = cli("log", s, "low-q", "--json"), cli("log", s, "--branch", "low-q", "--json")
    assert by_arg.exit_code == 0 and by_arg.stdout == by_opt.stdout
    assert [c["id"] for c in json.loads(by_arg.stdout)["commits"]] == [hist.lowq.snapshot, hist.v1.snapshot]
    assert [c["id"] for c in json.loads(cli("log", s, "main~1", "--json").stdout)["commits"]] == [hist.v1.snapshot]
    r = cli("export", s, "/nonexistent-parent/x", "--ref", "mian~1")
    assert r.exit_code == 2 and "did you mean 'main'?" in r.stderr


STORE_COMMANDS = [("log", "{s}"), ("show", "{s}"), ("diff", "{s}", "main", "main"), ("tag", "{s}"),
                  ("branch", "{s}"), ("reset", "{s}", "main", "main"), ("export", "{s}", "{out}"),
                  ("gc", "{s}", "--dry-run"), ("run", "{photos}", "--store", "{s}")]


@pytest.mark.parametrize("what", ["a folder of photos", "a file"])
def test_a_store_that_is_not_a_dataset_is_a_usage_error_for_every_command(
        hist: Hist, tmp_path: Path, what: str) -> None:
    photos = hist.sets[0]
    if what == "a file":
        store = tmp_path / "notes.txt"
        store.write_text("not a dataset")
    else:
        store = tmp_path / "photos"
        shutil.copytree(photos, store)
    before = sorted(os.listdir(store)) if store.is_dir() else store.read_text()
    for command in STORE_COMMANDS:
        r = cli(*(a.format(s=store, out=tmp_path / "out", photos=photos) for a in command))
        assert r.exit_code == 2, (command, r.output)
        assert r.stderr.startswith("error[STORE_FOREIGN]") and "not a dataset" in r.stderr, (command, r.stderr)
        writes = command[0] == "run"
        assert ("choose a new or empty directory" in r.stderr) == writes, (command, r.stderr)
    daemons = (["serve", str(store), "--port", "0"], ["watch", str(photos), "--store", str(store), "--metrics", "off"])
    for args in daemons:
        proc = subprocess.run([sys.executable, "-m", "preprocess", *args], capture_output=True, text=True,
                              timeout=120, check=False)
        assert proc.returncode == 2 and "\nerror[STORE_FOREIGN]" in f"\n{proc.stderr}", (args, proc.stderr)
    assert (sorted(os.listdir(store)) if store.is_dir() else store.read_text()) == before


def test_a_negative_or_zero_limit_is_an_error_not_fewer_commits(hist: Hist) -> None:
    """issue 23, bug 2: ``--limit -1`` silently dropped the oldest commit; ``--limit 0`` listed none and said
    "no commits yet" of a dataset with commits (a newcomer's walkthrough, 2026-12-06)."""
    for limit in ("-1", "-2", "0"):
        r = cli("log", str(hist.store), "--limit", limit)
        assert r.exit_code == 2 and r.stderr.startswith("error[CLI_USAGE]") and "--limit" in r.stderr
    assert len(json.loads(cli("log", str(hist.store), "--limit", "1", "--json").stdout)["commits"]) == 1


def test_the_log_of_the_first_snapshot_says_what_it_is(hist: Hist) -> None:
    """issue 23, bug 3: ``log S main~2`` at the repository's first snapshot printed an empty table and
    "no commits yet" (the dataset has commits), the message broken mid-command."""
    r = cli("log", str(hist.store), "main~2")
    assert r.exit_code == 0 and "snapshot" not in r.stdout  # no empty table
    assert "first snapshot" in r.stderr and "no commits yet" not in r.stderr
    assert r.stderr.strip().count("\n") == 0  # one line, however narrow the terminal
    assert json.loads(cli("log", str(hist.store), "main~2", "--json").stdout)["commits"] == []


def test_a_store_path_a_message_and_a_where_are_printed_as_one_printable_line(tmp_path: Path) -> None:
    """A store path with an OSC escape (a terminal's title), a commit message with an ESC[2J (clears the
    screen) and a newline (a forged line in `log`), a --where holding an ESC: titles and cells printed them
    raw, where error lines already quoted them."""
    import numpy as np

    from preprocess.store import DatasetWriter, open_repo
    from tests.store.test_store import make_item

    store = str(tmp_path / "st\x1b]0;pwn")
    w = DatasetWriter(open_repo(store, create=True), "main")
    odd = "/photos/del\x7f rtl\u202egpj.exe.jpg"  # DEL, and a right-to-left override ("exe.jpg" shown as "gpj.exe")
    w.add_item(dataclasses.replace(make_item(np.random.default_rng(3), 0), source_path=odd))
    w.commit("msg\x1b[2J\nforged line", {})
    w.close()
    for args in (["log", store], ["log", store, "--oneline"], ["show", store], ["branch", store], ["tag", store],
                 ["ls", store, "-w", "name ~ \x1b[2J"]):
        result = CliRunner().invoke(app, args)
        shown = result.stdout + result.stderr
        assert "\x1b" not in shown and "forged line\n" not in shown, (args, shown)
    assert '"msg\\033[2J\\nforged line"' in CliRunner().invoke(app, ["log", store, "--oneline"]).stdout
    listed = CliRunner().invoke(app, ["ls", store, "--json"]).stdout  # JSON: the same strings, escaped
    assert "\x7f" not in listed and "\u202e" not in listed and "\\u202e" in listed
    assert json.loads(listed)["rows"][0]["source_path"] == odd


def test_a_spec_name_and_an_export_folder_are_printed_as_one_printable_line(tmp_path: Path,
                                                                           small_photos: list[Path]) -> None:
    """A spec's [pipeline] name holding an ESC[2J, a newline (a forged row in `log`) and a bidi override, and
    an export folder with an ESC: `log`, `show`, `show --item`, `diff` and `export` printed them raw (a
    hostile-input audit, session 8)."""
    from tests.store.conftest import TINY

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(small_photos[0], folder / small_photos[0].name)
    spec = tmp_path / "odd.toml"
    spec.write_text(TINY.format(name="ev\\u001b[2Jil\\nLINE2 \\u202egnp", quality=80))
    store = str(tmp_path / "st")
    ran = CliRunner().invoke(app, ["run", str(folder), "--store", store, "--spec", str(spec), "--engine", "pillow"])
    assert ran.exit_code == 0, ran.output
    out_dir = str(tmp_path / "e\x1b[2Jz")
    for args in (["log", store], ["show", store], ["show", store, "--item", small_photos[0].name],
                 ["diff", store, "main~1", "main"], ["export", store, out_dir]):
        result = CliRunner().invoke(app, args)
        shown = result.stdout + result.stderr
        assert result.exit_code == 0, (args, shown)
        assert "\x1b" not in shown and "\u202e" not in shown and "\nLINE2" not in shown, (args, shown)


def test_show_says_when_a_source_has_no_exif_camera_or_time(hist: Hist) -> None:
    """`show --item` printed "camera │ - at -" for a source without EXIF."""
    s = str(hist.store)
    rows = json.loads(cli("ls", s, "low-q", "--json").stdout)["rows"]
    out = cli("show", s, "low-q", "--item", str(rows[0]["source_path"])).stdout
    assert "- at -" not in out
    assert ("no EXIF camera or time" in out) == (not rows[0].get("camera_model") and not rows[0].get("capture_time"))


def test_show_item_prints_every_check_the_web_ui_shows(tmp_path: Path) -> None:
    """`show --item` printed one similarity (the whole view's) where the web UI's item page lists every check
    the gate made, the crops' too (the default spec's binding check, 0.9831 >= 0.975 against a whole view's
    0.9980), and the worst crop: the terminal now lists the same checks, with the same numbers."""
    import numpy as np
    from starlette.testclient import TestClient

    from preprocess.serve import Catalog, create_app
    from preprocess.store import DatasetWriter, open_repo
    from tests.store.test_store import make_item

    store = str(tmp_path / "cams.icechunk")
    w = DatasetWriter(open_repo(store, create=True), "main")
    item = dataclasses.replace(make_item(np.random.default_rng(5), 0), similarity=0.99801, similarity_whole=0.99801,
                               similarity_crops=0.98306, crop_box="0,240,256,480",
                               checks='{"mobilenetv2-imagenet": {"whole": 0.99801, "crops": 0.98306}}')
    w.add_item(item)
    snapshot = w.commit("one", {"spec": {"gate": {"views": {"whole": 0.99, "crops": 0.975}}}})
    w.close()
    out = cli("show", store, "--item", item.source_path).stdout
    assert "whole 0.9980 >= 0.99, crops 0.9831 >= 0.975 (worst crop 256x240 at x 0, y 240)" in " ".join(
        line.strip("│ ") for line in out.splitlines()), out
    with TestClient(create_app(Catalog(store))) as client:
        page = client.get(f"/snapshots/{snapshot}/items/0").text
    for view, sim in (("whole", "0.9980"), ("crops", "0.9831")):
        assert f"<td>{view}</td><td>mobilenetv2-imagenet</td><td><b>{sim}</b>" in page
    assert "the worst crop (256×240 at x 0, y 240)" in page


def test_one_item_and_one_failure_are_counted_in_the_singular(tmp_path: Path) -> None:
    """A watch daemon's first commit (2 stored, 1 failed, then 1 stored) read "version holds 3 items, 1
    failures" in `show` and on the web UI's commit page, and a diff "1 items"."""
    import numpy as np
    from starlette.testclient import TestClient

    from preprocess.serve import Catalog, create_app
    from preprocess.store import DatasetWriter, open_repo
    from tests.store.test_store import make_failure, make_item

    store = str(tmp_path / "cams.icechunk")
    w = DatasetWriter(open_repo(store, create=True), "main")
    w.add_item(make_item(np.random.default_rng(7), 0))
    w.add_failure(make_failure(np.random.default_rng(7), 0))
    snapshot = w.commit("one of each", {})
    w.close()
    flat = " ".join(line.strip("│ ") for line in cli("show", store).stdout.splitlines())
    assert "1 item, 1 failure" in flat and "1 failures" not in flat, flat
    diffed = cli("diff", store, "main~1", "main").stdout
    assert "1 item," in diffed and "1 items" not in diffed, diffed
    with TestClient(create_app(Catalog(store))) as client:
        pages = [client.get(f"/commits/{snapshot}").text, client.get("/items?ref=main").text,
                 client.get("/diff?a=main~1&b=main").text, client.get("/charts?ref=main").text]
    assert "1 item, 1 failure" in pages[0]
    assert not any(re.search(r"\b1 (items|failures)\b", page) for page in pages)


def test_show_gives_a_jobs_times_as_it_gives_when_it_was_written(hist: Hist) -> None:
    """`show STORE`'s time row printed raw ISO times with microseconds beside `written` in
    ``YYYY-MM-DD HH:MM:SS UTC``."""
    out = cli("show", str(hist.store)).stdout
    (line,) = [ln for ln in out.splitlines() if re.search(r"\btime\b", ln) and ".." in ln]
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \.\. \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", line), line


def test_reset_to_where_a_branch_is_moves_nothing_and_says_so(hist: Hist, tmp_path: Path) -> None:
    """A walkthrough (session 7): `reset main v1` with main already at v1 said the old tip "stays readable by its id
    (until gc ...)"; and `branch --delete` said gc deletes what a tag still holds."""
    store = tmp_path / "c.icechunk"
    shutil.copytree(hist.store, store)
    r = cli("reset", str(store), "main", "main")
    assert r.exit_code == 0 and "already at" in r.stdout and "nothing moved" in r.stdout, r.output
    cli("branch", str(store), "exp", "v1")
    gone = cli("branch", str(store), "--delete", "exp")
    assert gone.exit_code == 0 and "unless another branch or tag reaches it" in gone.stdout, gone.output


def test_show_item_says_when_the_named_file_has_changed_since_it_was_stored(tmp_path: Path,
                                                                            small_photos: list[Path]) -> None:
    """`show --item in/a.jpg` of a file since overwritten printed the row stored from it and, apart, the row
    whose content it now has, without a word that the file changed (the web item page says it; a web UI
    audit, 2026-12-07). A note says so, and which row holds its content now, if any."""
    from tests.jobs import tiny_store

    store = tiny_store(tmp_path, small_photos[:2])
    a, b = sorted((tmp_path / "src").iterdir())
    a.write_bytes(b.read_bytes())
    r = cli("show", str(store), "--item", str(a))
    assert r.exit_code == 0, r.output
    note = " ".join(r.stderr.split())
    assert "has changed since item" in note and "is item" in note, r.stderr
    doc = json.loads(cli("show", str(store), "--item", str(a), "--json").stdout)
    assert len(doc["changed_since_stored"]) == 1 and doc["file_sha256"]
    a.write_bytes(small_photos[2].read_bytes())
    again = " ".join(cli("show", str(store), "--item", str(a)).stderr.split())
    assert "in no row of main: run the job again" in again
    assert "has changed" not in cli("show", str(store), "--item", str(b)).stderr

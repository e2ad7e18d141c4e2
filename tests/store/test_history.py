"""Version history and provenance on a real store made by real jobs on real photos.

The module's store: ``main`` = set0 @q80 (tagged v1), then set1 @q80 + a truncated file;
``low-q`` = branched from v1, then set0 + set1 @q40 (so main and low-q diverged after v1);
``again`` = branched from the empty first snapshot, then set0 @q80 again (same keys as v1, another job).
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import icechunk as ic
import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr
from typer.testing import CliRunner

import preprocess
from preprocess.cli import app
from preprocess.core.errors import ConfigError
from preprocess.sources.files import list_digest, list_sources
from preprocess.store import DatasetWriter, dataset_at, diff, history, lineage, open_dataset, open_repo, refs
from preprocess.store import export as export_mod
from tests.plain import column, group, open_root
from tests.store.conftest import Hist
from tests.store.test_store import make_item


def plain_rows(store: Path, snapshot: str) -> list[tuple[str, str, str]]:
    """(source_sha256, fingerprint, job_id) per row, read with plain zarr + icechunk only."""
    items = group(open_root(store, snapshot=snapshot), "items")
    return list(zip(column(items, "source_sha256").tolist(), column(items, "fingerprint").tolist(),
                    column(items, "job_id").tolist(), strict=True))


def keys(rows: list[tuple[str, str, str]]) -> set[str]:
    return {f"{s}:{f}" for s, f, _ in rows}


# -- log / show ------------------------------------------------------------------------------------


def test_log_lists_each_branchs_commits_with_their_provenance(hist: Hist) -> None:
    main = history.log(hist.repo, "main")
    assert [c.id for c in main] == [hist.main2.snapshot, hist.v1.snapshot]
    assert [c.message for c in main] == ["second", "first"]
    assert [(c.added, c.failed) for c in main] == [(2, 1), (2, 0)]
    assert {c.spec for c in main} == {"tiny-q80"} and {c.model for c in main} == {"mobilenetv2-imagenet"}
    assert main[0].refs == ["main"] and main[1].refs == ["tag:v1"]
    assert main[0].written_at > main[1].written_at
    low = history.log(hist.repo, "low-q")
    assert [c.id for c in low] == [hist.lowq.snapshot, hist.v1.snapshot]
    assert low[0].branch == "low-q" and low[0].fingerprint == hist.lowq.fingerprint
    assert history.log(hist.repo, "main", limit=1)[0].id == hist.main2.snapshot


def test_every_commit_records_inputs_parent_spec_model_and_software(hist: Hist, photo_sets: list[Path]) -> None:
    shown = history.show(hist.repo, "low-q")
    md = shown.commit.provenance
    assert md is not None
    assert shown.ref.snapshot == hist.lowq.snapshot and shown.commit.kind == "run"
    assert md.job_id == hist.lowq.job_id
    assert md.inputs.branch == "low-q"
    assert md.inputs.parent_snapshot == hist.v1.snapshot  # a run on a branch names its parent
    assert md.inputs.roots == [str(p.resolve()) for p in photo_sets[:2]]
    listed = [(str(p), hashlib.sha256(p.read_bytes()).hexdigest()) for p in list_sources(photo_sets[:2])]
    assert md.inputs.list_sha256 == list_digest(listed)
    assert md.spec_info.quality.value == 40 and md.fingerprint == hist.lowq.fingerprint
    assert len(md.model.weights_sha256) == 64 and len(md.model.onnx_sha256) == 64
    assert md.software["icechunk"] and md.software["zarr"] and md.software["preprocess"]
    assert shown.version.to_dict() == {"items": 6, "failures": 0, "models": {"mobilenetv2-imagenet": 1280}}
    as_json = shown.to_dict()  # what --json prints: the stored metadata as it is
    assert as_json["metadata"] == shown.commit.metadata == md.to_metadata()
    assert as_json["snapshot"] == hist.lowq.snapshot and as_json["kind"] == "run" and as_json["ref"] == "low-q"
    root = history.show(hist.repo, hist.root)
    assert root.commit.kind == "init" and root.commit.provenance is None and root.version.items == 0


def test_refs_resolve_by_branch_tag_id_and_unique_prefix(hist: Hist, monkeypatch: pytest.MonkeyPatch) -> None:
    snap = hist.v1.snapshot
    assert snap is not None
    assert refs.resolve_ref(hist.repo, "v1") == refs.Ref("v1", "tag", snap)
    assert refs.resolve_ref(hist.repo, snap).kind == "snapshot"
    assert refs.resolve_ref(hist.repo, snap[:6].lower()).snapshot == snap
    assert open_dataset(str(hist.store), ref=snap[:8]).snapshot_id == snap
    for bad, code in (("nope", "REF_MISSING"), ("", "REF_MISSING"), ("ZZZZZZZZZZZZZZZZZZZZ", "REF_MISSING"),
                      (snap[:3], "REF_MISSING")):
        with pytest.raises(ConfigError) as e:
            refs.resolve_ref(hist.repo, bad)
        assert e.value.code == code and "branches: again, low-q, main" in e.value.hint
    twins = {snap, snap[:5] + "0" * 15}
    # a second snapshot whose id starts alike cannot be made on demand: the ids the lookup reads are given
    monkeypatch.setattr(refs, "snapshot_ids", lambda repo: (frozenset(twins), frozenset(twins)))
    monkeypatch.setattr(refs, "_exists", lambda repo, snapshot: snapshot in twins)
    with pytest.raises(ConfigError) as e:
        refs.resolve_ref(hist.repo, snap[:5])
    assert e.value.code == "REF_AMBIGUOUS"


# -- item lineage -------------------------------------------------------------------------------


def test_show_item_reaches_from_a_stored_image_to_its_source_commit_and_spec(hist: Hist) -> None:
    src = hist.sets[0] / "apple.jpg"
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    for query in ("apple.jpg", str(src), sha[:12], sha.upper()[:10]):
        found: Any = lineage.lineage(hist.repo, query, "low-q").to_dict()  # as --json prints it
        assert {r["source"]["source_sha256"] for r in found["items"]} == {sha}, query
        by_fp = {r["fingerprint"]: r for r in found["items"]}
        assert set(by_fp) == {hist.v1.fingerprint, hist.lowq.fingerprint}
        old, new = by_fp[hist.v1.fingerprint], by_fp[hist.lowq.fingerprint]
        assert old["commit"]["id"] == hist.v1.snapshot and old["job_id"] == hist.v1.job_id
        assert new["commit"]["id"] == hist.lowq.snapshot and new["spec"]["quality"]["value"] == 40
        assert new["stored"]["quality"] == 40 and new["stored"]["width"] == 256
        assert new["model"] == "mobilenetv2-imagenet" and new["model_info"]["dim"] == 1280
        assert 0 < new["stored"]["similarity"] <= 1 and new["source"]["source_path"] == str(src)
    typed = lineage.lineage(hist.repo, "apple.jpg", "low-q")
    made = {item.made_by.provenance.fingerprint: item for item in typed.items if item.made_by.provenance}
    assert made[hist.lowq.fingerprint].made_by.provenance.spec_info.quality.value == 40  # type: ignore[union-attr]
    assert made[hist.lowq.fingerprint].stored["quality"] == 40
    # a file on disk is found by content, wherever it is now
    moved = hist.store.parent / "renamed.bin"
    shutil.copy(src, moved)
    assert len(lineage.lineage(hist.repo, str(moved), "main").items) == 1
    failed = lineage.lineage(hist.repo, "truncated.jpg", "main")
    assert failed.items == [] and failed.failures[0].row["code"] == "E_TRUNCATED"
    commit = failed.failures[0].made_by.commit
    assert commit is not None and commit.id == hist.main2.snapshot
    as_dict: Any = failed.to_dict()
    assert as_dict["failures"][0]["commit"]["id"] == hist.main2.snapshot
    with pytest.raises(ConfigError) as e:
        lineage.lineage(hist.repo, "no-such.jpg", "main")
    assert e.value.code == "ITEM_MISSING"


# -- diff -----------------------------------------------------------------------------------------


def test_diff_of_two_diverged_branches_is_item_level(hist: Hist) -> None:
    d = diff.diff(hist.repo, "main", "low-q")
    main_rows = plain_rows(hist.store, hist.main2.snapshot or "")
    low_rows = plain_rows(hist.store, hist.lowq.snapshot or "")
    assert {r.key for r in d.added} == keys(low_rows) - keys(main_rows)
    assert {r.key for r in d.removed} == keys(main_rows) - keys(low_rows)
    assert len(d.added) == 4 and len(d.removed) == 2
    assert d.changed == [] and d.unchanged == 2
    assert d.base == hist.v1.snapshot
    assert d.bytes_delta == d.bytes_b - d.bytes_a == d.bytes_added - d.bytes_removed
    assert d.bytes_b == int(open_dataset(str(hist.store), ref="low-q").items_table(["bytes"])["bytes"].sum())
    assert [s.fingerprint for s in d.specs_added] == [hist.lowq.fingerprint]
    assert d.specs_added[0].info.pipeline.name == "tiny-q40" and d.specs_added[0].info.quality.value == 40
    assert d.specs_removed == [] and d.models_added == []
    assert len(d.failures_removed) == 1 and d.failures_added == []
    as_json: Any = d.to_dict()
    # the text diff said "failures +0, -1" and no more (a newcomer's walkthrough): which source, which code
    gone = as_json["failures_removed_sources"]
    assert [(f["code"], Path(f["source_path"]).name) for f in gone] == [("E_TRUNCATED", "truncated.jpg")]
    from preprocess.cli.diffview import summary_rows

    assert ("", f"- [E_TRUNCATED] {gone[0]['source_path']}") in summary_rows(d, "main", "low-q")
    assert as_json["specs_added"][0]["spec"] == "tiny-q40" and as_json["specs_added"][0]["quality"]["value"] == 40
    assert as_json["bytes_delta"] == d.bytes_delta and len(as_json["added"]) == 4
    back = diff.diff(hist.repo, "low-q", "main")
    assert {r.key for r in back.added} == {r.key for r in d.removed}
    assert back.bytes_delta == -d.bytes_delta


def test_diff_names_the_fields_that_changed(hist: Hist) -> None:
    d = diff.diff(hist.repo, "v1", "again")  # the same sources and spec, made twice by two jobs
    assert d.added == [] and d.removed == [] and d.base == hist.root
    assert len(d.changed) == 2
    for row in d.changed:
        assert "job_id" in row.fields
        assert row.fields["job_id"] == [hist.v1.job_id, hist.again.job_id]
        assert "jpeg" not in row.fields  # the same bytes: the encode is deterministic
    same = diff.diff(hist.repo, "main", "main")
    assert same.changed == [] and same.added == [] and same.bytes_delta == 0


# -- tag / branch / reset / gc ------------------------------------------------------------------


def test_reset_rolls_back_and_the_old_commits_stay_reachable(hist: Hist, scratch: ic.Repository) -> None:
    done = refs.reset_branch(scratch, "main", "v1")
    assert (done.old, done.new) == (hist.main2.snapshot, hist.v1.snapshot)
    assert len(dataset_at(scratch, "main")) == 2
    assert len(dataset_at(scratch, hist.main2.snapshot or "")) == 4  # by id, until gc
    assert [c.id for c in history.log(scratch, "main")] == [hist.v1.snapshot]
    kept = refs.reset_branch(scratch, "low-q", hist.root, keep_tag="low-q-before")
    assert refs.resolve_ref(scratch, "low-q-before").snapshot == kept.old == hist.lowq.snapshot
    assert len(dataset_at(scratch, "low-q")) == 0
    with pytest.raises(ConfigError) as e:
        refs.reset_branch(scratch, "nope", "v1")
    assert e.value.code == "BRANCH_MISSING"


def test_tag_and_branch_names_are_checked(scratch: ic.Repository) -> None:
    for name, code in (("v1", "REF_EXISTS"), ("main", "REF_EXISTS"), ("../x", "REF_NAME"), ("-x", "REF_NAME"),
                       ("a b", "REF_NAME"), ("ABCDEFGHJKMNPQRSTVWX", "REF_NAME"), ("nl\n", "REF_NAME")):
        with pytest.raises(ConfigError) as e:  # "nl\n": a regex's $ matches before a final newline (\Z does not)
            refs.create_tag(scratch, name, "main")
        assert e.value.code == code, name
    with pytest.raises(ConfigError) as e:
        refs.create_branch(scratch, "nl\n", "main")
    assert e.value.code == "REF_NAME"
    with pytest.raises(ConfigError) as e:  # cut in its error: a 5,000-character name was echoed whole
        refs.create_branch(scratch, "a" * 5000, "main")
    assert e.value.code == "REF_NAME" and len(e.value.message) < 200 and "5000 characters" in e.value.message
    refs.create_branch(scratch, "b" * 100, "main")  # the longest name allowed
    made = refs.create_branch(scratch, "exp/one", "v1")
    assert refs.resolve_ref(scratch, "exp/one").snapshot == made.snapshot
    with pytest.raises(ConfigError):
        refs.create_branch(scratch, "exp/one", "main")


def test_gc_deletes_only_what_no_branch_or_tag_reaches(hist: Hist, scratch: ic.Repository) -> None:
    refs.reset_branch(scratch, "main", "v1")  # main2 is now unreachable
    refs.reset_branch(scratch, "again", hist.root)  # and so is the `again` commit
    before = {b: [c.id for c in history.log(scratch, b)] for b in ("main", "low-q", "again")}
    rows = {r: dataset_at(scratch, r).items_table() for r in ("main", "low-q", "v1")}
    assert refs.gc(scratch, refs.parse_age("30d")).snapshots == []  # nothing that old
    dry = refs.gc(scratch, refs.parse_age("0s"), dry_run=True)
    assert set(dry.snapshots) == {hist.main2.snapshot, hist.again.snapshot}
    assert dataset_at(scratch, hist.main2.snapshot or "") is not None  # a dry run deletes nothing
    done = refs.gc(scratch, refs.parse_age("0s"))
    assert done.counts["snapshots_deleted"] == 2 and set(done.snapshots) == set(dry.snapshots)
    with pytest.raises(ConfigError):
        dataset_at(scratch, hist.main2.snapshot or "")
    assert {b: [c.id for c in history.log(scratch, b)] for b in ("main", "low-q", "again")} == before
    for r, table in rows.items():
        ds = dataset_at(scratch, r)
        after = ds.items_table()
        assert all(np.array_equal(table[k], after[k], equal_nan=True) for k in table), r
        assert all(len(ds.jpeg(i)) == int(after["bytes"][i]) for i in range(len(ds)))
    with pytest.raises(ConfigError) as e:
        refs.parse_age("soon")
    assert e.value.code == "GC_AGE"


# -- export ---------------------------------------------------------------------------------------


def test_export_writes_every_image_and_a_manifest_row_each(hist: Hist, tmp_path: Path) -> None:
    done = export_mod.export(hist.repo, tmp_path / "out", ref="low-q")
    ds = open_dataset(str(hist.store), ref="low-q")
    assert done.files == len(ds) == 6
    with open(tmp_path / "out" / "manifest.csv", newline="") as f:
        manifest = list(csv.DictReader(f))
    table = ds.items_table()
    assert [m["source_sha256"] for m in manifest] == table["source_sha256"].tolist()
    for i, m in enumerate(manifest):
        data = (tmp_path / "out" / m["file"]).read_bytes()
        assert data == ds.jpeg(i) and hashlib.sha256(data).hexdigest() == m["stored_sha256"]
        assert m["file"] == f"images/{m['source_sha256'][:16]}-{m['fingerprint']}.jpg"
        assert int(m["quality"]) == int(table["quality"][i]) and m["snapshot"] == hist.lowq.snapshot
        assert abs(float(m["similarity"]) - float(table["similarity"][i])) < 1e-6
        assert int(m["row"]) == i and m["commit"] == ds.added_by(i)  # the names the CLI and the web UI use
    assert list(manifest[0]) == export_mod.manifest_columns(stored_sha256=True)
    pq_done = export_mod.export(hist.repo, tmp_path / "pq", ref="v1", fmt="parquet")
    t = pq.read_table(pq_done.manifest).to_pydict()
    assert len(t["file"]) == 2 and len(t["embedding"][0]) == 1280
    assert np.allclose(np.array(t["embedding"]), ds.embedding("mobilenetv2-imagenet")[:2])
    with pytest.raises(ConfigError) as e:
        export_mod.export(hist.repo, tmp_path / "out", ref="low-q")
    assert e.value.code == "EXPORT_DIR"
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")  # refused, and said so (it said "is not a directory")
    with pytest.raises(ConfigError) as e:
        export_mod.export(hist.repo, tmp_path / "link", ref="low-q")
    assert e.value.code == "EXPORT_DIR" and "symbolic link" in e.value.message
    assert not any((tmp_path / "real").iterdir())
    with pytest.raises(ConfigError) as e:
        export_mod.export(hist.repo, tmp_path / "empty", ref=hist.root)
    assert e.value.code == "EXPORT_EMPTY"


def test_export_never_writes_outside_out_dir(tmp_path: Path) -> None:
    repo = open_repo(str(tmp_path / "evil.icechunk"), create=True)
    rng = np.random.default_rng(1)
    w = DatasetWriter(repo, "main")
    for i, (sha, fp, path) in enumerate((("../../../escaped", "../../x", "/etc/passwd"),
                                         ("a" * 64, "/abs/olute", "../../up.jpg"),
                                         ("b" * 64, "fp", "x\n,\"y"))):
        row = make_item(rng, i)
        w.add_item(type(row)(**{**{k: getattr(row, k) for k in row.__dataclass_fields__},
                                "source_sha256": sha, "fingerprint": fp, "source_path": path, "format": "../x"}))
    w.commit("evil", {})
    w.close()
    out = tmp_path / "nested" / "out"
    out.parent.mkdir()
    export_mod.export(repo, out)
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()
                     and "evil.icechunk" not in p.parts)
    assert all(p.parts[:2] == ("nested", "out") for p in written)
    names = sorted(p.name for p in (out / "images").iterdir())
    assert len(names) == 3 and all(n.endswith(".bin") and "/" not in n for n in names)
    with open(out / "manifest.csv", newline="") as f:
        assert [r["source_path"] for r in csv.DictReader(f)][2] == "x\n,\"y"
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nested")
    with pytest.raises(ConfigError):
        export_mod.export(repo, link)


# -- readers --------------------------------------------------------------------------------------


def test_plain_zarr_and_the_reader_give_the_same_rows(hist: Hist) -> None:
    for ref, summary in (("v1", hist.v1), ("low-q", hist.lowq), ("main", hist.main2)):
        ds = open_dataset(str(hist.store), ref=ref)
        t = ds.items_table(["source_sha256", "fingerprint", "job_id"])
        mine = list(zip(t["source_sha256"].tolist(), t["fingerprint"].tolist(), t["job_id"].tolist(), strict=True))
        assert mine == plain_rows(hist.store, summary.snapshot or "")


def test_the_python_reader_indexes_iterates_and_decodes(hist: Hist) -> None:
    ds = preprocess.open_dataset(str(hist.store), ref="low-q")
    assert len(ds) == 6
    items = list(ds)
    assert [it["index"] for it in items] == list(range(6))
    for it in items:
        assert it["image"].mode == "RGB" and it["image"].size == (it["width"], it["height"])
        assert len(it["jpeg"]) == it["bytes"] and max(it["image"].size) == 256
    assert ds[-1]["source_sha256"] == items[5]["source_sha256"]
    with pytest.raises(IndexError):
        ds[6]


# -- errors for empty, foreign and missing stores -------------------------------------------------


def test_empty_foreign_and_missing_stores_give_clear_errors(tmp_path: Path) -> None:
    empty = open_repo(str(tmp_path / "empty.icechunk"), create=True)
    assert history.log(empty) == []
    assert history.show(empty, "main").commit.kind == "init"
    foreign_path = tmp_path / "foreign.icechunk"
    foreign = ic.Repository.create(ic.local_filesystem_storage(str(foreign_path)))
    s = foreign.writable_session("main")
    zarr.group(store=s.store).create_array("x", shape=(2,), dtype="int8")
    s.commit("not ours")
    for call in (lambda: history.log(foreign), lambda: history.show(foreign, "main"),
                 lambda: diff.diff(foreign, "main", "main"),
                 lambda: export_mod.export(foreign, tmp_path / "o")):
        with pytest.raises(ConfigError) as e:
            call()
        assert e.value.code == "STORE_FORMAT"


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_cli_read_commands_print_tables_and_json(hist: Hist, tmp_path: Path) -> None:
    s = str(hist.store)
    r = cli("log", s, "--json")
    assert r.exit_code == 0, r.output
    assert [c["id"] for c in json.loads(r.stdout)["commits"]] == [hist.main2.snapshot, hist.v1.snapshot]
    r = cli("log", s, "--branch", "low-q")
    assert r.exit_code == 0 and (hist.lowq.snapshot or "")[:12] in r.stdout and "tiny-q40" in r.stdout
    r = cli("show", s, (hist.v1.snapshot or "")[:7], "--json")
    assert json.loads(r.stdout)["metadata"]["preprocess"]["job_id"] == hist.v1.job_id
    r = cli("show", s, "v1")
    assert r.exit_code == 0 and "tiny-q80" in r.stdout and "fingerprint" in r.stdout
    r = cli("show", s, "low-q", "--item", "apple.jpg")
    assert r.exit_code == 0 and str(hist.sets[0] / "apple.jpg") in r.stdout and hist.lowq.snapshot in r.stdout
    r = cli("show", s, "--item", "apple.jpg", "--json")
    assert len(json.loads(r.stdout)["items"]) == 1
    r = cli("diff", s, "main", "low-q", "--json")
    assert len(json.loads(r.stdout)["added"]) == 4
    r = cli("diff", s, "main", "low-q")
    assert r.exit_code == 0 and "+4 added, -2 removed" in r.stdout
    r = cli("export", s, str(tmp_path / "x"), "--ref", "v1", "--format", "parquet", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["files"] == 2


def test_cli_errors_are_one_line_with_a_hint(hist: Hist, tmp_path: Path) -> None:
    for args, code, exit_code in ((("show", str(hist.store), "nope"), "REF_MISSING", 2),
                                  (("log", str(tmp_path / "none")), "STORE_MISSING", 2),
                                  (("tag", str(hist.store), "v1"), "REF_EXISTS", 2),
                                  (("gc", str(hist.store), "--older-than", "x"), "GC_AGE", 2)):
        r = cli(*args)
        assert r.exit_code == exit_code, (args, r.output)
        lines = r.stderr.strip().splitlines()
        assert lines[0].startswith(f"error[{code}]") and lines[1].strip().startswith("hint:"), r.stderr


def test_cli_tag_branch_reset_gc(hist: Hist, tmp_path: Path) -> None:
    copy = tmp_path / "c.icechunk"
    shutil.copytree(hist.store, copy)
    s = str(copy)
    assert cli("tag", s, "keep", "low-q").exit_code == 0
    r = cli("branch", s, "exp", "v1", "--json")
    assert json.loads(r.stdout) == {"version": 1, "command": "branch", "ref": "exp", "kind": "branch",
                                    "snapshot": hist.v1.snapshot}
    r = cli("reset", s, "main", "v1", "--tag", "main-before")
    assert r.exit_code == 0 and hist.main2.snapshot in r.stdout
    r = cli("gc", s, "--older-than", "0s", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["snapshots"] == []  # the old tip is tagged: kept
    assert len(open_dataset(s, ref="main-before")) == 4 and len(open_dataset(s, ref="keep")) == 6

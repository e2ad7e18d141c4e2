"""A store written by an older preprocess (tests/data/store-ead8ba0: run, watch and Ray commits made
before the ingest/provenance redesign) still reads in log, show, show --item, diff and export, keeps
its provenance exactly, and takes new commits."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import icechunk as ic
import pytest
from typer.testing import CliRunner

from preprocess.cli import app
from preprocess.drivers.run import JobOptions, run_job
from preprocess.rows.provenance import Provenance
from preprocess.store import diff, export, history, lineage, open_dataset, open_repo, refs
from tests.paths import ROOT

LEGACY = ROOT / "tests" / "data" / "store-ead8ba0"
ROOT_SNAPSHOT = "1CECHNKREP0F1RSTCMT0"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    copy = tmp_path / "legacy.icechunk"
    shutil.copytree(LEGACY, copy)
    return copy


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_every_old_commit_reads_back_exactly(store: Path) -> None:
    repo = ic.Repository.open(ic.local_filesystem_storage(str(store)))
    made = 0
    for branch in ("main", "ray"):
        for info in repo.ancestry(branch=branch):
            p = Provenance.from_metadata(info.metadata)
            if info.parent_id is None:
                assert p is None
                continue
            made += 1
            assert p is not None and p.to_metadata() == dict(info.metadata)  # nothing lost, nothing added
    assert made == 3


def test_log_and_show_of_an_old_store(store: Path) -> None:
    repo = open_repo(str(store), create=False)
    main = history.log(repo, "main")
    assert [(c.kind, c.added, c.failed) for c in main] == [("watch", 1, 0), ("run", 2, 1)]
    assert {c.spec for c in main} == {"legacy-tiny"} and {c.model for c in main} == {"mobilenetv2-imagenet"}
    assert main[1].refs == ["tag:v1"] and main[0].branch == "main"
    watch = main[0].provenance
    assert watch is not None and watch.watch is not None and watch.watch.reason in ("count", "interval", "shutdown")
    (ray_commit,) = history.log(repo, "ray")
    ray = ray_commit.provenance
    assert ray is not None and ray.ray is not None and (ray.ray.actors, ray.ray.device) == (1, "cpu")
    assert [e.engine for e in ray.ray.engines] == ["pillow"]
    shown = history.show(repo, "v1")
    assert shown.version.items == 2 and shown.version.failures == 1
    assert shown.to_dict()["metadata"] == shown.commit.metadata
    r = cli("show", str(store), "main")
    assert r.exit_code == 0, r.output
    assert "pillow on cpu" in r.stdout and "long-side 64, q60 fixed" in r.stdout and "legacy-tiny" in r.stdout
    r = cli("log", str(store), "--json")
    assert r.exit_code == 0 and [c["kind"] for c in json.loads(r.stdout)["commits"]] == ["watch", "run"]


def test_lineage_and_diff_of_an_old_store(store: Path) -> None:
    repo = open_repo(str(store), create=False)
    found = lineage.lineage(repo, "apple.jpg", "main")
    (item,) = found.items
    assert item.made_by.commit is not None and item.made_by.commit.refs == ["tag:v1"]
    assert item.stored["width"] == 64 and str(item.source["source_path"]).endswith("apple.jpg")
    failed = lineage.lineage(repo, "truncated.jpg", "main")
    assert [f.row["code"] for f in failed.failures] == ["E_TRUNCATED"]
    d = diff.diff(repo, "v1", "ray")  # the same sources and spec, made by the local and the Ray job
    assert d.base == ROOT_SNAPSHOT and d.added == [] and d.removed == []
    assert len(d.changed) == 2 and all(set(c.fields) == {"job_id"} for c in d.changed)
    r = cli("diff", str(store), "main", "ray", "--json")
    assert r.exit_code == 0 and len(json.loads(r.stdout)["removed"]) == 1
    r = cli("show", str(store), "--item", "apple.jpg")
    assert r.exit_code == 0 and "legacy-tiny" in r.stdout


def test_export_of_an_old_store(store: Path, tmp_path: Path) -> None:
    done = export.export(open_repo(str(store), create=False), tmp_path / "out", ref="main")
    assert done.files == 3
    with open(tmp_path / "out" / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(Path(r["source_path"]).name for r in rows) == ["apple.jpg", "butterfly.jpg", "orange.jpg"]
    r = cli("export", str(store), str(tmp_path / "pq"), "--ref", "ray", "--format", "parquet", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["files"] == 2


def test_an_old_store_takes_new_commits(store: Path, tmp_path: Path, small_photos: list[Path]) -> None:
    src = tmp_path / "new"
    src.mkdir()
    shutil.copy(next(p for p in small_photos if p.name == "fruits.jpg"), src / "fruits.jpg")
    repo = open_repo(str(store), create=False)
    before = refs.resolve_ref(repo, "main")
    summary = run_job(JobOptions(sources=[str(src)], store=str(store), engine="pillow", device="cpu"))
    assert summary.stored == 1
    (new, *old) = history.log(repo, "main")
    assert new.id == summary.snapshot and len(old) == 2 and new.provenance is not None
    assert new.provenance.inputs.parent_snapshot == before.snapshot
    assert len(open_dataset(str(store))) == 4

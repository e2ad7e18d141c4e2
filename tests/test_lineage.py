"""Lineage is the product's promise (issue 23, bug 1): for every row, every reader names the commit that
added it, whichever driver wrote it. The watch daemon commits several times under one job id, so a job id
cannot say which commit added a row: the item page used to name the daemon's first commit for rows of its
later ones, and `show --item` its last commit for rows of the earlier ones. Here a real daemon's store is
crawled row by row through the item page, `show --item`, `ls`, the lineage API and the notebook API, and
each must name the commit that added the row (known independently: each wave of files was written after
the previous one was committed). Stores written by older versions must read the same way."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

import preprocess
from preprocess.cli import app
from preprocess.serve import Catalog, create_app
from preprocess.store import open_repo
from preprocess.store.origins import origins
from tests.conftest import DaemonStore
from tests.paths import ROOT


def _commits(store: Path) -> list[preprocess.history.Commit]:
    commits = preprocess.history.log(str(store), "main")[::-1]  # oldest first
    assert len(commits) == 3 and {c.kind for c in commits} == {"watch"}
    assert len({c.job_id for c in commits}) == 1  # one job id for all three: it cannot tell them apart
    return commits


def _item_page_commit(client: TestClient, snapshot: str, row: int) -> str:
    page = client.get(f"/snapshots/{snapshot}/items/{row}")
    assert page.status_code == 200, page.text[:300]
    cell = page.text.split('id="commit"', 1)[1].split("</td>", 1)[0]
    found = re.search(r'href="/commits/([0-9A-Z]{20})"', cell)
    assert found is not None, cell
    return found[1]


def test_every_reader_names_the_commit_that_added_each_row_of_a_daemon_store(daemon_store: DaemonStore) -> None:
    store = str(daemon_store.store)
    commits = _commits(daemon_store.store)
    added = {sha: commits[k].id for k, wave in enumerate(daemon_store.waves) for sha in wave}
    ds = preprocess.open_dataset(store)  # the notebook API
    shas = [str(s) for s in ds.items_table(["source_sha256"])["source_sha256"]]
    assert sorted(shas) == sorted(added) and len(shas) == 8
    listed: Any = json.loads(CliRunner().invoke(app, ["ls", store, "--json"]).stdout)
    with TestClient(create_app(Catalog(store))) as client:
        for row, sha in enumerate(shas):
            want = added[sha]
            assert ds.added_by(row) == want, row
            (item,) = [x for x in preprocess.history.lineage(store, sha).items if x.index == row]
            assert item.made_by.commit is not None and item.made_by.commit.id == want, row
            shown: Any = json.loads(CliRunner().invoke(app, ["show", store, "--item", sha, "--json"]).stdout)
            assert [x["commit"]["id"] for x in shown["items"] if x["index"] == row] == [want], row
            assert listed["rows"][row]["commit"] == want
            assert _item_page_commit(client, ds.snapshot_id, row) == want, row
        failures = client.get("/failures?ref=main").text.split('id="failures"', 1)[1]
    bad = preprocess.history.lineage(store, "truncated.jpg")
    assert [f.made_by.commit.id for f in bad.failures if f.made_by.commit] == [commits[1].id]
    assert f'href="/commits/{commits[1].id}"' in failures
    assert f'href="/commits/{commits[0].id}"' not in failures and f'href="/commits/{commits[2].id}"' not in failures


def test_what_each_commit_added_is_the_whole_map(daemon_store: DaemonStore) -> None:
    commits = _commits(daemon_store.store)
    history = preprocess.history.added_by(str(daemon_store.store))
    assert history[0].items == range(0) and history[0].failures == range(0)  # the repository's first snapshot
    assert [a.snapshot for a in history[1:]] == [c.id for c in commits]
    assert [len(a.items) for a in history[1:]] == [len(w) for w in daemon_store.waves] == [3, 2, 3]
    assert [len(a.failures) for a in history[1:]] == [0, 1, 0]
    repo = open_repo(str(daemon_store.store), create=False)
    o = origins(repo, commits[-1].id)
    assert o.item_commits() == [a.snapshot for a in history for _ in a.items]
    with pytest.raises(preprocess.NotFoundError):
        o.item(8)


@pytest.mark.parametrize("name", ["store-ead8ba0", "store-d87bf7b"])
def test_stores_written_by_older_versions_name_the_same_commits(tmp_path: Path, name: str) -> None:
    copy = tmp_path / name
    shutil.copytree(ROOT / "tests" / "data" / name, copy)
    store = str(copy)
    run, watch = preprocess.history.log(store, "main")[::-1]
    assert (run.kind, watch.kind) == ("run", "watch")
    ds = preprocess.open_dataset(store)
    names = [Path(str(p)).name for p in ds.items_table(["source_path"])["source_path"]]
    assert names == ["apple.jpg", "orange.jpg", "butterfly.jpg"]
    assert [ds.added_by(i) for i in range(3)] == [run.id, run.id, watch.id]
    (failed,) = preprocess.history.lineage(store, "truncated.jpg").failures
    assert failed.made_by.commit is not None and failed.made_by.commit.id == run.id
    with TestClient(create_app(Catalog(store))) as client:
        assert [_item_page_commit(client, ds.snapshot_id, i) for i in range(3)] == [run.id, run.id, watch.id]
    if name == "store-ead8ba0":  # its `ray` branch: one Ray job's commit, from the first snapshot
        ray = preprocess.open_dataset(store, ref="ray")
        (ray_commit,) = preprocess.history.log(store, "ray")
        assert [ray.added_by(i) for i in range(len(ray))] == [ray_commit.id] * len(ray) == [ray_commit.id] * 2


def test_each_commit_records_its_counts_and_readers_take_them_from_the_history(daemon_store: DaemonStore,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading each snapshot's arrays costs ~8 ms a commit (a daemon commits every 30 s): the counts every
    commit records are read with the history, and only the tip's arrays are read, to check them."""
    from preprocess.store import origins as module

    commits = _commits(daemon_store.store)
    assert [c.metadata[module.HELD] for c in commits] == [{"items": 3, "failures": 0}, {"items": 5, "failures": 1},
                                                          {"items": 8, "failures": 1}]
    truth = preprocess.history.added_by(str(daemon_store.store))
    read: list[str] = []
    counts = module.counts

    def counting(repo: Any, snapshot: str) -> tuple[int, int]:  # the real counts, and which snapshots were read
        read.append(snapshot)
        return counts(repo, snapshot)

    monkeypatch.setattr(module, "counts", counting)
    o = origins(open_repo(str(daemon_store.store), create=False), commits[-1].id)
    assert o.commits() == truth
    assert set(read) <= {commits[-1].id, truth[0].snapshot}  # the tip (checked) and the first, empty snapshot


@pytest.mark.parametrize("claim", [{"items": 999, "failures": 1}, {"items": 1, "failures": 0}])
def test_counts_a_commit_claims_are_checked_before_use(daemon_store: DaemonStore, tmp_path: Path,
                                                       claim: dict[str, int]) -> None:
    """A hostile or damaged store's tip claims more rows than its arrays hold, or fewer than the commit
    before it: every snapshot's arrays are read instead, and the answers are the arrays'. (Taken as they
    are, the first gave the tip's empty commit 991 rows, the second had no item 5.)"""
    from preprocess.store.origins import HELD

    copy = tmp_path / "store"
    shutil.copytree(daemon_store.store, copy)
    repo = open_repo(str(copy), create=False)
    truth = preprocess.history.added_by(str(copy))
    tip = repo.writable_session("main").commit("a claim", metadata={HELD: claim}, allow_empty=True)
    o = origins(repo, tip)
    assert o.commits()[:-1] == truth and o.commits()[-1].items == range(8, 8)
    rows = [a.snapshot for a in truth for _ in a.items]
    assert o.item_commits() == rows and [o.item(r) for r in range(8)] == rows

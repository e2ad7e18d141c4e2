"""``preprocess.history``, the public Python API of the dataset's history (issue 14): a small surface
(``__all__``), each function the same typed result the CLI prints with ``--json``, taking a path or
an open repository."""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner

from preprocess import history
from preprocess.cli import app
from preprocess.store import open_repo
from tests.store.conftest import Hist, hist, photo_sets, tiny_specs

__all__ = ["hist", "photo_sets", "tiny_specs"]  # the store of real jobs the history tests use


LISTS = {"log": "commits", "branch": "branches", "tag": "tags"}  # commands whose result is a list, under this key


def cli_json(*args: str) -> Any:
    r = CliRunner().invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc.pop("version") == 1 and doc.pop("command") == args[0]  # the JSON document's header (docs/json.md)
    return doc[LISTS[args[0]]] if args[0] in LISTS else doc


def test_the_public_surface_is_small_and_documented() -> None:
    functions = {"log", "show", "diff", "lineage", "added_by", "branches", "tags", "resolve"}
    assert functions <= set(history.__all__)
    assert all(name[0].isupper() for name in set(history.__all__) - functions)  # the rest: result types
    for name in history.__all__:
        assert getattr(history, name).__doc__, name
    assert history.__doc__ and "to_dict()" in history.__doc__


def test_each_function_returns_what_the_cli_prints(hist: Hist) -> None:
    s = str(hist.store)
    repo = open_repo(s, create=False)
    assert [c.to_dict() for c in history.log(s, "low-q")] == cli_json("log", s, "low-q")
    assert [c.id for c in history.log(repo, "main", limit=1)] == [hist.main2.snapshot]
    assert history.show(s, "main~1").to_dict() == cli_json("show", s, "main~1")
    assert history.diff(repo, "v1", "main").to_dict() == cli_json("diff", s, "v1", "main")
    found = history.lineage(s, "apple.jpg", "low-q")
    assert found.to_dict() == cli_json("show", s, "low-q", "--item", "apple.jpg")
    made = {i.made_by.provenance.fingerprint for i in found.items if i.made_by.provenance}
    assert made == {hist.v1.fingerprint, hist.lowq.fingerprint}
    assert [b.to_dict() for b in history.branches(s)] == cli_json("branch", s)
    assert [t.name for t in history.tags(repo)] == ["v1"]
    assert history.resolve(s, "main~1") == history.Ref("main~1", "snapshot", hist.v1.snapshot or "")
    assert isinstance(history.log(s)[0], history.Commit) and isinstance(found, history.Lineage)

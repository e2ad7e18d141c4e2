"""The diff pairs the same source across specs (issue 23): a JPEG branch against an AVIF branch of the
same sources is N sources stored another way, not N removed + N added; the CLI prints each pair
(``name: jpeg 27.0 KB q41 -> avif 30.4 KB q47``) and the web UI shows them side by side."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from preprocess import history
from preprocess.cli import app
from preprocess.serve import Catalog, create_app
from preprocess.store import open_repo, refs
from tests.jobs import run_pillow

SPEC = """
[pipeline]
name = "{fmt}-256"
[resize]
mode = "long-side"
size = 256
[encode]
format = "{fmt}"
[quality]
mode = "adaptive"
min = 30
max = 90
step = 10
[gate]
threshold = 0.98
[batch]
size = 8
"""


@pytest.fixture(scope="module")
def two_formats(tmp_path_factory: pytest.TempPathFactory, photo_sets: list[Path]) -> Path:
    """``jpeg`` and ``avif``: the same four photos, one branch per format (both from the first snapshot)."""
    root = tmp_path_factory.mktemp("formats")
    store = root / "cams.icechunk"
    specs = {}
    for fmt in ("jpeg", "avif"):
        specs[fmt] = root / f"{fmt}.toml"
        specs[fmt].write_text(SPEC.format(fmt=fmt))
    run_pillow(photo_sets[:2], store, specs["jpeg"], message="jpeg")
    repo = open_repo(str(store), create=False)
    first = refs.history(repo, branch="main")[-1].id
    refs.create_branch(repo, "jpeg", "main")
    refs.create_branch(repo, "avif", first)
    run_pillow(photo_sets[:2], store, specs["avif"], branch="avif", message="avif")
    return store


def test_a_jpeg_branch_against_an_avif_branch_is_pairs(two_formats: Path) -> None:
    d = history.diff(str(two_formats), "jpeg", "avif")
    assert len(d.added) == len(d.removed) == len(d.pairs) == 4
    assert d.added_alone == [] and d.removed_alone == []
    for p in d.pairs:
        assert p.a.source_sha256 == p.b.source_sha256 and (p.a.format, p.b.format) == ("jpeg", "avif")
        assert p.a.fingerprint != p.b.fingerprint
        assert p.words().startswith(f"{Path(p.source_path).name}: jpeg ") and " -> avif " in p.words()
    doc: Any = d.to_dict()
    assert len(doc["pairs"]) == 4 and doc["pairs"][0]["a"]["format"] == "jpeg"


def test_the_cli_prints_the_pairs(two_formats: Path) -> None:
    r = CliRunner().invoke(app, ["diff", str(two_formats), "jpeg", "avif"], env={"COLUMNS": "160"})
    assert r.exit_code == 0, r.output
    assert "4 sources stored under another spec" in r.stdout
    assert "4 stored under another spec: +0 new sources, -0 sources gone" in r.stdout
    pair = re.compile(r"\.(jpg|png)\s+jpeg [\d.]+ K?B q\d+\s+->\s+avif ")
    pairs = [line for line in r.stdout.splitlines() if pair.search(line)]
    assert len(pairs) == 4, r.stdout
    assert not [line for line in r.stdout.splitlines() if line.strip().startswith(("+ ", "- "))]  # no +/- rows
    doc = json.loads(CliRunner().invoke(app, ["diff", str(two_formats), "jpeg", "avif", "--json"]).stdout)
    assert len(doc["pairs"]) == 4 and len(doc["added"]) == 4  # the JSON keeps every row too


def test_the_web_ui_shows_the_pairs_side_by_side(two_formats: Path) -> None:
    cat = Catalog(str(two_formats))
    with TestClient(create_app(cat)) as c:
        page = c.get("/diff?a=jpeg&b=avif").text
    assert '<b>4</b> stored under another spec, <b>+0</b> new sources, <b>−0</b> sources gone' in page
    table = page.split('id="pairs"', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr><td") == 4 and table.count("jpeg") >= 4 and table.count("avif") >= 4
    assert 'id="added"' in page and page.split('id="added"', 1)[1].split("</div>", 1)[0].count("card") == 0


def test_the_same_sources_stored_again_under_another_spec_are_not_new(two_formats: Path) -> None:
    """A branch that keeps main's JPEG rows and stores the same photos again as AVIF: the diff said "+4
    added ... 4 new sources" (a newcomer's walkthrough); they are the same sources, kept under the first
    spec too."""
    repo = open_repo(str(two_formats), create=False)
    refs.create_branch(repo, "both", "jpeg")
    spec = two_formats.parent / "avif.toml"
    photos = sorted({Path(r.source_path).parent for r in history.diff(str(two_formats), "avif", "jpeg").added})
    run_pillow(photos, two_formats, spec, branch="both", message="avif too")
    d = history.diff(str(two_formats), "jpeg", "both")
    assert len(d.added) == len(d.pairs) == 4 and d.removed == [] and d.added_alone == []
    assert all(p.kept and (p.a.format, p.b.format) == ("jpeg", "avif") for p in d.pairs)
    doc: Any = d.to_dict()
    assert all(p["kept"] for p in doc["pairs"])
    r = CliRunner().invoke(app, ["diff", str(two_formats), "jpeg", "both"], env={"COLUMNS": "160"})
    assert r.exit_code == 0, r.output
    assert "4 stored under another spec (all also kept under the first): +0 new sources" in r.stdout
    assert not [line for line in r.stdout.splitlines() if line.strip().startswith(("+ ", "- "))]
    # The other way round: both -> jpeg drops the AVIF rows, and every source stays (as JPEG). The web UI and
    # the CLI said "4 sources gone" (a walkthrough, session 8).
    back = history.diff(str(two_formats), "both", "jpeg")
    assert len(back.removed) == len(back.removed_alone) == 4 and (back.sources_gone, back.removed_held) == (0, 4)
    assert back.to_dict()["sources_gone"] == 0 and back.to_dict()["removed_held"] == 4
    with TestClient(create_app(Catalog(str(two_formats)))) as c:
        page = c.get("/diff?a=both&b=jpeg").text
    assert "4 rows of both: 0 sources gone, 4 rows of sources still stored in jpeg under another spec" in page
    text = CliRunner().invoke(app, ["diff", str(two_formats), "both", "jpeg"], env={"COLUMNS": "200"}).stdout
    assert "4 rows of both: 0 sources gone, 4 rows of sources still stored in jpeg under another spec" in text
    assert history.diff(str(two_formats), "jpeg", "avif").sources_gone == 0  # pairs: nothing gone either

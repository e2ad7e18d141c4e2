"""What issue 23 added to the web UI, at the HTTP level on the store of real jobs: the comparer's crops
at 1:1 (and the same source under another spec), search and filters (file name, commit, format,
any --where expression), charts as plain SVG, downloads (an image, the selection as zip or CSV, a
commit's spec as TOML), and the bugs: the engine field in words, -1 as a page."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from preprocess import history
from preprocess.pipeline.spec import parse_spec
from preprocess.serve import Catalog, create_app
from preprocess.store import open_dataset
from preprocess.store.export import manifest_columns
from tests.serve.conftest import Served


@pytest.fixture(scope="module")
def client(catalog: Catalog) -> Iterator[TestClient]:
    with TestClient(create_app(catalog), raise_server_exceptions=False) as c:
        yield c


def rows_of(html: str) -> list[int]:
    return [int(x.split("/items/")[1].split('"')[0]) for x in html.split('class="card" href="')[1:]]


def test_the_engine_field_reads_as_words(client: TestClient, served: Served) -> None:
    """issue 23, bug 5: the item page joined every value of the engine section: ``cpu on jpegli 4:2:0:
    jpegli on pillow on 4 on 2``."""
    page = client.get(f"/snapshots/{served.first.snapshot}/items/0").text
    cell = page.split('id="encoder">', 1)[1].split("</td>", 1)[0]
    assert "engine pillow on cpu" in cell and " by jpegli" in cell
    assert not re.search(r"on \d", cell), cell


def test_a_negative_or_odd_row_is_a_page_like_every_other_error(client: TestClient, served: Served) -> None:
    """issue 23, bug 10: ``/snapshots/ID/items/-1`` answered bare text."""
    for row in ("-1", "1.5", "x"):
        r = client.get(f"/snapshots/{served.first.snapshot}/items/{row}")
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html"), row
        assert 'id="error"' in r.text and "SERVE_NOT_FOUND" in r.text
    bare = client.get(f"/snapshots/{served.first.snapshot}/items/99/thumb")  # a picture's error stays text
    assert bare.status_code == 404 and bare.text.startswith("error[ITEM_MISSING]")


def test_the_comparer_shows_two_crops_of_one_square_at_1_to_1(client: TestClient, served: Served) -> None:
    snap = served.first.snapshot
    ds = open_dataset(str(served.store), ref=str(snap))
    w, h = ds.record(0)["width"], ds.record(0)["height"]
    page = client.get(f"/snapshots/{snap}/items/0?side=128").text
    imgs = re.findall(r'<img id="view-(a|b)" src="([^"]+)" width="(\d+)" height="(\d+)"', page)
    assert [i[0] for i in imgs] == ["a", "b"] and "crop/source" in imgs[0][1] and "crop/stored" in imgs[1][1]
    for _, url, cw, ch in imgs:
        assert (int(cw), int(ch)) == (min(128, w), min(128, h))
        picture = Image.open(io.BytesIO(client.get(url.replace("&amp;", "&")).content))
        assert picture.size == (int(cw), int(ch))  # a crop, shown at its own pixels
    stored = Image.open(io.BytesIO(ds.jpeg(0))).convert("RGB")
    crop = Image.open(io.BytesIO(client.get(f"/snapshots/{snap}/items/0/crop/stored?x=3&y=5&w=40&h=30").content))
    assert crop.size == (40, 30)
    assert np.array_equal(np.asarray(crop.convert("RGB")), np.asarray(stored.crop((3, 5, 43, 35))))
    assert 'id="region-map"' in page and page.count('class="cell"') >= 1
    for bad in ("x=-1", "side=100", "w=0", "a=../etc", f"b={'A' * 20}:0"):
        r = client.get(f"/snapshots/{snap}/items/0?{bad}" if "w=" not in bad else
                       f"/snapshots/{snap}/items/0/crop/stored?{bad}")
        assert r.status_code == 400 and "SERVE_PARAM" in r.text, bad


def test_the_same_source_under_another_spec_is_offered_to_compare(client: TestClient, served: Served) -> None:
    snap = served.first.snapshot  # v1: low-q holds its rows and the same sources at q40
    page = client.get(f"/snapshots/{snap}/items/0").text
    assert 'id="siblings"' in page and "(low-q)" in page
    other = re.search(r'href="\?[^"]*b=([0-9A-Z]{20})%3A(\d+)', page)
    assert other is not None
    chosen = client.get(f"/snapshots/{snap}/items/0?b={other[1]}:{other[2]}").text
    (b_url,) = re.findall(r'<img id="view-b" src="([^"]+)"', chosen)
    assert f"/snapshots/{other[1]}/items/{other[2]}/crop/stored" in b_url
    assert client.get(b_url.replace("&amp;", "&")).status_code == 200


def test_search_and_filters_select_rows_by_name_commit_format_and_expression(client: TestClient,
                                                                              served: Served) -> None:
    ds = open_dataset(str(served.store), ref="main")
    names = [Path(str(p)).name for p in ds.items_table(["source_path"])["source_path"]]
    assert rows_of(client.get("/items?ref=main&q=FRUITS").text) == [names.index("fruits.jpg")]
    second = rows_of(client.get(f"/items?ref=main&commit={served.second.snapshot}").text)
    assert second == [i for i in range(len(ds)) if ds.added_by(i) == served.second.snapshot] and len(second) == 3
    short = rows_of(client.get(f"/items?ref=main&commit={str(served.first.snapshot)[:6]}").text)
    assert sorted(short + second) == list(range(len(ds)))
    assert len(rows_of(client.get("/items?ref=main&format=jpeg").text)) == len(ds)
    assert rows_of(client.get("/items?ref=main&format=avif").text) == []
    expr = rows_of(client.get("/items?ref=main&where=name+~+.png+and+quality+%3E%3D+30").text)
    assert sorted(expr) == [i for i, n in enumerate(names) if n.endswith(".png")]
    bad = client.get("/items?ref=main&where=nope+%3C+3")
    assert bad.status_code == 400 and "WHERE_INVALID" in bad.text
    assert client.get("/items?ref=main&commit=..%2F..").status_code == 400


def test_charts_are_plain_svg_per_version_and_per_commit(client: TestClient, served: Served) -> None:
    page = client.get("/charts?ref=main").text
    for name in ("similarity", "quality", "bytes"):
        svg = page.split(f'id="hist-{name}"', 1)[1].split("</svg>", 1)[0]
        assert "<svg" in svg and svg.count('class="bar"') >= 1
        counts = [int(n) for n in re.findall(r": (\d+) items?</title></rect>", svg)]
        assert sum(counts) == 8, name  # main: 5 + 3 items
    over = page.split('id="over-commits"', 1)[1]
    assert over.count(f'commit={served.second.snapshot}') >= 3  # one bar per chart links to each commit
    one = client.get(f"/charts?ref=main&commit={served.second.snapshot}").text
    svg = one.split('id="hist-bytes"', 1)[1].split("</svg>", 1)[0]
    assert sum(int(n) for n in re.findall(r": (\d+) items?</title></rect>", svg)) == 3
    assert "<script" not in page.replace('<script src="/static/compare.js"', "")


def test_downloads_an_image_the_selection_and_a_commits_spec(client: TestClient, served: Served) -> None:
    snap = served.first.snapshot
    ds = open_dataset(str(served.store), ref="main")
    one = client.get(f"/snapshots/{snap}/items/0/download")
    assert one.content == ds.jpeg(0) and one.headers["content-disposition"].startswith('attachment; filename="')
    z = zipfile.ZipFile(io.BytesIO(client.get("/items.zip?ref=main&q=.jpg").content))
    manifest = list(csv.DictReader(io.StringIO(z.read("manifest.csv").decode())))
    picked = [i for i, p in enumerate(ds.items_table(["source_path"])["source_path"]) if ".jpg" in str(p)]
    assert [int(r["row"]) for r in manifest] == picked
    for r in manifest:
        assert z.read(r["file"]) == ds.jpeg(int(r["row"])) and r["commit"] == ds.added_by(int(r["row"]))
        assert r["stored_sha256"] == hashlib.sha256(z.read(r["file"])).hexdigest()
    # the columns of `preprocess export`'s manifest, in its order; the CSV alone reads no image, so no hash
    assert list(manifest[0]) == manifest_columns(stored_sha256=True)
    listed = list(csv.DictReader(io.StringIO(client.get("/items.csv?ref=main").text)))
    assert len(listed) == len(ds) and {r["snapshot"] for r in listed} == {ds.snapshot_id}
    assert list(listed[0]) == manifest_columns(stored_sha256=False)
    toml = client.get("/spec.toml?ref=v1")
    assert toml.headers["content-disposition"].endswith('.toml"')
    recorded = history.show(str(served.store), "v1").commit.provenance
    assert recorded is not None
    assert parse_spec(tomllib.loads(toml.text)) == parse_spec(recorded.spec)  # runs again as it ran


def test_a_grid_page_and_its_links_stay_on_the_version_shown(served: Served, tmp_path: Path) -> None:
    """Pagination, sorts, per page and the zip/CSV downloads of the items grid linked to ref=BRANCH: a job
    that moved the branch between two clicks showed another version on page 2 (rows of page 1 again) and the
    zip took rows the page never showed (a web UI audit, 2026-12-07). Every link carries at=SNAPSHOT; the
    page says when the branch has moved on, and links its tip. The form does not restore stale values."""
    import re
    import shutil

    from preprocess.store import open_repo, refs

    store = tmp_path / "s.icechunk"
    shutil.copytree(served.store, store)
    tip = served.lowq.snapshot or ""
    with TestClient(create_app(Catalog(str(store))), raise_server_exceptions=False) as c:
        page = c.get("/items", params={"ref": "low-q"}).text  # one page: the quick sorts share the pager's links
        links = re.findall(r'href="(/items\?[^"]*sort=[^"]*)"', page) + re.findall(r'href="(/items\.(?:zip|csv)[^"]*)"',
                                                                                  page)
        assert links and all(f"at={tip}" in link for link in links), links
        assert 'autocomplete="off"' in page and f'name="at" value="{tip}"' in page and 'id="moved"' not in page
        same = c.get(links[0].replace("&amp;", "&")).text  # a pinned page of the tip still says "branch at"
        assert "branch at" in same and 'id="moved"' not in same
        refs.reset_branch(open_repo(str(store), create=False), "low-q", "v1")  # the branch moves on
        nxt = c.get(links[0].replace("&amp;", "&"))
        assert nxt.status_code == 200 and tip in nxt.text and 'id="moved"' in nxt.text
        assert 'id="tip" href="/items?ref=low-q&amp;sort=' in nxt.text  # the tip, with the same filters and sort
        csv = c.get(next(link for link in links if ".csv" in link).replace("&amp;", "&"))
        shown = len(open_dataset(str(store), ref=tip))
        assert csv.status_code == 200 and len(csv.text.strip().splitlines()) - 1 == shown
        fresh = c.get("/items", params={"ref": "low-q"}).text
        assert tip not in fresh and 'id="moved"' not in fresh
        assert c.get("/items", params={"ref": "low-q", "at": "NOTASNAPSHOT"}).status_code == 404


def test_the_log_of_the_first_snapshot_says_what_it_is(client: TestClient) -> None:
    """/log?ref=main~2 (the repository's first snapshot) said "no commits yet: run a job into this dataset" of
    a dataset with commits (a web UI audit, 2026-12-07); `preprocess log` said it right."""
    page = client.get("/log", params={"ref": "main~2"}).text
    assert 'id="at-root"' in page and "first snapshot" in page and "no commits yet" not in page
    assert 'id="at-root"' not in client.get("/log", params={"ref": "main"}).text


def test_the_compare_page_names_each_failure_added_or_gone(client: TestClient, served: Served) -> None:
    """The compare page (and `diff`) said "failures +1, −1" alone (a newcomer's walkthrough, 2026-12-07)."""
    page = client.get("/diff", params={"a": "main~2", "b": "v1"}).text  # the first snapshot -> v1: truncated.jpg
    counts = page.split('id="failure-counts">', 1)[1].split("</td>", 1)[0]
    doc: Any = history.diff(str(served.store), "main~2", "v1").to_dict()
    assert doc["failures_added_sources"] and all(
        f["code"] in counts and Path(f["source_path"]).name in counts for f in doc["failures_added_sources"])

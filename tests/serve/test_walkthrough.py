"""What a newcomer's walkthrough of the demo store found in the web UI: downloads that showed folders under
--redact, one similarity shown as two numbers, a source deleted while the server ran still shown, a quality
histogram whose bins overlapped, a commit filter naming no commit answering "0 items", and wording."""

from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import os
import re
import shutil
import socket
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import PIL
import pytest
from starlette.testclient import TestClient

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import NotFoundError
from preprocess.serve import Catalog, charts, create_app
from preprocess.serve.app import _sim as sim_filter
from preprocess.store import checks, open_dataset, open_repo
from preprocess.store.cells import Record
from preprocess.store.listing import ls
from preprocess.store.where import HISTORY, parse
from tests.jobs import run_pillow
from tests.serve.conftest import GONE, Served


@pytest.fixture(scope="module")
def client(catalog: Catalog) -> Iterator[TestClient]:
    with TestClient(create_app(catalog), raise_server_exceptions=False) as c:
        yield c


def test_failures_name_a_branch_by_its_name_and_a_snapshot_as_a_snapshot(client: TestClient,
                                                                          served: Served) -> None:
    """``/failures?ref=main`` said "could not be stored in branch DVHJEW4...": a snapshot id called a branch."""
    on_main = client.get("/failures?ref=main").text
    assert 'in branch <span class="ref">main</span> at <a class="id"' in on_main
    on_tag = client.get("/failures?ref=v1").text
    assert 'in tag <span class="ref">v1</span> at <a class="id"' in on_tag
    pinned = client.get(f"/failures?ref={served.first.snapshot}").text
    assert f'in snapshot <a class="id" href="/commits/{served.first.snapshot}">' in pinned


def test_links_of_an_unfiltered_grid_end_in_no_stray_ampersand(client: TestClient) -> None:
    """``/items?ref=main`` linked ``/items.zip?ref=main&``."""
    page = client.get("/items?ref=main").text
    at = page.split('name="at" value="', 1)[1].split('"', 1)[0]  # pinned to the version shown
    for name in ("download-zip", "download-csv", "charts-link"):
        href = page.split(f'id="{name}" href="', 1)[1].split('"', 1)[0]
        assert href.endswith(f"?ref=main&amp;at={at}"), (name, href)
    charts = client.get("/charts?ref=main").text
    assert f'href="/items?ref=main&amp;at={at}"' in charts
    assert "&amp;page=1" not in charts and "ref=main&amp;\"" not in page


def test_quality_bins_are_whole_numbers_that_no_two_bars_share() -> None:
    """Qualities 17 to 93 were cut in 24 bins of 3.2 ("88 to 91", "91 to 94") under an axis "17 ... 94"."""
    h = charts.histogram("quality", np.array([17, 30, 50, 88, 90, 91, 93, 93], dtype=np.int64))
    spans = [[int(v) for v in r.split("\u2013")] for r in h.ranges()]
    values = [v for s in spans for v in range(s[0], s[-1] + 1)]
    assert values == list(range(17, 94)), h.ranges()  # every quality in one bin, none in two, none past 93
    assert sum(h.counts) == 8 and h.counts[-1] == 2 and spans[-1][-1] == 93
    svg = str(h.svg())
    assert ">17</text>" in svg and ">93</text>" in svg and ">94</text>" not in svg
    assert re.findall(r"<title>([^<]*): 2 items</title></rect>", svg)[-1] == h.ranges()[-1]
    one = charts.histogram("quality", np.array([80, 80], dtype=np.int64))
    assert one.ranges() == ["80"] and list(one.counts) == [2]


def test_a_chart_of_no_items_says_none() -> None:
    """A filter that matched nothing drew a bin "0.0000 to 0.0000: 0 items" under an axis of 1, and a store of
    failures only a bytes axis of "1 B" (a web UI audit, 2026-12-07)."""
    for name in ("similarity", "quality", "bytes"):
        svg = str(charts.histogram(name, np.array([], dtype=np.float64)).svg())
        assert "<rect" not in svg and ">none</text>" in svg and ">1</text>" not in svg, svg
    points = [charts.CommitPoint("A" * 20, "2026-12-07 10:00 · failures only", 0, 0, 0)]
    held = str(charts.commit_charts(points, lambda s: "")["bytes held"])
    assert ">1 B</text>" not in held and ">none</text>" in held


def test_the_charts_quality_axis_ends_at_the_stored_qualities(client: TestClient, catalog: Catalog) -> None:
    qualities = catalog.column(catalog.resolve("main").snapshot, "quality")
    svg = client.get("/charts?ref=main").text.split('id="hist-quality"', 1)[1].split("</svg>", 1)[0]
    ticks = re.findall(r'class="tick"[^>]*>([^<]*)</text>', svg)
    assert ticks[-2:] == [str(int(qualities.min())), str(int(qualities.max()))], ticks
    assert " to " not in svg.split("</title>", 1)[1]


def test_a_check_and_the_similarity_it_is_show_one_number() -> None:
    """The item page said ``similarity 0.9984`` above a check ``whole mobilenetv2-imagenet 0.9983``: the
    stored 0.9983515 rounded once, and rounded twice (``checks`` keeps 0.99835)."""
    stored = float(np.float32(0.9983515))
    item: Record = {"similarity": stored, "similarity_whole": stored, "similarity_crops": float(np.float32(0.97)),
                    "checks": json.dumps({"mobilenetv2-imagenet": {"whole": round(stored, 5), "crops": 0.97},
                                          "dinov2-small": {"whole": 0.99912}})}
    shown = {(c.model, c.view): sim_filter(c.similarity) for c in checks.checks_of(item, {})}
    assert shown[("mobilenetv2-imagenet", "whole")] == sim_filter(item["similarity"]) == "0.9984"
    assert shown[("mobilenetv2-imagenet", "crops")] == "0.9700"
    assert shown[("dinov2-small", "whole")] == "0.9991"  # no column holds it: as recorded


def test_the_item_page_shows_each_checks_similarity_as_its_column(client: TestClient, served: Served) -> None:
    page = client.get(f"/snapshots/{served.first.snapshot}/items/0").text
    item = open_dataset(str(served.store), ref=str(served.first.snapshot)).items_at([0], ["similarity_whole"])
    whole = sim_filter(float(item["similarity_whole"][0]))
    checks = page.split('id="checks"', 1)[1].split("</table>", 1)[0]
    assert re.search(rf"<td>whole</td><td>[^<]*</td><td><b>{whole}</b>", checks), checks


def redacted_responses(c: TestClient, served: Served) -> dict[str, tuple[dict[str, str], str]]:
    """Every kind of response of the served store (pages, downloads, pictures, errors): headers and text
    (a zip's member names and manifest)."""
    snap, second = served.first.snapshot, served.second.snapshot
    gone = next(i for i, p in enumerate(open_dataset(str(served.store), ref="main").items_table(["source_path"])[
        "source_path"].tolist()) if str(p).endswith(GONE))
    urls = ["/items.csv?ref=main", "/items.zip?ref=main", "/spec.toml?ref=main", "/spec.toml?ref=low-q",
            "/failures?ref=main", f"/snapshots/{snap}/items/0", f"/snapshots/{second}/items/0/download",
            f"/snapshots/{second}/items/{gone}", f"/snapshots/{second}/items/{gone}/crop/source?x=0&y=0&w=8&h=8",
            f"/snapshots/{second}/items/{gone}/compare/source", "/items.csv?ref=main&where=folder+~+%2Fnope",
            "/items?ref=main&where=folder+~+%2Fnope", f"/commits/{second}", "/charts?ref=main", "/spec.toml?ref=NOPE"]
    out = {}
    for url in urls:
        r = c.get(url)
        assert r.status_code < 500, (url, r.status_code)
        text = r.text
        if url.startswith("/items.zip"):
            with zipfile.ZipFile(io.BytesIO(r.content)) as z:
                text = "\n".join(z.namelist()) + z.read("manifest.csv").decode()
        out[url] = (dict(r.headers.items()), text)
    return out


def test_redact_covers_every_download_and_error(catalog: Catalog, served: Served) -> None:
    """``--redact`` cut paths on the pages, but the CSV, the zip's manifest.csv and the spec's TOML had every
    source's absolute path and the spec's ("# recorded from /abs/path/camera-640.toml")."""
    secrets = (str(served.photos), str(served.store.parent), socket.gethostname(),
               importlib.metadata.version("icechunk"), PIL.__version__)
    plain = redacted_responses(TestClient(create_app(catalog), raise_server_exceptions=False), served)
    assert str(served.photos) in plain["/items.csv?ref=main"][1] and str(served.store.parent) in plain[
        "/spec.toml?ref=main"][1]  # what a viewer gets without it
    hidden = redacted_responses(TestClient(create_app(catalog, redact=True), raise_server_exceptions=False), served)
    for url, (headers, text) in hidden.items():
        told = [s for s in secrets if s in text or any(s in v for v in headers.values())]
        assert not told, (url, told)
    rows = list(csv.DictReader(io.StringIO(hidden["/items.csv?ref=main"][1])))
    assert rows and all(r["source_path"] and "/" not in r["source_path"] for r in rows)
    assert {r["source_path"] for r in rows} == {p.rsplit("/", 1)[-1] for p in csv_column(plain, "source_path")}
    assert "# recorded from camera-640.toml," in hidden["/spec.toml?ref=main"][1]
    gone = next(text for url, (_, text) in hidden.items() if url.startswith("/snapshots/") and url.endswith(
        tuple("0123456789")) and "no-source" in text)
    assert f"{GONE} is not readable here" in gone  # which, by its file name (it said only SOURCE_UNAVAILABLE)


def csv_column(responses: dict[str, tuple[dict[str, str], str]], name: str) -> list[str]:
    return [r[name] for r in csv.DictReader(io.StringIO(responses["/items.csv?ref=main"][1]))]


def test_a_commit_filter_naming_no_commit_of_the_history_is_ref_missing(client: TestClient, served: Served) -> None:
    """``/items?ref=v1&commit=NOPE`` answered 200 "The 0 items that match commit = NOPE" (so did ``ls``): a typo
    read as an empty selection. A commit of the history is still a filter, even one that added no rows here."""
    second = str(served.second.snapshot)
    for url in ("/items?ref=v1&commit=NOPE", "/charts?ref=v1&commit=NOPE", "/items.csv?ref=v1&commit=NOPE",
                "/items?ref=v1&where=commit+%3D+NOPE", f"/items?ref=v1&commit={second}",  # main's, not v1's
                "/items?ref=v1&where=commit+!%3D+NOPE", "/items?ref=main&where=commit+%3D+7D"):
        r = client.get(url)
        why = "too short to name a commit" if url.endswith("7D") else "no commit of this version"
        assert r.status_code == 404 and "REF_MISSING" in r.text and why in r.text, url
    typo = client.get(f"/items?ref=main&commit={second[:7]}{'Z' if second[7] != 'Z' else 'Y'}").text
    assert f"did you mean &#39;{second[:8]}&#39;?" in typo or f"did you mean '{second[:8]}'?" in typo
    assert client.get(f"/items?ref=main&commit={second[:6]}").status_code == 200
    first_commit = catalog_history(client)[0]  # the repository's first, empty commit: it added no rows
    page = client.get(f"/items?ref=main&commit={first_commit}")
    assert page.status_code == 200 and "No items" in page.text


def catalog_history(c: TestClient) -> list[str]:
    cat: Catalog = c.app.app.state.catalog  # type: ignore[attr-defined]  # ReadOnly wraps the Starlette app
    return [str(s) for s in cat.column(cat.resolve("main").snapshot, HISTORY).tolist()]


def test_ls_where_commit_naming_no_commit_is_ref_missing(served: Served) -> None:
    """The same rule for ``preprocess ls --where`` (it shares the evaluation: :mod:`preprocess.store.where`)."""
    repo = open_repo(str(served.store), create=False)
    with pytest.raises(NotFoundError) as e:
        ls(repo, "v1", parse("commit = NOPE"))
    assert e.value.code == ErrorCode.REF_MISSING
    assert ls(repo, "main", parse(f"commit = {str(served.second.snapshot)[:6]}")).matched == 3


def test_a_source_deleted_or_replaced_while_the_server_runs_is_reported(tmp_path: Path,
                                                                        small_photos: list[Path]) -> None:
    """Once an item's page had been seen, its source kept being shown beside the stored image (and its crops
    served) after the file was deleted or replaced: the comparison was kept without looking at the file again."""
    folder = tmp_path / "photos"
    folder.mkdir()
    source = folder / small_photos[0].name
    shutil.copy(small_photos[0], source)
    spec = tmp_path / "tiny.toml"
    spec.write_text('[resize]\nsize = 128\n[quality]\nmode = "fixed"\nvalue = 80\n')
    snap = run_pillow([folder], tmp_path / "s.icechunk", spec).snapshot
    c = TestClient(create_app(Catalog(str(tmp_path / "s.icechunk"))), raise_server_exceptions=False)
    item, crop = f"/snapshots/{snap}/items/0", f"/snapshots/{snap}/items/0/crop/source?x=0&y=0&w=8&h=8"

    def shown() -> tuple[bool, int, int]:
        page = c.get(item).text
        first = c.get(crop)
        again = c.get(crop, headers={"If-None-Match": first.headers.get("etag", '"none"')})
        return 'id="no-source"' not in page, first.status_code, again.status_code

    assert shown() == (True, 200, 304)
    original = source.read_bytes()
    source.unlink()
    assert shown() == (False, 404, 404)
    assert "is not readable here" in c.get(item).text
    source.write_bytes(original)  # back as it was (another inode): shown again
    assert shown() == (True, 200, 304)
    stat = source.stat()
    changed = bytearray(original)
    changed[-3] ^= 0xFF  # the same size, and (below) the same times, another file
    replacement = folder / "new"
    replacement.write_bytes(bytes(changed))
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    replacement.replace(source)
    assert shown() == (False, 404, 404)
    assert "has changed since it was stored" in c.get(item).text


def test_the_item_page_says_what_show_says_of_a_source_without_exif(client: TestClient, served: Served) -> None:
    """`show --item` says "no EXIF camera or time" (and "unknown camera at ..." for a time alone); the item
    page said "–", and "– at 2019-04-14T13:46:10"."""
    from preprocess.cli.history import _camera

    ds = open_dataset(str(served.store), ref=str(served.first.snapshot))
    rows = ds.items_at(list(range(len(ds))), ["camera_model", "capture_time"])
    for row in range(len(ds)):
        fields = {k: str(rows[k][row]) for k in ("camera_model", "capture_time")}
        page = client.get(f"/snapshots/{served.first.snapshot}/items/{row}").text
        cell = page.split('<td id="camera">', 1)[1].split("</td>", 1)[0]
        assert cell == _camera(fields), (row, fields, cell)
    assert any(not str(v) for v in rows["camera_model"])  # the case the page got wrong is here


def test_the_commit_page_gives_the_ratio_as_run_does(client: TestClient, served: Served) -> None:
    """The web commit page said "3.7× smaller" where `run`'s summary said "3.75x" for the same commit."""
    page = client.get(f"/commits/{served.first.snapshot}").text
    assert re.search(r"\(\d+\.\d\d× smaller\)", page), page


def test_the_commit_page_names_the_versions_failures_and_an_item_says_why_it_was_stored(
        client: TestClient, served: Served) -> None:
    """A walkthrough (session 7): beside "It added no items", "4 failures" read as the commit's own (it added 1;
    the link lists the version's); a flagged item said it was stored because every check passed "(or, status
    flagged, none did)", where its table showed one check passed."""
    page = client.get(f"/commits/{served.second.snapshot}").text
    assert re.search(r'id="version-failures">this version&#39;s \d+ failures?<', page) or \
        re.search(r"id=\"version-failures\">this version's \d+ failures?<", page), page
    ds = open_dataset(str(served.store), ref=str(served.lowq.snapshot))
    statuses = [str(s) for s in ds.items_table(["status"])["status"].tolist()]
    for status in ("ok", "flagged"):
        if status in statuses:
            item = client.get(f"/snapshots/{served.lowq.snapshot}/items/{statuses.index(status)}").text
            assert ("because every check passed" in item) == (status == "ok"), status
            assert ("Status flagged: even the top quality missed a check" in item) == (status == "flagged"), status
            assert "none did" not in item

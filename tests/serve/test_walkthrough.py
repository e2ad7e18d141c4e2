"""What a newcomer's walkthrough of the demo store found in the web UI: downloads that showed folders under
--redact, one similarity shown as two numbers, a source deleted while the server ran still shown, a quality
histogram whose bins overlapped, a commit filter naming no commit answering "0 items", and wording."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import numpy as np
import pytest
from starlette.testclient import TestClient

from preprocess.serve import Catalog, charts, create_app, pages
from preprocess.serve.app import _sim as sim_filter
from preprocess.store import open_dataset
from preprocess.store.cells import Record
from tests.serve.conftest import Served


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
    for name in ("download-zip", "download-csv", "charts-link"):
        href = page.split(f'id="{name}" href="', 1)[1].split('"', 1)[0]
        assert href.endswith("?ref=main"), (name, href)
    charts = client.get("/charts?ref=main").text
    assert 'href="/items?ref=main"' in charts
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
    shown = {(c.model, c.view): sim_filter(c.similarity) for c in pages.checks_of(item, {})}
    assert shown[("mobilenetv2-imagenet", "whole")] == sim_filter(item["similarity"]) == "0.9984"
    assert shown[("mobilenetv2-imagenet", "crops")] == "0.9700"
    assert shown[("dinov2-small", "whole")] == "0.9991"  # no column holds it: as recorded


def test_the_item_page_shows_each_checks_similarity_as_its_column(client: TestClient, served: Served) -> None:
    page = client.get(f"/snapshots/{served.first.snapshot}/items/0").text
    item = open_dataset(str(served.store), ref=str(served.first.snapshot)).items_at([0], ["similarity_whole"])
    whole = sim_filter(float(item["similarity_whole"][0]))
    checks = page.split('id="checks"', 1)[1].split("</table>", 1)[0]
    assert re.search(rf"<td>whole</td><td>[^<]*</td><td><b>{whole}</b>", checks), checks

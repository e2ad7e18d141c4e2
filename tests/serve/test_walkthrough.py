"""What a newcomer's walkthrough of the demo store found in the web UI: downloads that showed folders under
--redact, one similarity shown as two numbers, a source deleted while the server ran still shown, a quality
histogram whose bins overlapped, a commit filter naming no commit answering "0 items", and wording."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from preprocess.serve import Catalog, create_app
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


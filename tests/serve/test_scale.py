"""`serve` on 100,000 rows (real JPEG bytes, written by the real DatasetWriter): a grid page reads
the whole column it sorts or filters on and the page's rows of everything else, never the images
of other rows. Asserted on what is read (rows per field), not on time; the times are printed
(`-s`) and quoted in the README."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from preprocess.rows.schema import ITEM_COLUMNS
from preprocess.serve import Catalog, create_app
from preprocess.serve.grid import CARD_FIELDS
from preprocess.store import DatasetWriter, open_repo
from tests.serve.conftest import crops, item_row

ROWS = 100_000
PAGE = 48


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory, small_photos: list[Path]) -> tuple[Path, np.ndarray]:
    store = tmp_path_factory.mktemp("big") / "big.icechunk"
    images = crops(next(p for p in small_photos if p.name == "coffee.png"), 64)
    rng = np.random.default_rng(11)
    sims = rng.uniform(0.95, 1.0, ROWS).astype(np.float32)
    t = time.perf_counter()
    with DatasetWriter(open_repo(str(store), create=True), "main") as w:
        for i in range(ROWS):
            w.add_item(item_row(i, images[i % 64], similarity=float(sims[i]), quality=30 + i % 66,
                                status="flagged" if i % 50 == 0 else "ok", fingerprint=("fp-a", "fp-b")[i % 2]))
        w.commit(f"{ROWS} rows", {})
    print(f"\nwrote {ROWS} rows in {time.perf_counter() - t:.1f} s")
    return store, sims


def timed(c: TestClient, url: str) -> str:
    t = time.perf_counter()
    r = c.get(url)
    print(f"{url}: {1000 * (time.perf_counter() - t):.0f} ms")
    assert r.status_code == 200, r.text[:500]
    return r.text


@pytest.mark.slow
def test_a_grid_page_of_100k_rows_reads_one_column_and_one_page(big: tuple[Path, np.ndarray]) -> None:
    store, sims = big
    cat = Catalog(str(store))
    c = TestClient(create_app(cat))
    page = timed(c, "/items?ref=main&sort=similarity&order=asc")
    snap = cat.resolve("main").snapshot
    assert cat.reads == Counter({"similarity": ROWS, **{f: PAGE for f in CARD_FIELDS if f != "similarity"}}) + \
        Counter({"similarity": PAGE})
    lowest = int(np.argmin(sims))
    assert page.split('class="card" href="')[1].startswith(f'/snapshots/{snap}/items/{lowest}"')  # lowest first
    assert f"{sims[lowest]:.4f}" in page

    cat.reads.clear()
    timed(c, "/items?ref=main&sort=similarity&order=asc&page=2")  # the sorted column is cached
    assert cat.reads == Counter(dict.fromkeys(CARD_FIELDS, PAGE))

    cat.reads.clear()
    timed(c, "/items?ref=main&sort=bytes&order=desc&status=flagged&spec=fp-a&page=3&per_page=24")
    assert cat.reads == Counter({"bytes": ROWS, "status": ROWS, "fingerprint": ROWS}) + \
        Counter(dict.fromkeys(CARD_FIELDS, 24))

    cat.reads.clear()
    for row in (lowest, ROWS - 1):
        t = time.perf_counter()
        assert c.get(f"/snapshots/{snap}/items/{row}/thumb").status_code == 200
        print(f"thumbnail of row {row}: {1000 * (time.perf_counter() - t):.0f} ms")
    assert cat.reads["jpeg"] == 2 and max(cat.reads.values()) == 2  # one image's bytes each, and its size

    cat.reads.clear()
    timed(c, f"/snapshots/{snap}/items/{ROWS // 2}")
    assert set(cat.reads.values()) == {1} and "jpeg" not in cat.reads
    assert set(cat.reads) == {col.name for col in ITEM_COLUMNS if col.name != "jpeg"}

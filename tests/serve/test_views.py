"""The item page shows what the gate checked (issue 21): each view's similarity of each model against its
threshold, and the worst crop outlined on the stored image; a row made before views shows none."""

from __future__ import annotations

import math
import re
from pathlib import Path

from starlette.testclient import TestClient

from preprocess.serve import Catalog, create_app
from preprocess.store import open_dataset
from tests.jobs import run_pillow

SPEC = """
[pipeline]
name = "views"
[resize]
size = 320
[gate]
models = ["mobilenetv2-imagenet"]
[gate.views]
whole = 0.99
crops = 0.97
"""


def test_the_item_page_shows_every_check_and_outlines_the_worst_crop(tmp_path: Path, small_photos: list[Path]) -> None:
    spec = tmp_path / "views.toml"
    spec.write_text(SPEC)
    src = tmp_path / "in"
    src.mkdir()
    for p in small_photos:
        if p.name in ("fruits.jpg", "messi5.jpg"):
            (src / p.name).write_bytes(p.read_bytes())
    store = tmp_path / "s.icechunk"
    run_pillow([src], store, spec)
    old = tmp_path / "old.toml"
    old.write_text(SPEC.replace('models = ["mobilenetv2-imagenet"]', "").replace("[gate.views]\n", "")
                   .replace("whole = 0.99\ncrops = 0.97", "threshold = 0.99").replace("views", "old"))
    run_pillow([src], store, old)
    ds = open_dataset(str(store))
    row = ds.record(0)
    assert row["similarity_crops"] >= 0.97 and row["similarity_whole"] >= 0.99 and row["crop_box"]
    assert row["similarity"] == row["similarity_whole"]
    with TestClient(create_app(Catalog(str(store)))) as client:
        page = client.get(f"/snapshots/{ds.snapshot_id}/items/0").text
        assert 'id="checks"' in page and "crops" in page and "&ge; 0.97" in page and "&ge; 0.99" in page
        x0, y0, x1, y1 = (int(v) for v in str(row["crop_box"]).split(","))
        rect = re.search(r'id="worst-crop"[^>]*>\s*<rect x="(\d+)" y="(\d+)" width="(\d+)" height="(\d+)"', page)
        assert rect is not None and tuple(map(int, rect.groups())) == (x0, y0, x1 - x0, y1 - y0)
        whole_only = ds.record(2)  # the same source under the older spelling: no crops checked
        crops = whole_only["similarity_crops"]
        assert crops is None or math.isnan(float(crops))  # not checked
        page = client.get(f"/snapshots/{ds.snapshot_id}/items/2").text
        assert 'id="checks"' in page and 'id="worst-crop"' not in page
        # the grid's cards showed the whole view's similarity alone, where the crops view bound most rows (a
        # newcomer's walkthrough, 2026-12-07): a card shows both when both were checked, and sorts by crops
        grid = client.get("/items", params={"ref": "main", "sort": "crops"}).text
        cards = grid.split('class="card"')[1:]
        assert f"crops <b>{float(row['similarity_crops']):.4f}</b>" in grid and "whole <b>" in cards[0]
        assert "crops <b>" not in cards[-1] and "sim <b>" in cards[-1]  # a row of the older spec: whole only
        shown = [float(v) for v in re.findall(r"crops <b>([0-9.]+)</b>", grid)]
        assert shown == sorted(shown) and 'id="worst-crops"' in grid

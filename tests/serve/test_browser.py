"""`preprocess serve` in a real browser (Debian's headless Chromium through playwright) on a store
made by real jobs: the path a person follows, from the branches to a commit, its items sorted by
similarity, one item beside its source, its commit and back, and the difference of two versions.

With PREPROCESS_SCREENSHOTS=DIR (scripts/screenshots) the main pages are saved there as PNG.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from preprocess.serve import Catalog
from preprocess.store import open_dataset
from tests.serve.conftest import GONE, Served, live_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
IMAGES = "Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth, i.naturalHeight])"


@pytest.fixture(scope="module")
def base_url(catalog: Catalog) -> Iterator[str]:
    with live_server(catalog) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        pytest.fail(f"Debian's chromium is missing ({CHROMIUM}): apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A page that records every console error, page error and failed request (a CSP violation or a
    broken image would show here)."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.problems = []
    pg.on("console", lambda m: pg.problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    pg.on("pageerror", lambda e: pg.problems.append(f"pageerror: {e}"))
    # (a navigation aborts the thumbnails still loading on the page it leaves: not a failure)
    pg.on("requestfailed", lambda r: pg.problems.append(f"request failed: {r.url} {r.failure}")
          if "ERR_ABORTED" not in str(r.failure) else None)
    pg.on("response", lambda r: pg.problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    yield pg
    ctx.close()


def loaded_images(page: Any) -> list[tuple[str, int, int]]:
    """Every <img> of the page after scrolling it all into view: (src, natural width, height)."""
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page.wait_for_load_state("networkidle")
    page.evaluate("window.scrollTo(0, 0)")
    return [(src, w, h) for src, done, w, h in page.evaluate(IMAGES) if done or w]


def shot(page: Any, name: str) -> None:
    """Save a screenshot of the page (8-bit palette PNG, small enough to commit) when asked to."""
    out = os.environ.get("PREPROCESS_SCREENSHOTS")
    png = page.screenshot(full_page=True)
    img = Image.open(io.BytesIO(png))
    assert np.asarray(img.convert("L")).std() > 15, f"{name}: a blank page"
    if out:
        img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE) \
            .save(Path(out) / f"{name}.png", optimize=True)


def test_from_a_commit_to_its_lowest_similarity_image_beside_its_source_and_back(  # noqa: PLR0915 - one user path
        page: Any, base_url: str, served: Served) -> None:
    page.goto(base_url + "/")
    assert page.inner_text("#branches").count("\n") >= 2
    assert "main" in page.inner_text("#branches") and "low-q" in page.inner_text("#branches")
    assert "v1" in page.inner_text("#tags")
    shot(page, "refs")

    page.click("#branches >> text=main")
    assert page.url.endswith("/log?ref=main")
    rows = page.locator("#commits tbody tr")
    assert rows.count() == 2
    assert "second batch" in rows.nth(0).inner_text() and "first cameras" in rows.nth(1).inner_text()
    shot(page, "log")

    rows.nth(1).locator("a.id").click()  # the first commit (tagged v1)
    assert served.first.snapshot is not None
    assert page.url.endswith(f"/commits/{served.first.snapshot}")
    assert page.inner_text("#message").endswith("first cameras")
    sections = {s.lower().split(" (")[0] for s in page.locator("#provenance section h3").all_inner_texts()}
    assert {"spec", "model", "engine", "software", "inputs", "counts", "timings"} <= sections
    assert "camera-640" in page.inner_text("#summary") and "mobilenetv2-imagenet" in page.inner_text("#summary")
    assert "long-side" in page.inner_text("#prov-spec") and "0.99" in page.inner_text("#prov-spec")
    shot(page, "commit")

    page.click("text=Browse this version's")
    cards = page.locator("#grid a.card")
    assert cards.count() == 5
    page.select_option("#sort", "similarity")
    page.select_option("#order", "asc")
    page.click("#apply")
    assert "sort=similarity" in page.url
    sims = [float(t) for t in page.locator("#grid a.card .facts b").all_inner_texts()]
    assert len(sims) == 5 and sims == sorted(sims)
    thumbs = loaded_images(page)
    assert len(thumbs) == 5 and all(w > 0 and h > 0 and max(w, h) <= 256 for _, w, h in thumbs)
    shot(page, "items")
    grid_url = page.url

    page.locator("#grid a.card").first.click()
    assert f"{sims[0]:.4f}" == page.inner_text("#similarity")
    images = {src.rsplit("/", 1)[-1]: (w, h) for src, w, h in loaded_images(page)}
    w, h = images["stored"]
    assert (w, h) == (int(page.get_attribute("#actual", "width")), int(page.get_attribute("#actual", "height")))
    assert 0 < max(w, h) <= 640 and f"{w}×{h}" in page.inner_text("#lineage")  # the stored image, 1:1
    assert images["source"] == (w, h)  # the source, resized to the stored size, beside it
    for zoom in ("zoom-source", "zoom-stored", "zoom-diff"):
        assert images[zoom][0] > 0 and images[zoom] == images["zoom-source"]
    lineage = page.inner_text("#lineage")
    assert str(served.photos / "first") in lineage and "camera-640" in lineage and "mobilenetv2-imagenet" in lineage
    shot(page, "item")

    page.click("#commit a.id")
    page.wait_for_load_state("load")
    assert page.url.endswith(f"/commits/{served.first.snapshot}")
    assert page.inner_text("#message").endswith("first cameras")
    page.go_back()
    assert page.inner_text("#similarity") == f"{sims[0]:.4f}"
    page.go_back()
    assert page.url == grid_url
    assert page.problems == []


def test_an_item_whose_source_is_gone_says_so(page: Any, base_url: str, served: Served) -> None:
    page.goto(base_url + "/items?ref=main")
    assert len(loaded_images(page)) == 8
    page.click(f"#grid a.card[href] >> text={GONE}")
    assert "not readable here" in page.inner_text("#no-source")
    images = {src: w for src, w, _ in loaded_images(page)}
    assert not [src for src in images if "/compare/" in src or "/crop/source" in src]  # nothing of the source
    stored = [w for src, w in images.items() if src.endswith("/stored")]
    assert stored and stored[0] > 0
    assert page.problems == []


def test_comparing_two_versions_shows_what_was_added_and_removed(page: Any, base_url: str) -> None:
    page.goto(base_url + "/")
    page.fill("form.compare input[name=a]", "main")
    page.fill("form.compare input[name=b]", "low-q")
    page.click("form.compare button")
    assert "/diff?a=main&b=low-q" in page.url
    counts = page.inner_text("#counts")
    # low-q = v1's five items + all eight photos at q40 (another spec: other items); main = v1 + three
    assert "+8 added, −3 removed, 0 changed, 5 unchanged" in counts
    # issue 23: the three sources main stored with its spec are in low-q under the q40 spec: pairs, side by side;
    # the other five are v1's, kept in low-q too and stored again at q40: pairs, not new sources
    assert ("8 stored under another spec (5 also kept under the first), +0 new sources, −0 sources gone"
            in page.inner_text("#pair-counts"))
    assert page.locator("#pairs tbody tr").count() == 8
    assert page.locator("#added a.card").count() == 0 and page.locator("#removed a.card").count() == 0
    assert "low-q40" in page.inner_text("#summary")
    thumbs = loaded_images(page)
    assert len(thumbs) == 2 * 8 and all(w > 0 for _, w, _ in thumbs)
    shot(page, "diff")
    page.locator("#pairs tbody tr a").first.click()
    assert "/snapshots/" in page.url and page.inner_text("#name")
    assert page.problems == []


def test_a_bad_ref_is_a_404_page_with_the_clis_hint(page: Any, base_url: str) -> None:
    response = page.goto(base_url + "/items?ref=nope")
    assert response.status == 404
    assert "REF_MISSING" in page.inner_text("#error")
    assert "branches: low-q, main" in page.inner_text("#hint")


# -- issue 23: compare at 100%, search and filter, charts -------------------------------------------------

NATURAL = "e => [e.naturalWidth, e.naturalHeight, e.clientWidth, e.clientHeight, e.complete]"


def test_the_comparer_shows_two_images_at_1_to_1_and_moves(page: Any, base_url: str, served: Served) -> None:
    page.goto(f"{base_url}/snapshots/{served.first.snapshot}/items/0?side=256")
    page.wait_for_load_state("networkidle")
    for view in ("#view-a", "#view-b"):
        nw, nh, cw, ch, done = page.eval_on_selector(view, NATURAL)
        assert done and nw > 0 and (nw, nh) == (cw, ch), (view, nw, nh, cw, ch)  # one stored pixel, one screen pixel
    assert page.is_visible("#comparer .modes")  # the script runs (the CSP allows this server's scripts only)
    shot(page, "compare-side")

    page.click("#comparer .modes button[data-mode=slider]")
    assert page.get_attribute("#comparer", "data-mode") == "slider"
    a_box, b_box = page.locator("#view-a").bounding_box(), page.locator("#view-b").bounding_box()
    assert a_box == b_box  # stacked: pixel over pixel
    clip = page.eval_on_selector("#view-b", "e => getComputedStyle(e).clipPath")
    assert clip == "inset(0px 0px 0px 50%)"
    page.focus("#split")
    for _ in range(20):
        page.keyboard.press("ArrowLeft")
    assert page.eval_on_selector("#view-b", "e => getComputedStyle(e).clipPath") == "inset(0px 0px 0px 30%)"
    x, y, w, h = b_box["x"], b_box["y"], b_box["width"], b_box["height"]
    page.mouse.move(x + w * 0.5, y + h / 2)
    page.mouse.down()
    page.mouse.move(x + w * 0.8, y + h / 2, steps=4)
    page.mouse.up()
    dragged = page.eval_on_selector("#view-b", "e => getComputedStyle(e).clipPath")
    assert dragged.startswith(("inset(0px 0px 0px 8", "inset(0px 0px 0px 7")), dragged
    shot(page, "compare-slider")

    page.click("#comparer .modes button[data-mode=flicker]")
    seen = set()
    for _ in range(12):
        seen.add(page.eval_on_selector("#view-b", "e => getComputedStyle(e.parentElement).visibility"))
        page.wait_for_timeout(150)
    assert seen == {"visible", "hidden"}  # it flickers between the two
    page.click("#comparer .modes button[data-mode=side]")
    assert page.eval_on_selector("#view-b", "e => getComputedStyle(e).clipPath") == "none"
    assert page.problems == []


def test_a_search_by_file_name_and_a_filter_by_commit_return_the_right_rows(page: Any, base_url: str,
                                                                             served: Served) -> None:
    ds = open_dataset(str(served.store), ref="main")
    names = [Path(str(p)).name for p in ds.items_table(["source_path"])["source_path"]]
    page.goto(base_url + "/items?ref=main")
    page.fill("#search", "fruit")
    page.click("#apply")
    assert "q=fruit" in page.url
    assert page.locator("#grid a.card .name").all_inner_texts() == ["fruits.jpg"]
    shot(page, "search")

    page.goto(base_url + "/items?ref=main")
    page.select_option("#commit", str(served.second.snapshot))
    page.click("#apply")
    shown = sorted(page.locator("#grid a.card .name").all_inner_texts())
    added = sorted(names[i] for i in range(len(ds)) if ds.added_by(i) == served.second.snapshot)
    assert shown == added and len(shown) == 3
    assert str(served.second.snapshot) in page.inner_text("#where")
    href = page.get_attribute("#download-zip", "href")
    assert href is not None and f"commit={served.second.snapshot}" in href
    assert page.problems == []


def test_a_histogram_page_renders(page: Any, base_url: str) -> None:
    page.goto(base_url + "/charts?ref=main")
    for name in ("similarity", "quality", "bytes"):
        bars = page.locator(f"#hist-{name} rect.bar")
        assert bars.count() >= 1
        heights = [b["height"] for b in (bars.nth(i).bounding_box() for i in range(bars.count())) if b]
        assert max(heights) > 50, name  # the tallest bar fills most of the plot
    assert page.locator("#over-commits svg").count() == 3
    shot(page, "charts")
    page.locator("#over-commits a").first.click()
    assert "commit=" in page.url and page.locator("#hist-bytes rect.bar").count() >= 1
    assert page.problems == []

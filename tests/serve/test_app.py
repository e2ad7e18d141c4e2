"""`preprocess serve` at the HTTP level (Starlette's TestClient, no browser) on a store made by real
jobs: every page, read-only (405 for every other method, nothing in the store changes), bad refs and
parameters, path traversal on every parameter, caching headers, formats, and the Host check."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from preprocess.core.errors import ConfigError, InputError
from preprocess.pipeline.formats import sniff
from preprocess.serve import Catalog, create_app
from preprocess.serve.renditions import for_browser, thumbnail
from preprocess.serve.server import LOOPBACK
from preprocess.store import DatasetWriter, open_dataset, open_repo, refs
from tests.serve.conftest import GONE, REWRITTEN, Served, crops, item_row


@pytest.fixture(scope="module")
def client(catalog: Catalog) -> Iterator[TestClient]:
    with TestClient(create_app(catalog), raise_server_exceptions=False) as c:
        yield c


def pages(served: Served) -> list[str]:
    """A URL of every page and picture kind of the served store."""
    snap = served.first.snapshot
    return ["/", "/log?ref=main", "/log?ref=low-q", "/log?ref=v1", f"/commits/{snap}", "/commits/main",
            "/commits/v1", f"/commits/{str(snap)[:6].lower()}", "/items?ref=main",
            "/items?ref=main&sort=similarity&order=asc", "/items?ref=low-q&status=flagged&per_page=24",
            "/failures?ref=main", "/diff", "/diff?a=main&b=low-q", "/diff?a=v1&b=main",
            f"/snapshots/{snap}/items/0", f"/snapshots/{snap}/items/0/thumb", f"/snapshots/{snap}/items/0/stored",
            f"/snapshots/{snap}/items/0/compare/source", f"/snapshots/{snap}/items/0/compare/zoom-diff",
            f"/snapshots/{snap}/items/0/crop/source", f"/snapshots/{snap}/items/0/crop/stored?x=8&y=8&w=32&h=32",
            f"/snapshots/{snap}/items/0/download", f"/snapshots/{snap}/items/0?side=128&b=source&a=stored",
            "/charts?ref=main", f"/charts?ref=main&commit={snap}", "/items?ref=main&q=fruits&where=quality+%3E%3D+30",
            "/items.csv?ref=main", "/items.zip?ref=low-q&status=ok", "/spec.toml?ref=v1",
            "/healthz", "/static/style.css", "/static/favicon.svg", "/static/compare.js"]


def test_every_page_answers_and_says_what_the_store_holds(client: TestClient, served: Served) -> None:
    for url in pages(served):
        r = client.get(url)
        assert r.status_code == 200, (url, r.text[:500])
        assert r.headers["content-security-policy"].startswith("default-src 'none'")
        assert r.headers["x-content-type-options"] == "nosniff"
    home = client.get("/").text
    assert "low-q" in home and "v1" in home and "second batch" in home
    log = client.get("/log?ref=main").text
    assert log.index("second batch") < log.index("first cameras")
    failures = client.get("/failures?ref=main").text
    assert "truncated.jpg" in failures and "E_TRUNCATED" in failures and "the file ends early" in failures
    grid = client.get("/items?ref=main&status=flagged").text
    assert "No items match these filters" in grid or "s-flagged" in grid
    snap = served.first.snapshot
    assert client.get(f"/snapshots/{snap}/items/0/thumb").headers["content-type"] == "image/jpeg"
    item = client.get(f"/snapshots/{snap}/items/0").text  # its menu stays on that version (it went to main)
    assert f'href="/items?ref={snap}"' in item and f'href="/log?ref={snap}"' in item


def test_the_items_grid_sorts_filters_and_pages_by_the_columns(client: TestClient, served: Served) -> None:
    ds = open_dataset(str(served.store), ref="low-q")
    t = ds.items_table(["similarity", "quality", "status", "fingerprint"])
    html = client.get("/items?ref=low-q&sort=similarity&order=asc&per_page=24").text
    rows = [int(x.split('/items/')[1].split('"')[0]) for x in html.split('class="card" href="')[1:]]
    assert rows == [int(i) for i in np.argsort(t["similarity"], kind="stable")]
    desc = client.get("/items?ref=low-q&sort=quality&order=desc").text
    rows = [int(x.split('/items/')[1].split('"')[0]) for x in desc.split('class="card" href="')[1:]]
    assert [int(t["quality"][r]) for r in rows] == sorted((int(q) for q in t["quality"]), reverse=True)
    fp = str(served.lowq.fingerprint)
    only = client.get(f"/items?ref=low-q&spec={fp}&quality_min=40&quality_max=40").text
    assert only.count('class="card"') == int(np.sum(t["fingerprint"] == fp)) == 8
    low = client.get("/items?ref=low-q&similarity_max=0.99").text
    assert low.count('class="card"') == int(np.sum(t["similarity"].astype(np.float64) <= 0.99))
    paged = client.get("/items?ref=low-q&per_page=24&page=1").text
    assert paged.count('class="card"') == 13 and "page 1 of" not in paged


def test_writes_are_refused_on_every_path(client: TestClient, served: Served) -> None:
    for url in [*pages(served), "/nowhere", "/items/0"]:
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            r = client.request(method, url, content=b"x")
            assert r.status_code == 405, (method, url)
            assert r.headers["allow"] == "GET, HEAD"
        assert client.head(url).status_code in (200, 404)


def test_browsing_changes_nothing_in_the_store(served: Served, catalog: Catalog) -> None:
    def files() -> dict[str, tuple[int, int, str]]:
        out = {}
        for p in sorted(served.store.rglob("*")):
            if p.is_file():
                out[str(p)] = (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        return out

    before = files()
    with TestClient(create_app(Catalog(str(served.store)))) as c:
        for url in pages(served):
            assert c.get(url).status_code == 200
    assert files() == before


def test_bad_refs_rows_and_ids_are_404_pages_with_the_clis_hint(client: TestClient, served: Served,
                                                                catalog: Catalog) -> None:
    with pytest.raises(ConfigError) as cli:
        refs.resolve_ref(catalog.repo, "nope")
    snap = served.first.snapshot
    for url in ["/items?ref=nope", "/log?ref=nope", "/commits/nope", "/failures?ref=nope", "/diff?a=main&b=nope",
                "/snapshots/NOTASNAPSHOT/items/0", "/snapshots/0000000000000000000A/items/0",
                "/snapshots/0000000000000000000A/items/0/thumb", f"/snapshots/{snap}/items/99",
                f"/snapshots/{snap}/items/99/thumb", f"/snapshots/{snap}/items/-1", "/no/such/page"]:
        r = client.get(url)
        assert r.status_code == 404, url
        assert "Traceback" not in r.text
    page = client.get("/items?ref=nope").text
    assert "error[REF_MISSING]" in page and cli.value.hint in page.replace("&#39;", "'")
    assert "ITEM_MISSING" in client.get(f"/snapshots/{snap}/items/99").text
    assert client.get(f"/snapshots/{snap}/items/99/thumb").text.startswith("error[ITEM_MISSING]")


def test_bad_parameters_are_400_pages_naming_the_parameter(client: TestClient) -> None:
    for query, name in [("sort=evil", "sort"), ("order=up", "order"), ("status=gone", "status"),
                        ("per_page=7", "per_page"), ("page=0", "page"), ("page=abc", "page"), ("page=99", "page"),
                        ("similarity_min=nan", "similarity_min"), ("quality_max=1e400", "quality_max"),
                        ("bytes_min=12abc", "bytes_min"), ("spec=%3Cscript%3E", "spec")]:
        r = client.get(f"/items?ref=main&{query}")
        assert r.status_code == 400, query
        assert "error[SERVE_PARAM]" in r.text and f"bad {name}=" in r.text, query
        assert "<script>" not in r.text
    assert client.get("/log?ref=main&page=2").status_code == 400


TRAVERSALS = ["../../../../etc/passwd", "..%2F..%2F..%2F..%2Fetc%2Fpasswd", "/etc/passwd", "%2Fetc%2Fpasswd",
              "....//....//etc/passwd", "..\\..\\etc\\passwd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "%00", "main%00.."]


def test_path_traversal_on_every_parameter_reaches_no_file(client: TestClient, served: Served) -> None:
    snap = served.first.snapshot
    secret = "root:x:0:0"
    for t in TRAVERSALS:
        urls = [f"/items?ref={t}", f"/log?ref={t}", f"/failures?ref={t}", f"/commits/{t}", f"/diff?a={t}&b=main",
                f"/diff?a=main&b={t}", f"/items?ref=main&spec={t}", f"/items?ref=main&sort={t}",
                f"/snapshots/{t}/items/0", f"/snapshots/{t}/items/0/thumb", f"/snapshots/{snap}/items/{t}",
                f"/snapshots/{snap}/items/0/compare/{t}", f"/static/{t}", f"/{t}"]
        for url in urls:
            r = client.get(url)
            assert r.status_code in (400, 404), (url, r.status_code)
            assert secret not in r.text and "Traceback" not in r.text
    assert client.get("/static/../pyproject.toml").status_code == 404
    assert client.get("/static/%2e%2e/pyproject.toml").status_code == 404


def test_pictures_are_immutable_and_cached(client: TestClient, served: Served) -> None:
    snap = served.first.snapshot
    ds = open_dataset(str(served.store), ref=str(snap))
    for kind in ("thumb", "stored", "compare/zoom-source"):
        url = f"/snapshots/{snap}/items/1/{kind}"
        r = client.get(url)
        assert r.status_code == 200
        from_source = kind.startswith("compare/")  # the source may be deleted or rewritten: asked again each time
        assert r.headers["cache-control"] == ("private, no-cache" if from_source else
                                              "private, max-age=31536000, immutable")
        again = client.get(url, headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
    stored = client.get(f"/snapshots/{snap}/items/1/stored")
    assert stored.content == ds.jpeg(1) and stored.headers["content-type"] == "image/jpeg"  # as stored
    thumb = Image.open(io.BytesIO(client.get(f"/snapshots/{snap}/items/1/thumb").content))
    assert max(thumb.size) == min(256, max(ds.record(1)["width"], ds.record(1)["height"]))
    page = client.get("/items?ref=main")
    assert page.headers["cache-control"] == "no-cache"  # branches move


def test_items_whose_source_is_gone_or_changed_say_why(client: TestClient, served: Served) -> None:
    snap = served.second.snapshot
    ds = open_dataset(str(served.store), ref=str(snap))
    paths = ds.items_table(["source_path"])["source_path"].tolist()
    gone = client.get(f"/snapshots/{snap}/items/{next(i for i, p in enumerate(paths) if p.endswith(GONE))}").text
    assert "not readable here" in gone and "compare/source" not in gone
    changed = client.get(f"/snapshots/{snap}/items/{next(i for i, p in enumerate(paths) if p.endswith(REWRITTEN))}")
    assert "has changed since it was stored" in changed.text
    row = next(i for i, p in enumerate(paths) if p.endswith(REWRITTEN))
    assert client.get(f"/snapshots/{snap}/items/{row}/compare/source").status_code == 404


def test_the_host_header_is_checked_on_loopback(catalog: Catalog) -> None:
    with TestClient(create_app(catalog, hosts=LOOPBACK), base_url="http://127.0.0.1:8080") as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/healthz", headers={"Host": "localhost:8080"}).status_code == 200
        assert c.get("/healthz", headers={"Host": "[::1]:8080"}).status_code == 200
        assert c.get("/healthz", headers={"Host": "evil.example"}).status_code == 400
        assert c.get("/", headers={"Host": "127.0.0.1.evil.example:8080"}).status_code == 400


# -- formats and the diff's changed items, on stores written row by row ----------------------------


def test_stored_bytes_go_to_the_browser_as_they_are_when_it_shows_them(small_photos: list[Path]) -> None:
    photo = next(p for p in small_photos if p.name == "fruits.jpg")
    rgb = np.asarray(Image.open(photo).convert("RGB").resize((64, 48)))
    encoded = {"jpeg": crops(photo, 1)[0], "png": crops(photo, 1, fmt="PNG")[0],
               "webp": bytes(imagecodecs.webp_encode(rgb, level=70)),
               "avif": bytes(imagecodecs.avif_encode(rgb, level=50)),
               "jxl": bytes(imagecodecs.jpegxl_encode(rgb, level=80)),
               "jpeg2000": bytes(imagecodecs.jpeg2k_encode(rgb, level=40)),
               "tiff": crops(photo, 1, fmt="TIFF")[0]}
    for fmt, data in encoded.items():  # what the browser is sent depends on the one signature table
        assert sniff.sniff(data) == fmt.upper()
    for fmt in ("jpeg", "png", "webp", "avif"):
        assert for_browser(encoded[fmt]) == (encoded[fmt], f"image/{fmt}")
    body, media = for_browser(encoded["tiff"])  # not shown by browsers: a PNG of the same pixels
    assert media == "image/png" and np.array_equal(np.asarray(Image.open(io.BytesIO(body))),
                                                   np.asarray(Image.open(io.BytesIO(encoded["tiff"])).convert("RGB")))
    for fmt in ("jxl", "jpeg2000"):  # decoded by preprocess.store.reader.decode once it knows the format
        try:
            body, media = for_browser(encoded[fmt])
        except InputError:
            continue
        assert media == "image/png" and Image.open(io.BytesIO(body)).size == (64, 48)
    assert Image.open(io.BytesIO(thumbnail(encoded["tiff"], box=32))).size == (32, 21)  # 48x32, never enlarged


@pytest.fixture(scope="module")
def changed_store(tmp_path_factory: pytest.TempPathFactory, small_photos: list[Path]) -> Path:
    """main: 6 rows (4 JPEG, 2 TIFF). ``redo``, from the first (empty) snapshot: the same six keys,
    rows 0-1 stored again at another quality (changed), and two new rows (added)."""
    store = tmp_path_factory.mktemp("changed") / "ds.icechunk"
    repo = open_repo(str(store), create=True)
    photo = next(p for p in small_photos if p.name == "fruits.jpg")
    jpegs, tiffs, redone = crops(photo, 4), crops(photo, 2, fmt="TIFF"), crops(photo, 4, size=(40, 30))
    rows = [item_row(i, d) for i, d in enumerate(jpegs)]
    rows += [item_row(i, d, fmt="tiff", status="source") for i, d in enumerate(tiffs, start=4)]
    with DatasetWriter(repo, "main") as w:
        for r in rows:
            w.add_item(r)
        w.commit("six rows", {})
    refs.create_branch(repo, "redo", refs.history(repo, branch="main")[-1].id)
    again = [item_row(i, redone[i], size=(40, 30), quality=30, similarity=0.95) for i in (0, 1)]
    again += rows[2:] + [item_row(i, redone[i - 8], size=(40, 30)) for i in (10, 11)]
    with DatasetWriter(repo, "redo") as w:
        for r in again:
            w.add_item(r)
        w.commit("redo", {})
    return store


def test_a_tiff_row_is_shown_as_png_and_the_diff_shows_changed_items_before_and_after(changed_store: Path) -> None:
    cat = Catalog(str(changed_store))
    main, redo = (refs.resolve_ref(cat.repo, name).snapshot for name in ("main", "redo"))
    with TestClient(create_app(cat)) as c:
        r = c.get(f"/snapshots/{main}/items/4/stored")
        assert r.headers["content-type"] == "image/png" and Image.open(io.BytesIO(r.content)).size == (48, 32)
        assert c.get(f"/snapshots/{main}/items/5/thumb").headers["content-type"] == "image/jpeg"
        assert "/nowhere/img_000004.jpg is not readable here" in c.get(f"/snapshots/{main}/items/4").text
        d = c.get("/diff?a=main&b=redo").text
        assert "<b>+2</b> added" in d and "<b>−0</b> removed" in d and "<b>2</b> changed, 4 unchanged" in d
        changed = d[d.index('id="changed"'):]
        for row in (0, 1):  # before (main) and after (redo), each linked and with its thumbnail
            assert f"/snapshots/{main}/items/{row}/thumb" in changed
            assert f"/snapshots/{redo}/items/{row}/thumb" in changed
        assert "<th>quality</th><td>60</td><td>→ 30</td>" in changed
        for url in [u.split('"')[0] for u in changed.split('src="')[1:]]:
            assert c.get(url).status_code == 200


def test_ref_tilde_n_works_in_urls(client: TestClient, served: Served) -> None:
    # issue 14: REF~N wherever a REF is taken, the web UI's URLs included (through refs.resolve_ref)
    commit = client.get("/commits/main~1")
    assert commit.status_code == 200 and str(served.first.snapshot) in commit.text
    log = client.get("/log?ref=main~1").text
    assert "first cameras" in log and "second batch" not in log
    assert client.get("/diff?a=main~1&b=main").status_code == 200
    missing = client.get("/commits/main~9")
    assert missing.status_code == 404 and "REF_MISSING" in missing.text


def test_the_first_snapshot_s_page_says_it_added_nothing(client: TestClient) -> None:
    """Its page read "The - items it added" (a newcomer's walkthrough, 2026-12-06)."""
    n = 0
    while client.get(f"/commits/main~{n + 1}").status_code == 200:
        n += 1
    first = client.get(f"/commits/main~{n}").text
    assert "It added no items (the repository" in first and "The - items" not in first
    assert "items it added</a>" in client.get("/commits/main").text

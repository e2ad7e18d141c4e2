"""The web UI against odd URLs, deleted snapshots, odd file names and viewers it should not tell
everything (issue 25 items 1, 9 and 13). A small real store made by `run` on real photos."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import socket
import tomllib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from preprocess.serve import Catalog
from preprocess.serve.app import create_app
from preprocess.store import open_repo, refs
from tests.jobs import run_pillow

ODD = os.fsdecode(b"caf\xe9 \x1b[2Jx.jpg")  # not UTF-8, and an ESC


@dataclass
class Small:
    store: Path
    folder: Path
    first: str  # snapshot ids
    second: str


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, small_photos: list[Path]) -> Small:
    base = tmp_path_factory.mktemp("hostile-serve")
    a, b = base / "a", base / "b"
    a.mkdir()
    b.mkdir()
    shutil.copy(small_photos[0], a / ODD)
    shutil.copy(small_photos[1], b / small_photos[1].name)
    spec = base / "tiny.toml"
    spec.write_text('[resize]\nsize = 256\n[quality]\nmode = "fixed"\nvalue = 80\n')
    first = run_pillow([a], base / "s.icechunk", spec).snapshot
    second = run_pillow([b], base / "s.icechunk", spec).snapshot
    assert first and second
    return Small(base / "s.icechunk", a, first, second)


def client(small: Small, *, redact: bool = False) -> TestClient:
    return TestClient(create_app(Catalog(str(small.store)), redact=redact), raise_server_exceptions=False)


def test_odd_page_numbers_are_a_bad_request(small: Small) -> None:
    """``page=²`` ("²".isdigit() is True) and a 5,000-digit page answered 500."""
    c = client(small)
    for page in ("%C2%B2", "9" * 5000, "-1", "1.5", "0x1"):
        for url in (f"/log?ref=main&page={page}", f"/failures?ref=main&page={page}", f"/items?ref=main&page={page}",
                    f"/diff?a=main~1&b=main&page={page}"):
            r = c.get(url)
            assert r.status_code == 400 and "SERVE_PARAM" in r.text, (url[:60], r.status_code)


def test_a_number_too_big_for_a_float_is_a_bad_request(small: Small) -> None:
    """Round 6: a 400-digit ``quality_min`` or ``per_page`` (under Python's 4,300-digit limit) answered 500:
    ``math.isfinite`` raised OverflowError on the int, on the grid, the charts and both downloads."""
    c = client(small)
    for name in ("page", "per_page", "quality_min", "bytes_max", "similarity_min"):
        for path in ("/items", "/charts", "/items.zip", "/items.csv"):
            r = c.get(f"{path}?ref=main&{name}={'9' * 400}")
            assert r.status_code == 400 and "SERVE_PARAM" in r.text, (path, name, r.status_code)


def test_a_commit_message_cannot_write_into_the_downloaded_spec(tmp_path: Path, small_photos: list[Path]) -> None:
    """Round 6: the spec download put the commit message in a ``#`` comment as it was, so a message with a
    newline wrote TOML: ``-m $'hi\\n[gate]\\nthreshold = 0.1'`` made a file that declared [gate] twice
    (`run --spec` refused it), or one whose settings were the message's."""
    (tmp_path / "a").mkdir()
    shutil.copy(small_photos[0], tmp_path / "a" / small_photos[0].name)
    spec = tmp_path / "tiny.toml"
    spec.write_text('[resize]\nsize = 256\n[quality]\nmode = "fixed"\nvalue = 80\n')
    message = 'hi\n[gate]\nthreshold = 0.1\r\nwho = "\x1b[2J"'
    run_pillow([tmp_path / "a"], tmp_path / "s.icechunk", spec, message=message)
    c = TestClient(create_app(Catalog(str(tmp_path / "s.icechunk"))), raise_server_exceptions=False)
    r = c.get("/spec.toml?ref=main")
    assert r.status_code == 200
    parsed = tomllib.loads(r.text)  # one [gate], the recorded one
    assert "who" not in parsed and parsed["gate"].get("threshold") != 0.1
    assert r.text.count("\n[gate]") == 1 and "\x1b" not in r.text


def test_a_snapshot_deleted_by_gc_is_not_found(small: Small) -> None:
    """A snapshot the server had cached, then deleted by gc after a reset: its images answered 500. What
    needs its data again is 404; a page made only of what the server had read may still be shown."""
    repo_copy = small.store.parent / "gc.icechunk"
    shutil.copytree(small.store, repo_copy)
    c = TestClient(create_app(Catalog(str(repo_copy))), raise_server_exceptions=False)
    pages = [f"/snapshots/{small.second}/items/1", f"/snapshots/{small.second}/items/1/thumb",
             f"/snapshots/{small.second}/items/1/stored", f"/commits/{small.second}", f"/items?ref={small.second}"]
    assert [c.get(url).status_code for url in pages] == [200] * len(pages)  # seen, and cached
    repo = open_repo(str(repo_copy), create=False)
    refs.reset_branch(repo, "main", small.first)
    assert refs.gc(repo, timedelta(0)).counts["snapshots_deleted"] == 1
    for url in pages:
        r = c.get(url)
        assert r.status_code in (200, 404), (url, r.status_code)  # never a 500
        assert r.status_code == 404 or url in (pages[0], pages[1]), url  # cached: the item page, the thumbnail
    crop = c.get(f"/snapshots/{small.second}/items/1/crop/stored?x=0&y=0&w=8&h=8")  # not made before: needs the data
    assert crop.status_code == 404 and "REF_MISSING" in crop.text, crop.text
    fresh = TestClient(create_app(Catalog(str(repo_copy))), raise_server_exceptions=False)
    for url in pages:
        r = fresh.get(url)
        assert r.status_code == 404 and "REF_MISSING" in r.text, (url, r.status_code)


def test_rows_of_a_snapshot_gc_deleted_are_not_found(tmp_path: Path, small_photos: list[Path]) -> None:
    """A walkthrough (session 7): after a reset and gc, the item pages of the deleted snapshot's other rows
    (their stored rows not read before) answered 500 STORE_IO "object not found", hint "check the dataset's
    storage", for as long as the server ran. They are 404 REF_MISSING."""
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, photos in ((a, small_photos[:2]), (b, small_photos[2:8])):
        folder.mkdir()
        for p in photos:
            shutil.copy(p, folder / p.name)
    spec = tmp_path / "tiny.toml"
    spec.write_text('[resize]\nsize = 128\n[quality]\nmode = "fixed"\nvalue = 80\n[gate.views]\nwhole = 0.99\n')
    first = run_pillow([a], tmp_path / "s.icechunk", spec).snapshot
    second = run_pillow([b], tmp_path / "s.icechunk", spec).snapshot
    assert first and second
    c = TestClient(create_app(Catalog(str(tmp_path / "s.icechunk"))), raise_server_exceptions=False)
    assert c.get(f"/snapshots/{second}/items/0").status_code == 200  # the snapshot is cached
    repo = open_repo(str(tmp_path / "s.icechunk"), create=False)
    refs.reset_branch(repo, "main", first)
    assert refs.gc(repo, timedelta(0)).counts["snapshots_deleted"] == 1
    for row in range(1, 8):
        r = c.get(f"/snapshots/{second}/items/{row}")
        assert r.status_code == 404 and "REF_MISSING" in r.text, (row, r.status_code, r.text[-300:])


def test_a_name_that_is_not_utf8_is_shown_escaped(small: Small) -> None:
    c = client(small)
    shown = f"{small.folder}/caf\\351 \\033[2Jx.jpg"
    for url in (f"/snapshots/{small.first}/items/0", "/items?ref=main"):
        r = c.get(url)
        assert r.status_code == 200 and "\x1b" not in r.text
        assert shown in r.text or "caf\\351 \\033[2Jx.jpg" in r.text, url
    item = c.get(f"/snapshots/{small.first}/items/0").text
    assert f'"{shown}"' in item.replace("&#34;", '"').replace("&quot;", '"')
    assert 'id="no-source"' not in item  # the source was found by the name it stands for


def test_redact_hides_folders_host_and_versions(small: Small) -> None:
    """Issue 25 item 13: every viewer saw absolute paths, the host name and versions (fine on 127.0.0.1;
    for --host 0.0.0.0 there is --redact)."""
    secrets = (str(small.folder), str(small.store.parent), socket.gethostname(),
               importlib.metadata.version("icechunk"))
    urls = ["/", "/log?ref=main", f"/commits/{small.second}", "/items?ref=main", "/failures?ref=main",
            f"/snapshots/{small.first}/items/0", f"/snapshots/{small.second}/items/1", "/diff?a=main~1&b=main",
            "/commits/NOSUCHREF", f"/snapshots/{small.second}/items/99"]
    plain = [client(small).get(url).text for url in urls]
    assert all(any(s in page for page in plain) for s in secrets)  # what a viewer sees without it
    hidden = client(small, redact=True)
    for url in urls:
        r = hidden.get(url)
        assert r.status_code in (200, 404), url
        assert not [s for s in secrets if s in r.text], url
    assert "caf\\351 \\033[2Jx.jpg" in hidden.get(f"/snapshots/{small.first}/items/0").text  # its file name


def test_a_snapshot_id_with_a_final_newline_is_not_found(small: Small) -> None:
    """``^...$`` matched 'ID\\n' (a regex's $ matches before a final newline): its item page answered 200 and
    its pictures and download 500 (STORE_IO: invalid snapshot id)."""
    c = client(small)
    for what in ("", "/thumb", "/stored", "/download", "/compare/source", "/crop/stored?x=0&y=0&w=8&h=8"):
        r = c.get(f"/snapshots/{small.first}%0A/items/0{what}")
        assert r.status_code == 404, (what, r.status_code)

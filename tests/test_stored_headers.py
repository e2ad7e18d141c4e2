"""Stored bytes whose header gives another size than their row records (a damaged or hostile store): every
face that decodes stored bytes (the training reader, ``preprocess.open_dataset``, the web UI) refuses them
with E_CORRUPT before decoding a pixel; the rows around them read as before. Without the check a header
claiming 60000x60000 was decoded for 4-26 s (and gigabytes) before failing, and a header with its sides
swapped gave a silently wrong image. And a download of a row whose source name is not ASCII. A real
icechunk store written with the real writer."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from preprocess import open_dataset
from preprocess.core.errors import InputError
from preprocess.pipeline.images import decode_rgb
from preprocess.pipeline.stored_pixels import check_recorded, decode_rgb_into
from preprocess.serve import Catalog
from preprocess.serve.app import create_app
from preprocess.store import DatasetWriter, open_repo
from preprocess.torchdata import VersionDataset
from tests.store.test_store import make_item

SIZE = (96, 64)  # what every row records


def _sof(data: bytes) -> int:
    """Offset of the baseline frame header (SOF0) of a JPEG Pillow wrote (JFIF, no EXIF)."""
    i = 2
    while data[i + 1] != 0xC0:
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return i


def with_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` with its frame header claiming ``width`` x ``height`` (the scan is left as it is)."""
    i = _sof(data)
    return data[:i + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + data[i + 9:]


@pytest.fixture(scope="module")
def blobs(small_photos: list[Path]) -> dict[str, bytes]:
    with Image.open(small_photos[0]) as img:
        buf = io.BytesIO()
        img.convert("RGB").resize(SIZE).save(buf, format="JPEG", quality=85)
    good = buf.getvalue()
    return {"good": good, "bomb": with_size(good, 60000, 60000), "swapped": with_size(good, SIZE[1], SIZE[0])}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, blobs: dict[str, bytes]) -> Path:
    path = tmp_path_factory.mktemp("headers") / "s.icechunk"
    rng = np.random.default_rng(7)
    w = DatasetWriter(open_repo(str(path), create=True), "main")
    for i, name in enumerate(("good", "bomb", "swapped")):
        row = make_item(rng, 3 * i)
        w.add_item(dataclasses.replace(row, jpeg=blobs[name], bytes=len(blobs[name]), format="jpeg", status="ok",
                                       width=SIZE[0], height=SIZE[1], source_path=f"/cams/日本 {name}.jpg"))
    assert w.commit("three rows", {}) is not None
    return path


def _corrupt(error: InputError, header: str) -> None:
    assert error.code == "E_CORRUPT", error
    assert f"says {header} pixels" in error.message and f"records {SIZE[0]}x{SIZE[1]}" in error.message, error.message


def test_a_header_must_give_the_recorded_size(blobs: dict[str, bytes]) -> None:
    check_recorded(blobs["good"], SIZE)
    assert decode_rgb_into(blobs["good"], lambda img: img, recorded=SIZE).size == SIZE
    assert decode_rgb(blobs["swapped"]).size == SIZE[::-1]  # what a decode without the record would give
    for name, header in (("bomb", "60000x60000"), ("swapped", f"{SIZE[1]}x{SIZE[0]}")):
        for refuse in (lambda d: check_recorded(d, SIZE), lambda d: decode_rgb_into(d, lambda img: img, recorded=SIZE)):
            with pytest.raises(InputError) as e:
                refuse(blobs[name])
            _corrupt(e.value, header)


@pytest.mark.parametrize("decode", ["cpu", "gpu"])
def test_the_training_reader_refuses_a_row_whose_header_disagrees(store: Path, decode: str) -> None:
    """decode="gpu" is the GPU reader's worker side (which rows go to the device): it runs without a GPU."""
    ds = VersionDataset(str(store), decode=decode, size=(32, 32))  # type: ignore[arg-type]
    first = ds[0]
    assert first["image"] is not None or first["jpeg"] is not None
    for row, header in ((1, "60000x60000"), (2, f"{SIZE[1]}x{SIZE[0]}")):
        with pytest.raises(InputError) as e:
            ds[row]
        _corrupt(e.value, header)


def test_open_dataset_refuses_a_row_whose_header_disagrees(store: Path) -> None:
    ds = open_dataset(str(store))
    assert ds[0]["image"].size == SIZE
    for row in (1, 2):
        with pytest.raises(InputError) as e:
            ds[row]
        assert e.value.code == "E_CORRUPT"


def test_the_web_ui_shows_no_pixels_of_a_row_whose_header_disagrees(store: Path, blobs: dict[str, bytes]) -> None:
    c = TestClient(create_app(Catalog(str(store))), raise_server_exceptions=False)
    base = f"/snapshots/{open_dataset(str(store)).snapshot_id}/items"
    assert c.get(f"{base}/0/thumb").status_code == 200
    for row in (1, 2):
        for what in ("thumb", "stored", "crop/stored?x=0&y=0&w=8&h=8"):
            r = c.get(f"{base}/{row}/{what}")
            assert r.status_code == 422 and "E_CORRUPT" in r.text, (row, what, r.status_code)
        assert c.get(f"{base}/{row}").status_code == 200  # its page says what it is
    download = c.get(f"{base}/1/download")
    assert download.status_code == 200 and download.content == blobs["bomb"]  # a download gives the bytes as stored


def test_a_download_keeps_a_name_that_is_not_ascii(store: Path) -> None:
    """A Content-Disposition header is Latin-1: a source called 日本 made its row's download a 500."""
    c = TestClient(create_app(Catalog(str(store))), raise_server_exceptions=False)
    r = c.get(f"/snapshots/{open_dataset(str(store)).snapshot_id}/items/0/download")
    assert r.status_code == 200, r.text
    header = r.headers["content-disposition"]
    assert header.startswith('attachment; filename="___good-') and header.isascii(), header
    assert "filename*=UTF-8''%E6%97%A5%E6%9C%AC_good-" in header, header

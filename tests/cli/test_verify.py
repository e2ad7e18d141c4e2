"""`preprocess verify`: every stored image of a version read back and checked against its row. A real store
made by `run` on real photos; bits flipped in its chunk file on disk, as bit rot or a bad disk would."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from preprocess.cli import app
from preprocess.core.errors import DamagedError
from preprocess.store import open_repo
from preprocess.store.reader import Dataset
from preprocess.verify import verify
from tests.jobs import flip_image_bits, tiny_store
from tests.paths import ROOT

SCHEMA = json.loads((ROOT / "docs" / "json-schema.json").read_text())


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, small_photos: list[Path]) -> Path:
    return tiny_store(tmp_path_factory.mktemp("verify"), small_photos[:4])


def test_an_intact_store_verifies(made: Path) -> None:
    r = CliRunner().invoke(app, ["verify", str(made)])
    assert r.exit_code == 0, r.output
    assert "4 items intact, 0 rows damaged" in r.output and "decoded in full" in r.output
    assert "CRC32C and checksums checked" in r.output
    done = verify(open_repo(str(made), create=False), decode=False)
    assert done.ok and done.rows == 4 and done.crc and done.checksums and not done.decoded and done.bytes > 0
    # the store's first commit holds no array: no note about older stores (a newcomer's walkthrough, session 7)
    first = CliRunner().invoke(app, ["verify", str(made), "main~1"])
    assert first.exit_code == 0 and "0 items intact" in first.output, first.output
    assert "nothing stored to check" in first.output and "older arrays" not in first.output


def test_flipped_bits_are_found_and_named_with_their_rows(made: Path, tmp_path: Path) -> None:
    store = tmp_path / "s.icechunk"
    shutil.copytree(made, store)
    flip_image_bits(store)
    r = CliRunner().invoke(app, ["verify", str(store), "--json"])
    assert r.exit_code == 5, r.output
    doc = json.loads(r.stdout)
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)
    assert doc["command"] == "verify" and doc["ok"] is False and doc["rows"] == 4
    damaged = doc["damaged"]
    assert damaged and {(d["table"], d["code"]) for d in damaged} == {("items", "STORE_IO")}
    assert doc["intact"] == 4 - len(damaged)
    assert all(d["source_path"].endswith((".jpg", ".png")) for d in damaged)
    text = CliRunner().invoke(app, ["verify", str(store)])
    assert text.exit_code == 5 and "error[STORE_IO]" in text.output and "damaged in main" in text.output
    assert "show STORE --item ROW" not in text.output  # a form `show` does not take
    assert "Traceback" not in text.output


def test_damaged_embeddings_are_found_not_read_as_other_values(made: Path, tmp_path: Path) -> None:
    """A walkthrough flipped 8 bytes in the embeddings' chunk: verify said every row was intact, and export and
    the reader gave floats of 1e38. Every array but the images now carries zstd's frame checksum, and verify
    reads every array: the rows of that chunk are STORE_IO, naming what cannot be read."""
    store = tmp_path / "s.icechunk"
    shutil.copytree(made, store)
    chunks = sorted((store / "chunks").iterdir(), key=lambda p: p.stat().st_size, reverse=True)
    embeddings = chunks[1]  # the images' shard is the largest; then 4 x 1280 float32, zstd'd (a field: < 1 KB)
    assert embeddings.stat().st_size > 4 * 1280
    data = bytearray(embeddings.read_bytes())
    for k in range(8):
        data[len(data) // 2 + 7 * k] ^= 0x40
    embeddings.write_bytes(bytes(data))
    done = verify(open_repo(str(store), create=False))
    assert done.checksums and not done.ok and done.intact == 0
    assert {(d.table, d.code) for d in done.damaged} == {("items", "STORE_IO")}
    assert all("embedding/mobilenetv2-imagenet cannot be read" in d.message for d in done.damaged), done.damaged
    assert sorted(d.row for d in done.damaged) == [0, 1, 2, 3] and all(d.source_path for d in done.damaged)


def test_a_ref_that_is_not_there_is_a_usage_error(made: Path) -> None:
    r = CliRunner().invoke(app, ["verify", str(made), "nope", "--json"])
    assert r.exit_code == 2 and json.loads(r.stdout)["error"]["code"] == "REF_MISSING", r.output


def test_verify_is_listed_in_the_help() -> None:
    r = CliRunner().invoke(app, ["--help"])
    assert "verify" in r.output


def test_an_unreadable_field_marks_its_rows_and_the_rest_is_checked(made: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The rows of a chunk of `bytes` that cannot be read are damaged, their images unchecked (a review found
    verify then crashed on the missing sizes), and every other array and image is checked as usual. Which
    chunk file holds `bytes` is icechunk's business, so that one read fails through a stand-in for the store's
    read (a test double of the damage only: the store and every other read are real)."""
    real = Dataset.read_rows

    def bytes_damaged(self: Dataset, path: str, start: int, stop: int) -> object:
        if path == "items/bytes":
            raise DamagedError("cannot read the dataset's stored rows: a file of it is damaged (test)")
        return real(self, path, start, stop)

    monkeypatch.setattr(Dataset, "read_rows", bytes_damaged)
    done = verify(open_repo(str(made), create=False))
    assert not done.ok and done.intact == 0 and done.damaged_rows == 4 and done.bytes == 0
    assert all(d.table == "items" and d.source_path and "its bytes cannot be read" in d.message for d in done.damaged)

"""A store whose chunk files were damaged on disk (round 6): every reader answers STORE_IO with a hint, never a
raw icechunk or zarr traceback, and `export` exits 5, not 70 ("a bug, report it"). A real store made by `run`
on real photos; its largest chunk file (the stored bytes) is cut short or zeroed."""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import preprocess
from preprocess.cli import app
from preprocess.core.errors import StorageError
from preprocess.torchdata import VersionDataset, loader
from tests.jobs import flip_image_bits, tiny_store


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, small_photos: list[Path]) -> Path:
    return tiny_store(tmp_path_factory.mktemp("damaged"), small_photos[:3])


def damaged(made: Path, tmp_path: Path, how: str) -> Path:
    store = tmp_path / "s.icechunk"
    shutil.copytree(made, store)
    chunk = max((store / "chunks").iterdir(), key=lambda p: p.stat().st_size)
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 2] if how == "cut" else bytes(len(data)))
    return store


@pytest.mark.parametrize("how", ["cut", "zeroed"])
def test_a_damaged_chunk_file_is_store_io_in_every_reader(made: Path, tmp_path: Path, how: str) -> None:
    store = damaged(made, tmp_path, how)
    ds = preprocess.open_dataset(str(store))
    with pytest.raises(StorageError) as caught:
        ds[0]
    assert caught.value.code == "STORE_IO" and caught.value.hint
    with pytest.raises(StorageError) as caught:
        VersionDataset(str(store), size=(32, 32))[0]
    assert caught.value.code == "STORE_IO"
    r = CliRunner().invoke(app, ["export", str(store), str(tmp_path / "out")])
    assert r.exit_code == 5 and "error[STORE_IO]" in r.output and "Traceback" not in r.output, r.output
    assert "report it" not in r.output


def test_a_loader_workers_error_keeps_its_code_and_hint(made: Path, tmp_path: Path) -> None:
    """torch rebuilds a worker's error in the main process from its type and traceback text: a StorageError
    raised with code STORE_IO arrived as STORAGE with no hint. The worker's note carries them."""
    store = damaged(made, tmp_path, "cut")
    batches = loader(VersionDataset(str(store), size=(32, 32)), batch_size=2, num_workers=1)
    with pytest.raises(StorageError) as caught:
        list(batches)
    assert caught.value.code == "STORE_IO" and caught.value.hint and "DataLoader worker" in str(caught.value)
    # which row: a batch is read as a whole, so the worker read its rows one by one to name the one that failed
    assert re.search(r"stored row \d+ \(from .+\.(jpg|png)\) of ", str(caught.value)), str(caught.value)[-600:]
    # one line, not torch's text of the worker's whole traceback (7.5 KB, which stays in args)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 600, str(caught.value)
    assert str(caught.value).endswith("(raised in DataLoader worker process 0)")
    assert "Traceback" in caught.value.args[0]
    assert StorageError("no note").code == "STORAGE"  # an error made here keeps its class's code


@pytest.mark.parametrize("folder", ["snapshots", "manifests"])
def test_damaged_snapshot_and_manifest_files_are_store_io_not_a_bug(made: Path, tmp_path: Path, folder: str) -> None:
    """A snapshot file cut short made every command exit 70 with icechunk's FormatError ("a bug, please
    report it") and its traceback; a manifest with a flipped byte made `ls` raise zstd's RuntimeError."""
    store = tmp_path / "s.icechunk"
    shutil.copytree(made, store)
    rnd = random.Random(0)
    for f in sorted((store / folder).iterdir()):
        data = bytearray(f.read_bytes())
        if folder == "snapshots":
            data = data[: len(data) // 2]
        else:
            for _ in range(4):  # bits flipped in the zstd-compressed body
                i = rnd.randrange(len(data))
                data[i] ^= 1 << rnd.randrange(8)
        f.write_bytes(bytes(data))
    for args in (["ls", str(store)], ["show", str(store), "--item", "0"], ["export", str(store), str(tmp_path / "o")]):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 5 and "error[STORE_IO]" in r.output and "report it" not in r.output, (args, r.output)
    with pytest.raises(StorageError) as caught:
        preprocess.open_dataset(str(store))[0]
    assert caught.value.code == "STORE_IO"
    if folder == "manifests":  # zstd's "Src size is incorrect" said the storage's path or permissions were wrong
        assert "changed on disk" in caught.value.hint, caught.value


def test_zstds_words_for_a_changed_frame_are_damage() -> None:
    """Which bits the test above flips decides which of zstd's errors a read meets (the store's files differ
    run to run): CI's fresh clone once met "Destination buffer is too small", read as a storage fault with the
    hint "check path, permissions"."""
    from preprocess.core.errors import DamagedError
    from preprocess.store.storage import read_errors

    for text in ("I/O error: Destination buffer is too small", "Src size is incorrect", "Unknown frame descriptor",
                 "Frame requires too much memory for decoding", "Restored data doesn't match checksum",
                 # CI met the first (a flipped length); the others a 60-seed sweep of the flips met
                 "Invalid Icechunk metadata file: Range [65608, 65612) is out of bounds.",
                 "Icechunk cannot read file, invalid compression algorithm",
                 "Icechunk encountered an unknown file type code 9",
                 "this repository uses Icechunk format version 18, but this library only supports up to version 2"):
        for raised in (OSError(text), RuntimeError(text)):
            with pytest.raises(DamagedError), read_errors():
                raise raised


def test_flipped_bits_in_stored_bytes_are_an_error_never_other_pixels(made: Path, tmp_path: Path) -> None:
    """Four bits flipped inside the stored JPEGs (bit rot, a bad disk) decoded to other pixels with no error,
    and `export` wrote the damaged files (round 6): each image's bytes now carry a CRC32C that every read
    checks. Every row reads as it was stored, or is STORE_IO."""
    store = tmp_path / "s.icechunk"
    shutil.copytree(made, store)
    before = preprocess.open_dataset(str(store))
    stored = [before.jpeg(i) for i in range(len(before))]
    flip_image_bits(store)
    after, codes = preprocess.open_dataset(str(store)), []
    for i, want in enumerate(stored):
        try:
            got = after.jpeg(i)
        except StorageError as exc:
            codes.append(exc.code)
            continue
        assert got == want, f"row {i} reads other bytes without an error"
    assert codes and set(codes) == {"STORE_IO"}


def test_a_version_gc_deleted_under_a_reader_says_so(tmp_path: Path, small_photos: list[Path]) -> None:
    """A reader pinned to main's tip, then `reset main main~1` and `gc --older-than 0s`: its next read said
    "object not found" with the hint "check the dataset's storage: path, permissions, free space" (an audit,
    2026-12-07). It says a file of the version is gone, that gc deletes unreached versions, and what to do."""
    from datetime import timedelta

    from preprocess.store import open_repo, refs
    from tests.jobs import run_pillow

    store = tiny_store(tmp_path, small_photos[:2])
    extra = tmp_path / "more"
    extra.mkdir()
    shutil.copy(small_photos[2], extra / small_photos[2].name)
    run_pillow([extra], store, tmp_path / "tiny.toml")
    ds = preprocess.open_dataset(str(store))
    assert len(ds) == 3
    repo = open_repo(str(store), create=False)
    refs.reset_branch(repo, "main", "main~1")
    assert refs.gc(repo, timedelta(0)).counts["chunks_deleted"] > 0
    with pytest.raises(StorageError) as caught:
        [ds.jpeg(i) for i in range(3)]
    assert caught.value.code == "STORE_IO" and "gone" in str(caught.value) and "gc" in (caught.value.hint or "")
    assert len(preprocess.open_dataset(str(store))) == 2  # the ref opened again: its version now

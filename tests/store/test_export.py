"""Export is safe to open in a spreadsheet (issue 16, item 10): a cell that would run as a formula is
neutralised in manifest.csv, and only there (Parquet keeps the raw value). The source is a real photo
under a hostile name with a hostile camera model in its EXIF, given to a real `run` as a relative path."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from preprocess import open_dataset
from preprocess.core.errors import ConfigError, StorageError
from preprocess.drivers.run import JobOptions, run_job
from preprocess.store import open_repo
from preprocess.store.export import csv_cell, export, manifest_files
from tests.smallfs import fill, small_tmpfs

HOSTILE = "=cmd|' -c calc'!A0.jpg"
CAMERA = "=HYPERLINK(\"http://x\")"


def test_formula_cells_are_quoted_in_the_csv_only(tmp_path: Path, small_photos: list[Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    exif = Image.Exif()
    exif[0x0110] = CAMERA  # the camera model, recorded as a column
    Image.open(small_photos[0]).convert("RGB").save(tmp_path / HOSTILE, format="JPEG", quality=92,
                                                    exif=exif.tobytes())
    summary = run_job(JobOptions(sources=[HOSTILE], store="s.icechunk", engine="pillow"))
    assert summary.stored == 1
    repo = open_repo("s.icechunk", create=False)
    export(repo, tmp_path / "csv")
    with open(tmp_path / "csv" / "manifest.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    cells = [c for row in rows for c in row]
    assert "'" + CAMERA in cells
    assert not any(c.startswith(("=", "+", "-", "@", "\t", "\r")) for c in cells)
    arrow = pq.read_table(export(repo, tmp_path / "pq", fmt="parquet").manifest)
    # each number column has its row type, an empty one too (no tiles checked: every cell null, not a null column)
    types = {f.name: str(f.type) for f in arrow.schema}
    assert (types["similarity_tiles"], types["bytes"], types["quality"]) == ("double", "int64", "int64")
    table = arrow.to_pydict()
    assert table["camera_model"] == [CAMERA]
    # the path rule: a local source is recorded absolute, under its root's resolved folder
    assert table["source_path"] == [os.path.join(os.path.realpath(tmp_path), HOSTILE)]


def test_csv_cell_rules() -> None:
    for bad in ("=1+1", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1"):
        assert csv_cell(bad) == "'" + bad
    assert csv_cell("photo.jpg") == "photo.jpg" and csv_cell(-3) == -3 and csv_cell(0.5) == 0.5
    assert csv_cell(None) == ""


def test_every_row_of_a_manifest_has_a_file_of_its_own() -> None:
    """export and the web UI's zip name files by one rule: a key met again (a version not written by
    preprocess jobs) gets its row number, so no row's file is another row's bytes."""
    sha, other = "ab" * 32, "cd" * 32
    names = manifest_files([(sha, "fp1", "jpeg", 0), (other, "fp1", "jpeg", 1), (sha, "fp1", "jpeg", 7)])
    assert names == [f"images/{sha[:16]}-fp1.jpg", f"images/{other[:16]}-fp1.jpg", f"images/{sha[:16]}-fp1-7.jpg"]


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory, small_photos: list[Path]) -> Path:
    base = tmp_path_factory.mktemp("export3")
    summary = run_job(JobOptions(sources=[str(p) for p in small_photos[:3]], store=str(base / "s.icechunk"),
                                 engine="pillow"))
    assert summary.stored == 3
    return base / "s.icechunk"


def test_an_export_that_fails_on_a_full_disk_leaves_nothing_and_the_rerun_finishes(three: Path,
                                                                                  tmp_path: Path) -> None:
    """A failed export left its partial files (and raised a raw OSError), and every rerun into that folder
    was refused (EXPORT_DIR) until someone removed them. Now a failure removes what the export wrote, and
    only that. A real full disk: a small tmpfs with room for about one image (tests/smallfs.py)."""
    repo = open_repo(str(three), create=False)
    sizes = sorted(len(open_dataset(str(three)).jpeg(i)) for i in range(3))
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        filler = fill(disk)
        os.truncate(filler, filler.stat().st_size - sizes[0] - 8192)  # room for the smallest image, not all
        with pytest.raises(StorageError) as caught:
            export(repo, disk / "out")
        assert caught.value.code == "EXPORT_IO"
        assert not (disk / "out").exists()  # made by the export, removed with what it wrote
        (disk / "kept").mkdir()  # an empty folder the user made stays, empty
        with pytest.raises(StorageError):
            export(repo, disk / "kept")
        assert list((disk / "kept").iterdir()) == []
        filler.unlink()
        done = export(repo, disk / "kept")
        assert done.files == 3 and sorted(os.listdir(disk / "kept")) == ["images", "manifest.csv"]
    (tmp_path / "killed" / "images").mkdir(parents=True)  # what a killed export leaves (SIGKILL runs no clean-up)
    (tmp_path / "killed" / "images" / "0123456789abcdef-x.jpg").write_bytes(b"\xff\xd8 half")
    with pytest.raises(ConfigError) as refused:
        export(repo, tmp_path / "killed")
    assert refused.value.code == "EXPORT_DIR" and "killed" in refused.value.hint
    assert refused.value.path == str(tmp_path / "killed")  # --json's path (it was null)
    assert (tmp_path / "killed" / "images" / "0123456789abcdef-x.jpg").read_bytes() == b"\xff\xd8 half"


def test_an_export_into_the_datasets_own_directory_is_refused(three: Path, tmp_path: Path) -> None:
    """`export STORE STORE/chunks/ex` wrote 18 images among icechunk's files; every later `gc` printed two
    coloured icechunk ERROR lines per file (a hostile-input round, 2026-12-07). It is EXPORT_DIR, through a
    symbolic link to the store too; beside the store is fine."""
    repo = open_repo(str(three), create=False)
    (tmp_path / "link").symlink_to(three)
    before = sorted(p.relative_to(three) for p in three.rglob("*"))
    for out in (three, three / "chunks" / "ex", three / "refs", tmp_path / "link" / "x"):
        with pytest.raises(ConfigError) as refused:
            export(repo, out)
        assert refused.value.code == "EXPORT_DIR" and "dataset's own directory" in refused.value.message, out
    assert sorted(p.relative_to(three) for p in three.rglob("*")) == before
    assert export(repo, three.parent / "beside").files == 3

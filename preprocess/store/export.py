"""Export one version: its stored images as files plus a manifest with every row's fields.

``OUT_DIR/images/<sha256[:16]>-<fingerprint>.<ext>`` (stable across exports and unique per row:
rows are keyed by source sha256 + spec fingerprint) and ``OUT_DIR/manifest.csv`` (or
``manifest.parquet``, which also carries each row's embedding). Text cells of the CSV that a
spreadsheet would run as a formula (``= + - @``, tab, CR) start with a single quote
(:func:`csv_cell`); Parquet keeps the raw values. File names are built from hex
digests only, never from stored paths, and every file is created new inside OUT_DIR
(``O_EXCL | O_NOFOLLOW``): whatever a dataset holds, nothing is written outside OUT_DIR.

Every manifest this project writes (this one, and the web UI's downloads) has the columns of
:func:`manifest_columns`, in that order: ``file``, ``row`` (the row in the version: what ``show``,
``ls`` and the web UI call it), ``stored_sha256`` (where the stored bytes were read), every item
field, ``commit`` (the snapshot that added the row) and ``snapshot`` (the version's).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO, Literal

import icechunk as ic

from preprocess.core import interrupts, names
from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, StorageError
from preprocess.rows.formats import file_suffix
from preprocess.rows.records import Plain, plain
from preprocess.rows.schema import ITEM_COLUMNS
from preprocess.store import refs
from preprocess.store.lock import local_root
from preprocess.store.origins import origins
from preprocess.store.reader import Dataset

Format = Literal["csv", "parquet"]
FIELDS = tuple(c.name for c in ITEM_COLUMNS if c.name != "jpeg")  # the item fields a manifest carries
_HEX = re.compile(r"^[0-9a-f]{16,}\Z")
_FP = re.compile(r"^[0-9A-Za-z]{1,64}\Z")


@dataclass(frozen=True)
class Exported:
    out_dir: str
    ref: dict[str, str]
    manifest: str
    format: Format
    files: int
    bytes: int

    def to_dict(self) -> dict[str, str | int | dict[str, str]]:
        return dict(self.__dict__)


def manifest_columns(*, stored_sha256: bool) -> list[str]:
    """A manifest's columns, in order (``stored_sha256`` only where the stored bytes were read)."""
    return ["file", "row", *(["stored_sha256"] if stored_sha256 else []), *FIELDS, "commit", "snapshot"]


def manifest_files(keys: Iterable[tuple[str, str, str, int]]) -> list[str]:
    """``images/<file name>`` for each (source sha256, fingerprint, format, row), in order: a key met again
    in one manifest (not written by preprocess jobs) gets ``-<row>`` before its extension, so every row
    has a file of its own."""
    taken: set[str] = set()
    out: list[str] = []
    for sha, fp, fmt, row in keys:
        name = file_name(sha, fp, fmt)
        if name in taken:
            stem, ext = name.rsplit(".", 1)
            name = f"{stem}-{row}.{ext}"
        taken.add(name)
        out.append(f"images/{name}")
    return out


def file_name(source_sha256: str, fingerprint: str, fmt: str) -> str:
    """``<sha256[:16]>-<fingerprint>.<ext>``; anything that is not a plain digest is hashed first."""
    sha = source_sha256.lower()
    if not _HEX.match(sha):
        sha = hashlib.sha256(source_sha256.encode("utf-8", "surrogatepass")).hexdigest()
    fp = fingerprint if _FP.match(fingerprint) else hashlib.sha256(
        fingerprint.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{sha[:16]}-{fp}{file_suffix(fmt)}"


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _Made:
    """What one export made in OUT_DIR, so that a failed export removes exactly that: its folders, held open
    from their creation (a folder swapped for a link afterwards is never followed), and its files by name."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.made_out = self.made_images = False  # made by this export (OUT_DIR may be an empty folder given)
        self.out_fd = self.images_fd = -1
        self.files: list[str] = []  # in images/
        self.manifest: list[str] = []  # in OUT_DIR: the manifest's temporary name, then its own

    def _create(self, name: str, dir_fd: int, where: Path) -> BinaryIO:
        """A new file ``name`` in the folder ``dir_fd`` (never over a file, never through a link)."""
        if "/" in name or "\0" in name or name in ("", ".", ".."):
            raise StorageError(f"refusing to write {name!r} outside {self.out}", code=ErrorCode.EXPORT_PATH)
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=dir_fd)
        except OSError as exc:
            raise StorageError(f"cannot create {where / name}: {exc.strerror or exc}",
                               code=ErrorCode.EXPORT_IO) from exc
        (self.files if dir_fd == self.images_fd else self.manifest).append(name)
        return os.fdopen(fd, "wb")

    def write(self, name: str, data: bytes) -> None:
        """``images/NAME``: ``data``."""
        with _io(self.out / "images" / name), self._create(name, self.images_fd, self.out / "images") as f:
            f.write(data)

    def publish(self, name: str, write: Callable[[BinaryIO], None]) -> None:
        """``OUT_DIR/NAME`` written by ``write`` under a temporary name, then linked to its own (which never
        replaces a file): a manifest cut short by a kill is never found under the manifest's name."""
        temporary = f".{name}.partial"
        with _io(self.out / name), self._create(temporary, self.out_fd, self.out) as f:
            write(f)
        with _io(self.out / name):
            os.link(temporary, name, src_dir_fd=self.out_fd, dst_dir_fd=self.out_fd, follow_symlinks=False)
        self.manifest.append(name)
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=self.out_fd)
            self.manifest.remove(temporary)

    def undo(self) -> None:
        """Remove what this export made (best effort, each on its own: it runs while another error is on its
        way), the manifest first."""
        for name, fd in [(n, self.out_fd) for n in self.manifest] + [(n, self.images_fd) for n in self.files]:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=fd)
        if self.made_images:
            with contextlib.suppress(OSError):
                os.rmdir("images", dir_fd=self.out_fd)
        self.close()
        if self.made_out:
            with contextlib.suppress(OSError):
                self.out.rmdir()  # a link put in its place is not a folder: not removed

    def close(self) -> None:
        for fd in (self.images_fd, self.out_fd):
            if fd >= 0:
                os.close(fd)
        self.out_fd = self.images_fd = -1


@contextlib.contextmanager
def _io(path: Path) -> Iterator[None]:
    """A write's OSError (a full disk, a quota) as EXPORT_IO; a StorageError of ours as it is."""
    try:
        yield
    except StorageError:
        raise
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}", code=ErrorCode.EXPORT_IO) from exc


def _outside_store(repo: ic.Repository, out_dir: Path) -> None:
    """EXPORT_DIR for a folder in the dataset's own directory: the files written among icechunk's made every
    later `gc` print an error per file, and a copy of the store would carry them."""
    root = local_root(repo)
    if root is None:
        return
    real_root, real_out = os.path.realpath(root), os.path.realpath(out_dir)
    if real_out == real_root or real_out.startswith(os.path.join(real_root, "")):
        raise ConfigError("it is inside the dataset's own directory", code=ErrorCode.EXPORT_DIR, path=str(out_dir),
                          hint="give a new or empty directory outside the dataset")


def _prepare(out_dir: Path) -> _Made:
    if out_dir.is_symlink():  # refused: the files would land wherever the link leads
        raise ConfigError("it is a symbolic link; an export writes only into a real directory",
                          code=ErrorCode.EXPORT_DIR, path=str(out_dir), hint="give a new or empty directory")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError("it exists and is not a directory", code=ErrorCode.EXPORT_DIR, path=str(out_dir),
                          hint="give a new or empty directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise ConfigError("it is not empty", code=ErrorCode.EXPORT_DIR, path=str(out_dir),
                          hint="give a new or empty directory (an export never overwrites files; one that fails "
                               "removes what it wrote, one that was killed leaves it: remove that folder)")
    if not out_dir.parent.is_dir():
        raise ConfigError(f"cannot create it: {out_dir.parent} is not a directory", code=ErrorCode.EXPORT_DIR,
                          path=str(out_dir), hint="give a directory whose parent folder exists")
    made = _Made(out_dir)
    try:
        with contextlib.suppress(FileExistsError):
            out_dir.mkdir()
            made.made_out = True
        made.out_fd = os.open(out_dir, _DIR_FLAGS)
        os.mkdir("images", dir_fd=made.out_fd)
        made.made_images = True
        made.images_fd = os.open("images", _DIR_FLAGS, dir_fd=made.out_fd)
    except BaseException as exc:  # an OSError, or Ctrl-C: nothing of this export is left
        made.undo()
        if isinstance(exc, OSError):
            raise StorageError(f"cannot create {out_dir}: {exc.strerror or exc}", code=ErrorCode.EXPORT_IO) from exc
        raise
    return made


def export(repo: ic.Repository, out_dir: str | Path, *, ref: str = "main", fmt: Format = "csv") -> Exported:
    """Write version ``ref``'s images and manifest into ``out_dir`` (new or empty).

    ConfigError EXPORT_EMPTY when the version holds no images, EXPORT_DIR for a bad OUT_DIR.
    """
    if fmt not in ("csv", "parquet"):
        raise ConfigError(f"unknown manifest format {fmt!r}", code=ErrorCode.EXPORT_FORMAT, hint="use csv or parquet")
    target = refs.resolve_ref(repo, ref)
    ds = Dataset(refs.session(repo, target), ref=ref)
    if len(ds) == 0:
        raise ConfigError(f"{ref!r} holds no images to export", code=ErrorCode.EXPORT_EMPTY,
                          hint="`preprocess log` lists the commits; export a version that has items")
    out = Path(out_dir).expanduser().absolute()
    _outside_store(repo, out)
    made = _prepare(out)
    try:
        exported = _write(repo, target, ds, made, fmt)
    except BaseException:  # a full disk, a damaged store, an interrupt: nothing of this export is left
        made.undo()
        raise
    made.close()
    interrupts.finished(f"the export was complete: {names.quote(exported.out_dir)} holds it")
    return exported


def _write(repo: ic.Repository, target: refs.Ref, ds: Dataset, made: _Made, fmt: Format) -> Exported:
    """The images into ``OUT_DIR/images`` and the manifest beside them."""
    table = ds.items_table()
    files = manifest_files((str(table["source_sha256"][i]), str(table["fingerprint"][i]), str(table["format"][i]), i)
                           for i in range(len(ds)))
    stored_sha: list[Plain] = []
    total = 0
    for i, file in enumerate(files):
        data = ds.jpeg(i)
        made.write(file.removeprefix("images/"), data)
        stored_sha.append(hashlib.sha256(data).hexdigest())
        total += len(data)
    values: dict[str, list[Plain]] = {"file": list(files), "row": list(range(len(ds))), "stored_sha256": stored_sha,
                                      "commit": list(origins(repo, target.snapshot).item_commits(range(len(ds)))),
                                      "snapshot": [target.snapshot] * len(ds)}
    values |= {f: [plain(v) for v in table[f]] for f in FIELDS}  # NaN: an empty cell
    columns = {c: values[c] for c in manifest_columns(stored_sha256=True)}
    out = made.out.resolve()
    manifest = out / f"manifest.{fmt}"
    made.publish(manifest.name, partial(_write_csv, columns) if fmt == "csv" else partial(_write_parquet, columns, ds))
    return Exported(out_dir=str(out), ref=target.to_dict(), manifest=str(manifest), format=fmt, files=len(ds),
                    bytes=total)


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV injection"); tab and
# carriage return can hide one behind whitespace.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Plain) -> Plain:
    """A manifest.csv cell: a text value that a spreadsheet would run as a formula gets a leading
    single quote (``=cmd|' -c calc'!A0`` -> ``'=cmd|' -c calc'!A0``); numbers are left as they are.
    Only the CSV is neutralised: Parquet keeps every value exactly."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _write_csv(columns: dict[str, list[Plain]], binary: BinaryIO) -> None:
    with io.TextIOWrapper(binary, encoding="utf-8", newline="", write_through=True) as f:
        w = csv.writer(f)
        w.writerow([csv_cell(c) for c in columns])
        n = len(next(iter(columns.values())))
        for i in range(n):
            w.writerow([csv_cell(columns[c][i]) for c in columns])


def _write_parquet(columns: dict[str, list[Plain]], ds: Dataset, f: BinaryIO) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data: dict[str, list[Plain] | pa.Array] = dict(columns)
    for c in ITEM_COLUMNS:  # a number column's type, whatever its values (all-empty tiles gave a null column)
        if c.kind in ("int", "float") and c.name in data:  # int64 and double, as pyarrow infers from values
            data[c.name] = pa.array(columns[c.name], type=pa.int64() if c.kind == "int" else pa.float64())
    models = ds.models
    if models:
        emb: list[list[float] | None] = []
        by_model = {m: ds.embedding(m) for m in models}
        for i, m in enumerate(columns["model"]):
            vec = by_model.get(str(m))
            emb.append(vec[i].tolist() if vec is not None else None)
        data["embedding"] = pa.array(emb, type=pa.list_(pa.float32()))
    pq.write_table(pa.table(data), f)

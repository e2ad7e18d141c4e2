"""Verify a version: every array read back in full, and every stored image checked against its row, as
``git fsck`` and ``restic check --read-data`` check what they keep. Nothing is written.

Every array of the version (each item field, each model's embeddings, the failures' fields) is read chunk by
chunk: a store made since 2026-12-07 checks zstd's frame checksum of each chunk as it reads it, so a field or an
embedding damaged on disk is ``STORE_IO`` for the rows of that chunk, never another value. Then each item's
stored bytes are read (with their CRC32C in such a store: bits flipped on disk are ``STORE_IO``, never other
pixels); their length must be the row's ``bytes`` and their magic its ``format`` (``STORE_IO``: the row does
not hold what it says); their header must give the row's width x height (``E_CORRUPT``, before any pixel is
decoded); and unless ``decode=False`` they are decoded in full, as a reader would (the decoder's own code:
``E_CORRUPT``, ``E_TRUNCATED``). A row that fails is reported with its table, number, source path, code and
reason, and the others go on; a snapshot or manifest that cannot be read at all ends it (``STORE_IO``). It
checks the data, not the store's own metadata: icechunk reads a version's snapshot and manifests as it opens
them, and keeps no checksum over a snapshot file (a flipped bit inside one can read as another value).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import icechunk as ic
import numpy as np

from preprocess.core import names
from preprocess.core.codes import ErrorCode
from preprocess.core.errors import PreprocessError, StorageError
from preprocess.core.jsonable import JsonObject
from preprocess.core.progress import Progress, SilentProgress
from preprocess.pipeline.formats.sniff import sniff
from preprocess.pipeline.stored_pixels import check_recorded, decode_rgb_into
from preprocess.rows.schema import CHUNK_ROWS, FAILURES, ITEMS, Values
from preprocess.store import refs
from preprocess.store.reader import Dataset

CHUNK = 64  # rows read in one call at most (their bytes: one image each); a call that fails is read row by row
CHUNK_BYTES = 256 * 2**20  # ... and bytes: kept sources (source and passthrough rows) can be tens of MB each
FIELDS = ("source_path", "bytes", "format", "width", "height")  # kept of the item fields: for the images
IMAGES = f"{ITEMS}/jpeg"
Table = Literal["items", "failures"]


@dataclass(frozen=True)
class Damaged:
    """A row of the version that does not read back as it was written."""

    table: Table
    row: int
    source_path: str  # "" where that field itself cannot be read
    code: str
    message: str


@dataclass
class Verified:
    ref: dict[str, str]  # the version verified (:meth:`Ref.to_dict`)
    rows: int  # item rows
    failures: int  # failure rows
    bytes: int  # stored image bytes read
    decoded: bool  # every image was decoded in full (else: read, and checked by its header)
    crc: bool  # the store checks a CRC32C of each image as it reads it
    checksums: bool  # ... and zstd's checksum of every other array's chunks
    damaged: list[Damaged] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.damaged

    @property
    def intact(self) -> int:
        return self.rows - len({d.row for d in self.damaged if d.table == "items"})

    @property
    def damaged_rows(self) -> int:
        """Rows with at least one thing damaged (a row can be listed once per thing)."""
        return len({(d.table, d.row) for d in self.damaged})

    def to_dict(self) -> JsonObject:
        return {"ref": self.ref, "rows": self.rows, "failures": self.failures, "intact": self.intact,
                "bytes": self.bytes, "decoded": self.decoded, "crc": self.crc, "checksums": self.checksums,
                "ok": self.ok, "seconds": round(self.seconds, 3),
                "damaged": [{"table": d.table, "row": d.row, "source_path": names.storable(d.source_path),
                             "code": d.code, "message": names.text(d.message)} for d in self.damaged]}


def verify(repo: ic.Repository, ref: str = "main", *, decode: bool = True,
           progress: Progress | None = None) -> Verified:
    """Check every array and every stored image of ``ref`` (see the module); ConfigError for a ref that is
    not there."""
    t0 = time.perf_counter()
    target = refs.resolve_ref(repo, ref)
    ds = Dataset(refs.session(repo, target), ref=ref)
    done = Verified(target.to_dict(), len(ds), ds.num_failures, 0, decode, ds.image_crc, ds.checksummed)
    bar = progress or SilentProgress()
    bar.start(len(ds))
    try:
        table, unread = _arrays(ds, done)
        for rows in _batches([None if n is None else int(n) for n in table["bytes"]], unread):
            for row, data in zip(rows, _read(ds, rows), strict=True):
                problem = data if isinstance(data, PreprocessError) else _check(data, table, row, decode)
                if problem is not None:
                    source = table["source_path"][row]
                    done.damaged.append(Damaged("items", row, "" if source is None else str(source),
                                                str(problem.code), problem.message))
                done.bytes += len(data) if isinstance(data, bytes) else 0
            bar.advance(len(rows))
        bar.advance(len(unread))
    finally:
        bar.finish()
    done.damaged.sort(key=lambda d: (d.table != "items", d.row))
    done.seconds = time.perf_counter() - t0
    return done


GROUP = 16 * CHUNK_ROWS  # rows of an array read in one call (zarr reads its chunks at once); chunk by chunk on error
CHECKED = ("bytes", "format", "width", "height")  # the fields an image is checked against (FIELDS but its source)


def _arrays(ds: Dataset, done: Verified) -> tuple[dict[str, Values], set[int]]:
    """Read every array but the images; each row of a chunk that cannot be read is damaged. Returns the item
    fields an image is checked against (None where unread) and the item rows left unchecked (a field they are
    checked against is unread)."""
    keep: dict[str, list[Values]] = {f"{t}/source_path": [] for t in ("items", "failures")}
    keep |= {f"{ITEMS}/{f}": [] for f in CHECKED}
    bad: dict[tuple[Table, int], list[str]] = {}
    errors: dict[tuple[Table, int], PreprocessError] = {}
    for path in ds.arrays():
        if path == IMAGES:
            continue
        tbl: Table = "failures" if path.startswith(f"{FAILURES}/") else "items"
        n = done.failures if tbl == "failures" else done.rows
        for start in range(0, n, GROUP):
            for lo, hi, got in _read_array(ds, path, start, min(start + GROUP, n)):
                if isinstance(got, PreprocessError):
                    for row in range(lo, hi):
                        bad.setdefault((tbl, row), []).append(path.removeprefix(f"{tbl}/"))
                        errors.setdefault((tbl, row), got)
                if path in keep:
                    keep[path].append(np.full(hi - lo, None, dtype=object) if isinstance(got, PreprocessError) else got)
    table = {f: _joined(ds, keep, f, done) for f in FIELDS}
    failed = _joined(ds, keep, "source_path", done, FAILURES)
    for (tbl, row), fields in bad.items():
        err, source = errors[(tbl, row)], (table["source_path"] if tbl == "items" else failed)[row]
        done.damaged.append(Damaged(tbl, row, "" if source is None else str(source), str(err.code),
                                    f"its {', '.join(fields)} cannot be read: {err.message}"))
    unread = {row for (tbl, row), fields in bad.items() if tbl == "items" and set(fields) & set(CHECKED)}
    return table, unread


def _read_array(ds: Dataset, path: str, start: int, stop: int) -> Iterator[tuple[int, int, Values | PreprocessError]]:
    """Rows ``start:stop`` of an array in one read; when it fails, chunk by chunk (each chunk's values, or the
    error that reading it raised)."""
    try:
        yield start, stop, ds.read_rows(path, start, stop)
        return
    except StorageError:
        pass
    for lo in range(start, stop, CHUNK_ROWS):
        hi = min(lo + CHUNK_ROWS, stop)
        try:
            yield lo, hi, ds.read_rows(path, lo, hi)
        except StorageError as exc:
            yield lo, hi, exc


def _joined(ds: Dataset, keep: Mapping[str, list[Values]], name: str, done: Verified, tbl: str = ITEMS) -> Values:
    """A field's values read in parts, joined; a field the version has no array for reads as the reader fills
    it (an older version)."""
    parts = keep.get(f"{tbl}/{name}", [])
    if parts:
        return np.concatenate(parts)
    filled = ds.failures_table if tbl == FAILURES else ds.items_table
    return filled([name])[name] if (done.failures if tbl == FAILURES else done.rows) else np.zeros(0, dtype=object)


def _batches(sizes: Sequence[int | None], skip: set[int]) -> Iterator[list[int]]:
    """Row numbers (but ``skip``) in runs of at most :data:`CHUNK` rows and :data:`CHUNK_BYTES` bytes (at least
    one row)."""
    rows: list[int] = []
    total = 0
    for row, n in enumerate(sizes):
        if row in skip:
            continue
        if rows and (len(rows) == CHUNK or total + (n or 0) > CHUNK_BYTES):
            yield rows
            rows, total = [], 0
        rows.append(row)
        total += max(n or 0, 0)
    if rows:
        yield rows


def _read(ds: Dataset, rows: Sequence[int]) -> list[bytes | PreprocessError]:
    """The rows' stored bytes, in one read; when it fails (a damaged image among them), row by row."""
    try:
        return [bytes(b) for b in ds.items_at(rows, ["jpeg"])["jpeg"]]
    except StorageError:
        out: list[bytes | PreprocessError] = []
        for row in rows:
            try:
                out.append(ds.jpeg(row))
            except StorageError as exc:
                out.append(exc)
        return out


def _check(data: bytes, table: Mapping[str, Values], row: int, decode: bool) -> PreprocessError | None:
    """What is wrong with row ``row``'s stored bytes ``data``, or None."""
    recorded = int(table["bytes"][row])
    fmt = str(table["format"][row])
    size = (int(table["width"][row]), int(table["height"][row]))
    if len(data) != recorded:
        return StorageError(f"{len(data):,} stored bytes where the row records {recorded:,}", code=ErrorCode.STORE_IO)
    found = (sniff(data) or "").lower()  # the same sniff that named the row's format when it was stored
    if fmt and found != fmt:
        return StorageError(f"the stored bytes are {found or 'no image format'}, where the row records {fmt}",
                            code=ErrorCode.STORE_IO)
    try:
        if decode:
            decode_rgb_into(data, lambda img: img, recorded=size)
        else:
            check_recorded(data, size)
    except PreprocessError as exc:
        return exc
    return None

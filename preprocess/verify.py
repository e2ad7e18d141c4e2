"""Verify a version: every stored image read back and checked against its row, as ``git fsck`` and
``restic check --read-data`` check what they keep. Nothing is written.

For each item row of a version: its stored bytes are read (a store made since 2026-12-07 checks each
image's CRC32C as it reads it: bits flipped on disk are ``STORE_IO``, never other pixels); their length must
be the row's ``bytes`` and their magic its ``format`` (``STORE_IO``: the row does not hold what it says);
their header must give the row's width x height (``E_CORRUPT``, before any pixel is decoded); and unless
``decode=False`` they are decoded in full, as a reader would (the decoder's own code: ``E_CORRUPT``,
``E_TRUNCATED``). A row that fails is reported with its number, source path, code and reason, and the
others go on; a snapshot or manifest that cannot be read at all ends it (``STORE_IO``). It checks the images,
not the store's own metadata: icechunk reads a version's snapshot and manifests as it opens them, and has
no checksum over a snapshot file (a flipped bit inside one can read as another value).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import icechunk as ic

from preprocess.core import names
from preprocess.core.codes import ErrorCode
from preprocess.core.errors import PreprocessError, StorageError
from preprocess.core.jsonable import JsonObject
from preprocess.core.progress import Progress, SilentProgress
from preprocess.pipeline.formats.sniff import sniff
from preprocess.pipeline.stored_pixels import check_recorded, decode_rgb_into
from preprocess.rows.schema import Values
from preprocess.store import refs
from preprocess.store.reader import Dataset

CHUNK = 64  # rows read in one call at most (their bytes: one image each); a call that fails is read row by row
CHUNK_BYTES = 256 * 2**20  # ... and bytes: kept sources (source and passthrough rows) can be tens of MB each
FIELDS = ("source_path", "bytes", "format", "width", "height")


@dataclass(frozen=True)
class Damaged:
    """A row whose stored image is not what its row says."""

    row: int
    source_path: str
    code: str
    message: str


@dataclass
class Verified:
    ref: dict[str, str]  # the version verified (:meth:`Ref.to_dict`)
    rows: int
    bytes: int  # stored bytes read
    decoded: bool  # every image was decoded in full (else: read, and checked by its header)
    crc: bool  # the store checks a CRC32C of each image as it reads it
    damaged: list[Damaged] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.damaged

    def to_dict(self) -> JsonObject:
        return {"ref": self.ref, "rows": self.rows, "intact": self.rows - len(self.damaged), "bytes": self.bytes,
                "decoded": self.decoded, "crc": self.crc, "ok": self.ok, "seconds": round(self.seconds, 3),
                "damaged": [{"row": d.row, "source_path": names.storable(d.source_path), "code": d.code,
                             "message": names.text(d.message)} for d in self.damaged]}


def verify(repo: ic.Repository, ref: str = "main", *, decode: bool = True,
           progress: Progress | None = None) -> Verified:
    """Check every item row of ``ref`` (see the module); ConfigError for a ref that is not there."""
    t0 = time.perf_counter()
    target = refs.resolve_ref(repo, ref)
    ds = Dataset(refs.session(repo, target), ref=ref)
    table = ds.items_table(list(FIELDS))
    done = Verified(target.to_dict(), len(ds), 0, decode, ds.image_crc)
    bar = progress or SilentProgress()
    bar.start(len(ds))
    try:
        for rows in _batches([int(n) for n in table["bytes"]]):
            for row, data in zip(rows, _read(ds, rows), strict=True):
                problem = data if isinstance(data, PreprocessError) else _check(data, table, row, decode)
                if problem is not None:
                    done.damaged.append(Damaged(row, str(table["source_path"][row]), str(problem.code),
                                                problem.message))
                done.bytes += len(data) if isinstance(data, bytes) else 0
            bar.advance(len(rows))
    finally:
        bar.finish()
    done.seconds = time.perf_counter() - t0
    return done


def _batches(sizes: Sequence[int]) -> Iterator[list[int]]:
    """Row numbers in runs of at most :data:`CHUNK` rows and :data:`CHUNK_BYTES` bytes (at least one row)."""
    rows: list[int] = []
    total = 0
    for row, n in enumerate(sizes):
        if rows and (len(rows) == CHUNK or total + n > CHUNK_BYTES):
            yield rows
            rows, total = [], 0
        rows.append(row)
        total += max(n, 0)
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

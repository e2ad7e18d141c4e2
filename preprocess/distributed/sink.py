"""Writing item rows into a forked icechunk session (in a Ray worker), and the row codec.

The driver's :class:`~preprocess.store.DatasetWriter` has already resized every array
(:meth:`~preprocess.store.DatasetWriter.reserve_items`) and forked its session; a write task gets
the fork, the first row of its region and the rows, writes them (whole 256-row chunks, so no two
tasks ever touch the same chunk) and returns the fork for the driver to merge. Nothing here resizes
or commits, and a retried task rewrites the same region: writes are idempotent.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

import icechunk as ic
import numpy as np
import pyarrow as pa
import zarr

from preprocess.errors import InternalError
from preprocess.store import schema
from preprocess.store.schema import CHUNK_ROWS, EMBEDDING, ITEM_COLUMNS, ITEMS, FailureRow, ItemRow, quiet


def encode_row(row: ItemRow | FailureRow) -> bytes:
    return pickle.dumps(row, protocol=pickle.HIGHEST_PROTOCOL)


def decode_item(blob: bytes) -> ItemRow:
    row = pickle.loads(blob)  # rows made by our own actors in this job
    if not isinstance(row, ItemRow):
        raise InternalError(f"expected an ItemRow, got {type(row).__name__}", code="RAY_ROW")
    return row


def decode_failure(blob: bytes) -> FailureRow:
    row = pickle.loads(blob)
    if not isinstance(row, FailureRow):
        raise InternalError(f"expected a FailureRow, got {type(row).__name__}", code="RAY_ROW")
    return row


def items_of(tables: Sequence[pa.Table], column: str = "item") -> list[ItemRow]:
    return [decode_item(b) for t in tables if t.num_rows for b in t.column(column).to_pylist()]


def check_region(start: int, count: int, total_stop: int) -> None:
    """A region must start on a chunk boundary and end on one (or at the end of all rows)."""
    stop = start + count
    if start % CHUNK_ROWS or (stop % CHUNK_ROWS and stop != total_stop):
        raise InternalError(f"rows [{start}, {stop}) are not whole chunks of {CHUNK_ROWS} (end {total_stop})",
                            code="RAY_REGION")


def write_items(fork: ic.ForkSession, start: int, rows: Sequence[ItemRow]) -> ic.ForkSession:
    """Write ``rows`` at ``[start, start + len(rows))`` of the (already sized) item arrays."""
    if not rows:
        return fork
    stop = start + len(rows)
    with quiet():
        root = zarr.open_group(store=fork.store, mode="r+")
        items = root[ITEMS]
        emb_group = root[EMBEDDING]
        assert isinstance(items, zarr.Group) and isinstance(emb_group, zarr.Group)
        arrays = schema.arrays(items)
        for col in ITEM_COLUMNS:
            arr = arrays[col.name]
            if arr.shape[0] < stop:
                raise InternalError(f"items/{col.name} has {arr.shape[0]} rows, the region ends at {stop}",
                                    code="RAY_REGION")
            arr[start:stop] = col.values(rows)
        embeddings = schema.arrays(emb_group)
        for model, arr in embeddings.items():
            mine = [i for i, r in enumerate(rows) if r.model == model]
            if not mine:
                continue  # NaN fill: nothing to write
            values: np.ndarray[Any, Any] = np.full((len(rows), arr.shape[1]), np.nan, dtype=np.float32)
            for i in mine:
                values[i] = rows[i].embedding
            arr[start:stop] = values
    return fork

"""Rows between Ray workers and the driver: the row codec, and the regions forked writes may take.

The driver's :class:`~preprocess.store.DatasetWriter` has already resized every array
(:meth:`~preprocess.store.DatasetWriter.reserve_items`) and forked its session; a write task gets
the fork, the first row of its region and the rows, and writes them with the store's own code
(:func:`preprocess.store.forks.write_fork`: the same checks and embedding fill as
``add_item``), in whole 256-row chunks, so no two tasks ever touch the same chunk; it returns the
fork for the driver to merge. Nothing resizes or commits there, and a retried task rewrites the
same region: writes are idempotent.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence

import pyarrow as pa

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import InternalError
from preprocess.rows.schema import CHUNK_ROWS, FailureRow, ItemRow


def encode_row(row: ItemRow | FailureRow) -> bytes:
    return pickle.dumps(row, protocol=pickle.HIGHEST_PROTOCOL)


def decode_item(blob: bytes) -> ItemRow:
    row = pickle.loads(blob)  # rows made by our own actors in this job
    if not isinstance(row, ItemRow):
        raise InternalError(f"expected an ItemRow, got {type(row).__name__}", code=ErrorCode.RAY_ROW)
    return row


def decode_failure(blob: bytes) -> FailureRow:
    row = pickle.loads(blob)
    if not isinstance(row, FailureRow):
        raise InternalError(f"expected a FailureRow, got {type(row).__name__}", code=ErrorCode.RAY_ROW)
    return row


def items_of(tables: Sequence[pa.Table], column: str = "item") -> list[ItemRow]:
    return [decode_item(b) for t in tables if t.num_rows for b in t.column(column).to_pylist()]


def check_region(start: int, count: int, total_stop: int) -> None:
    """A region must start on a chunk boundary and end on one (or at the end of all rows)."""
    stop = start + count
    if start % CHUNK_ROWS or (stop % CHUNK_ROWS and stop != total_stop):
        raise InternalError(f"rows [{start}, {stop}) are not whole chunks of {CHUNK_ROWS} (end {total_stop})",
                            code=ErrorCode.RAY_REGION)

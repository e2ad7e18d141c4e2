"""Appending rows to a branch's arrays, chunk-aligned: :class:`Tables` (the item and failure tables and
the embedding arrays of one writable session), and the writing of checked rows into them.

Rows are buffered in memory and written to zarr only as whole chunks (rows
``[k*CHUNK_ROWS, (k+1)*CHUNK_ROWS)``); the partial tail is written once, at commit. A job that
starts on a branch whose last chunk is partial first fills that chunk to its boundary (rewriting it
once), then continues aligned. So every chunk is written at most once per job and superseded copies
(kept until expire + GC) stay rare. The same writing serves rows written into forked sessions
(:mod:`preprocess.store.forks`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import zarr
from numpy.typing import NDArray
from zarr.abc.store import Store
from zarr.types import ArrayV3

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, InternalError, StorageError
from preprocess.rows import schema
from preprocess.rows.schema import (
    CHUNK_ROWS,
    FAILURE_COLUMNS,
    FAILURES,
    ITEM_COLUMNS,
    ITEM_STATUSES,
    ITEMS,
    Column,
    FailureRow,
    ItemRow,
    quiet,
)


class Table[R: (ItemRow, FailureRow)]:
    """One row group's arrays plus the rows not yet written to them."""

    def __init__(self, group: zarr.Group, columns: Sequence[Column]) -> None:
        self.group = group
        self.columns = columns
        found = schema.arrays(group)
        for col in columns:  # arrays a newer schema added to an older dataset
            if col.name not in found:
                found[col.name] = schema.create_column(group, col, schema.group_rows(group, columns))
        self.arrays = {c.name: found[c.name] for c in columns}
        self.stored = schema.group_rows(group, columns)  # rows already in the arrays
        self.pending: list[R] = []
        self.added = 0

    @property
    def rows(self) -> int:
        return self.stored + len(self.pending)

    def take(self, *, final: bool) -> list[tuple[int, list[R]]]:
        """Pop the pending rows that can be written now, as (start row, rows) blocks that each end
        on a chunk boundary (or, when ``final``, at the last row)."""
        out: list[tuple[int, list[R]]] = []
        while self.pending:
            n = (self.stored // CHUNK_ROWS + 1) * CHUNK_ROWS - self.stored
            if len(self.pending) < n:
                if not final:
                    break
                n = len(self.pending)
            block, self.pending = self.pending[:n], self.pending[n:]
            out.append((self.stored, block))
            self.stored += n
        return out

    def write(self, start: int, block: Sequence[R]) -> None:
        write_columns(self.arrays, self.columns, start, block, resize=True)


class Tables:
    """A writable session's rows: the item and failure tables and the embedding arrays (one per
    model), with what was added and not yet written. Nothing here commits or locks."""

    def __init__(self, store: Store) -> None:
        root = schema.open_layout(store, writable=True)
        if root is None:
            root = schema.create_layout(store)
        with quiet():
            items_group = root.require_group(ITEMS)
            self.emb_group = items_group.require_group("embedding")
            failures_group = root.require_group(FAILURES)
        self.items: Table[ItemRow] = Table(items_group, ITEM_COLUMNS)
        self.failures: Table[FailureRow] = Table(failures_group, FAILURE_COLUMNS)
        self.embeddings = schema.arrays(self.emb_group)
        for model, arr in self.embeddings.items():
            if arr.ndim != 2 or arr.shape[0] != self.items.stored:
                raise StorageError(f"embedding array {model!r} has shape {arr.shape}, expected "
                                   f"({self.items.stored}, D)", code=ErrorCode.STORE_FORMAT,
                                   hint="the dataset is damaged; reset the branch to an earlier snapshot")

    @property
    def models(self) -> dict[str, int]:
        """Embedding model name -> dimension, for every model on the branch or added."""
        return {m: int(a.shape[1]) for m, a in self.embeddings.items()}

    @property
    def added(self) -> int:
        """Rows (items and failures) added since the session opened or last committed."""
        return self.items.added + self.failures.added

    def embedding_array(self, model: str, dim: int) -> ArrayV3:
        """``model``'s embedding array, created (NaN for the rows already stored) when missing;
        ConfigError EMBEDDING_DIM when it is stored with another dimension."""
        arr = self.embeddings.get(model)
        if arr is None:
            arr = self.embeddings[model] = schema.create_embedding(self.emb_group, model, self.items.stored, dim)
        elif arr.shape[1] != dim:
            raise ConfigError(f"model {model!r} is stored with {arr.shape[1]}-d embeddings, not {dim}",
                              code=ErrorCode.EMBEDDING_DIM,
                              hint="a model whose output changed needs a new model name (and version)")
        return arr

    def add_item(self, row: ItemRow) -> None:
        """Check ``row`` and queue it (its embedding copied, its model's array made when new)."""
        emb = check_item(row, self.models)
        self.embedding_array(row.model, emb.size)
        self.items.pending.append(dataclasses.replace(row, embedding=emb))
        self.items.added += 1

    def add_failure(self, row: FailureRow) -> None:
        for col in FAILURE_COLUMNS:
            col.check(getattr(row, col.name))
        self.failures.pending.append(row)
        self.failures.added += 1

    def write(self, *, final: bool) -> None:
        """Write the whole chunks queued (every queued row when ``final``); storage errors pass."""
        for start, block in self.items.take(final=final):
            self.items.write(start, block)
            write_embeddings(self.embeddings, start, block, resize=True)
        for start, fblock in self.failures.take(final=final):
            self.failures.write(start, fblock)

    def discard(self) -> None:
        """Drop the queued rows (the session's own changes are the caller's to discard)."""
        self.items.pending.clear()
        self.failures.pending.clear()


# -- writing rows: shared by the writer and by writers of forked sessions (forks.write_fork) ---------


def check_item(row: ItemRow, dims: Mapping[str, int]) -> NDArray[np.float32]:
    """Check an item row against the schema (every column's type and range, the status, the
    embedding; ``dims``: model -> the stored embedding dimension); returns the embedding as a
    float32 copy. InternalError STORE_ROW for a malformed row, ConfigError EMBEDDING_DIM when the
    model is stored with another dimension."""
    for col in ITEM_COLUMNS:
        col.check(getattr(row, col.name))
    if row.status not in ITEM_STATUSES:
        raise InternalError(f"item status {row.status!r} is not one of {sorted(ITEM_STATUSES)}",
                            code=ErrorCode.STORE_ROW)
    emb = np.array(row.embedding, dtype=np.float32)  # a copy: the caller may reuse its buffer
    if emb.ndim != 1 or emb.size == 0:
        raise InternalError(f"an embedding must be a non-empty 1-D vector, got shape {emb.shape}",
                            code=ErrorCode.STORE_ROW)
    dim = dims.get(row.model)
    if dim is not None and dim != emb.size:
        raise ConfigError(f"model {row.model!r} is stored with {dim}-d embeddings, this row has {emb.size}",
                          code=ErrorCode.EMBEDDING_DIM,
                          hint="a model whose output changed needs a new model name (and version)")
    return emb


def write_columns(arrays: Mapping[str, ArrayV3], columns: Sequence[Column], start: int,
                  block: Sequence[ItemRow | FailureRow], *, resize: bool) -> None:
    """Write ``block``'s rows at ``[start, start + len(block))`` of each column's array (grown to
    that length first when ``resize``, else it must be long enough already)."""
    stop = start + len(block)
    with quiet():
        for col in columns:
            arr = arrays[col.name]
            if resize:
                arr.resize((stop,))
            elif arr.shape[0] < stop:
                raise InternalError(f"{arr.path} has {arr.shape[0]} rows, the block ends at {stop}",
                                    code=ErrorCode.STORE_REGION)
            arr[start:stop] = col.values(block)


def write_embeddings(arrays: Mapping[str, ArrayV3], start: int, block: Sequence[ItemRow], *,
                     resize: bool) -> None:
    """Write the block's embeddings: each row's vector in its own model's array; the other models'
    arrays keep NaN there (their fill value: an all-NaN region is not written at all)."""
    stop = start + len(block)
    with quiet():
        for model, arr in arrays.items():
            if resize:
                arr.resize((stop, arr.shape[1]))
            elif arr.shape[0] < stop:
                raise InternalError(f"{arr.path} has {arr.shape[0]} rows, the block ends at {stop}",
                                    code=ErrorCode.STORE_REGION)
            mine = [i for i, r in enumerate(block) if r.model == model]
            if not mine:
                continue
            values = np.full((len(block), arr.shape[1]), np.nan, dtype=np.float32)
            for i in mine:
                values[i] = block[i].embedding
            arr[start:stop] = values

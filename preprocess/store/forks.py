"""The fork protocol: item rows that other processes write (a Ray job's write tasks), through the writer's checks.

1. :func:`prepare` and :func:`reserve` (:meth:`DatasetWriter.reserve_items`): in the coordinating
   process, grow every item array (and the embedding arrays) once by the rows to come, and fork the
   session (picklable);
2. :func:`write_fork`, anywhere: write disjoint whole chunks of the reserved rows into the fork;
3. :meth:`DatasetWriter.merge_forks`, then one commit.

icechunk's merge does not detect overlaps: the regions given to the forks must never overlap.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import icechunk as ic
import zarr

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import InternalError
from preprocess.rows import schema
from preprocess.rows.schema import CHUNK_ROWS, EMBEDDING, ITEM_COLUMNS, ITEMS, ItemRow, quiet
from preprocess.store.append import Tables, check_item, write_columns, write_embeddings
from preprocess.store.storage import storage_errors


def prepare(rows: Tables, *, model: str, dim: int) -> int:
    """Check that the stored rows end on a chunk boundary with nothing queued (InternalError
    STORE_ALIGN), make ``model``'s embedding array when missing (EMBEDDING_DIM when it has another
    dimension); returns the first row to reserve."""
    start = rows.items.stored
    if rows.items.pending or start % CHUNK_ROWS:
        raise InternalError(f"reserve_items needs the rows to end on a chunk boundary (at {start}, "
                            f"{len(rows.items.pending)} pending)", code=ErrorCode.STORE_ALIGN)
    rows.embedding_array(model, dim)
    return start


def reserve(rows: Tables, session: ic.Session, count: int) -> ic.ForkSession:
    """Grow every item array and embedding array by ``count`` rows (after :func:`prepare`), once,
    and fork ``session``: the fork's writers fill the new rows. Storage errors pass (the writer maps
    them)."""
    stop = rows.items.stored + count
    with quiet():
        for arr in rows.items.arrays.values():
            arr.resize((stop,))
        for emb in rows.embeddings.values():
            emb.resize((stop, emb.shape[1]))
        fork = session.fork()
    rows.items.stored = stop
    rows.items.added += count
    return fork


def write_fork(fork: ic.ForkSession, start: int, rows: Sequence[ItemRow]) -> ic.ForkSession:
    """Write item ``rows`` at ``[start, start + len(rows))`` of a forked session whose arrays
    :meth:`DatasetWriter.reserve_items` already sized; returns the fork, for
    :meth:`DatasetWriter.merge_forks`. The rows get the checks and the embedding fill of
    :meth:`DatasetWriter.add_item`. Rewriting the same region is idempotent (a retried task)."""
    if not rows:
        return fork
    with quiet():
        root = zarr.open_group(store=fork.store, mode="r+")
    items, emb_group = schema.subgroup(root, ITEMS), schema.subgroup(root, EMBEDDING)
    if items is None or emb_group is None:
        raise InternalError("the fork has no item arrays (reserve_items was not called)", code=ErrorCode.STORE_REGION)
    embeddings = schema.arrays(emb_group)
    dims = {m: int(a.shape[1]) for m, a in embeddings.items()}
    checked = []
    for row in rows:
        emb = check_item(row, dims)
        if row.model not in embeddings:
            raise InternalError(f"no embedding array for model {row.model!r} in the fork", code=ErrorCode.STORE_REGION)
        checked.append(dataclasses.replace(row, embedding=emb))
    with storage_errors("write rows into a fork of the dataset"):
        write_columns(schema.arrays(items), ITEM_COLUMNS, start, checked, resize=False)
        write_embeddings(embeddings, start, checked, resize=False)
    return fork

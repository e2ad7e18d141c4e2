"""Appending rows to a branch of the dataset, chunk-aligned, as ONE commit per job.

Rows are buffered in memory and written to zarr only as whole chunks (rows
``[k*CHUNK_ROWS, (k+1)*CHUNK_ROWS)``); the partial tail is written once, at commit. A job that
starts on a branch whose last chunk is partial first fills that chunk to its boundary (rewriting it
once), then continues aligned. So every chunk is written at most once per job and superseded copies
(kept until expire + GC) stay rare.

Nothing reaches the branch before :meth:`DatasetWriter.commit`: a writer dropped (or killed) without
committing leaves the branch at its previous snapshot. One writer per branch at a time; a writer is
not thread-safe and must not be pickled (its session is writable).

On a local store a writer holds the store's lock (:func:`preprocess.store.storage.lock_repo`) from
construction to :meth:`DatasetWriter.close`: a second process's writer fails fast with
ConflictError STORE_LOCKED (or waits ``wait`` seconds). On other storage, concurrent writers are
ordered by icechunk: the later commit fails with ConflictError COMMIT_CONFLICT and commits nothing.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import icechunk as ic
import numpy as np
import zarr

from preprocess.core import interrupts, names
from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, ConflictError, InternalError, NotFoundError, StorageError
from preprocess.rows import schema
from preprocess.rows.recent import Recent
from preprocess.rows.schema import (
    CHUNK_ROWS,
    EMBEDDING,
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
from preprocess.store.storage import (
    REFS_LOCK_FILE,
    StoreLock,
    check_location,
    local_root,
    lock_repo,
    open_repo,
    storage_errors,
)

COMMIT_WAIT = 60.0  # seconds a commit waits for a tag/branch/reset (a moment) on a local store


@dataclass(frozen=True)
class WriterCounts:
    items: int  # rows on the branch plus rows added and not yet committed
    failures: int
    items_added: int  # added since the last commit (or since the writer was opened)
    failures_added: int


class _Table[R: (ItemRow, FailureRow)]:
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


# -- writing rows: shared by DatasetWriter and by writers of forked sessions (write_fork) --------------


def check_item(row: ItemRow, dims: Mapping[str, int]) -> np.ndarray[Any, Any]:
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


def write_columns(arrays: Mapping[str, zarr.Array[Any]], columns: Sequence[Column], start: int,
                  block: Sequence[Any], *, resize: bool) -> None:
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


def write_embeddings(arrays: Mapping[str, zarr.Array[Any]], start: int, block: Sequence[ItemRow], *,
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


class DatasetWriter:
    """Adds items and failures to ``branch`` of ``repo``; :meth:`commit` makes them one snapshot.

    Usable as a context manager: leaving the block without a commit discards what was added.
    """

    def __init__(self, repo: ic.Repository, branch: str, *, wait: float = 0.0) -> None:
        self._repo = repo
        self._branch = branch
        self._closed = False
        self._lock: StoreLock | None = None
        root = local_root(repo)
        self._where = str(root) if root is not None else "its object store"
        check_branch(repo, branch)
        self._keys: set[str] = set()
        self._failure_keys: set[tuple[str, str, str]] = set()
        self._lock = lock_repo(repo, wait=wait, purpose=f"writer on branch {branch}", branch=branch)
        try:
            with storage_errors(f"open branch {branch!r} of", self._where):
                self._open_session(reload=True)
        except BaseException:
            self._unlock()
            raise

    # -- state -----------------------------------------------------------------------------------

    def _open_session(self, *, reload: bool) -> None:
        self._session = self._repo.writable_session(self._branch)
        store = self._session.store
        root = schema.open_layout(store, writable=True)
        if root is None:
            root = schema.create_layout(store)
        with quiet():
            items_group = root.require_group(ITEMS)
            emb_group = items_group.require_group("embedding")
            failures_group = root.require_group(FAILURES)
        self._items: _Table[ItemRow] = _Table(items_group, ITEM_COLUMNS)
        self._failures: _Table[FailureRow] = _Table(failures_group, FAILURE_COLUMNS)
        self._emb_group = emb_group
        self._emb = schema.arrays(emb_group)
        for model, arr in self._emb.items():
            if arr.ndim != 2 or arr.shape[0] != self._items.stored:
                raise StorageError(f"embedding array {model!r} has shape {arr.shape}, expected "
                                   f"({self._items.stored}, D)", code=ErrorCode.STORE_FORMAT,
                                   hint="the dataset is damaged; reset the branch to an earlier snapshot")
        if reload:
            self._keys = self._read_keys()
            self._failure_keys = self._read_failure_keys()

    def _read_keys(self) -> set[str]:
        if not self._items.stored:
            return set()
        shas = schema.read(self._items.arrays["source_sha256"])
        fps = schema.read(self._items.arrays["fingerprint"])
        return {schema.item_key(str(s), str(f)) for s, f in zip(shas, fps, strict=True)}

    def _read_failure_keys(self) -> set[tuple[str, str, str]]:
        if not self._failures.stored:
            return set()
        a = self._failures.arrays
        cols = [schema.read(a[name]) for name in ("source_sha256", "source_path", "fingerprint", "code")]
        return {schema.failure_key(str(s), names.real(str(p)), str(f), str(c))  # the name, as rows in memory hold it
                for s, p, f, c in zip(*cols, strict=True)}

    @property
    def branch(self) -> str:
        return self._branch

    @property
    def base_snapshot(self) -> str:
        """The snapshot the uncommitted rows will be committed on top of."""
        return str(self._session.snapshot_id)

    @property
    def counts(self) -> WriterCounts:
        return WriterCounts(items=self._items.rows, failures=self._failures.rows,
                            items_added=self._items.added, failures_added=self._failures.added)

    @property
    def models(self) -> dict[str, int]:
        """Embedding model name -> dimension, for every model on the branch or added."""
        return {m: int(a.shape[1]) for m, a in self._emb.items()}

    def existing_keys(self) -> set[str]:
        """Item keys (``source_sha256:fingerprint``) on the branch, plus those added or claimed by this
        writer (a copy: e.g. for processes that skip what is stored before the rows reach here)."""
        return set(self._keys)

    def existing_failures(self) -> set[tuple[str, str, str]]:
        """:func:`~preprocess.rows.schema.failure_key` of failures on the branch, plus those added here."""
        return set(self._failure_keys)

    def claim(self, key: str) -> bool:
        """Reserve item ``key`` for a row this writer is about to get; False when the branch, or this
        writer, already has (or claimed) it. Claims end with the writer: a new writer re-reads the
        keys of the branch (what was committed)."""
        if key in self._keys:
            return False
        self._keys.add(key)
        return True

    def has_failure(self, key: tuple[str, str, str]) -> bool:
        """Whether the failure (:attr:`FailureRow.key`) is on the branch or was added here."""
        return key in self._failure_keys

    def recent_qualities(self, fingerprint: str, rows: int = 512) -> list[int]:
        """Qualities chosen by the gate (status "ok") for ``fingerprint`` among the branch's last ``rows``
        stored items, oldest first: a new job's first guess for its quality search."""
        return list(self.recent_choices(fingerprint, rows=rows).qualities)

    def recent_choices(self, fingerprint: str, model: str | None = None, rows: int = 512) -> Recent:
        """What the gate chose (status "ok") for ``fingerprint`` among the branch's last ``rows`` stored
        items, oldest first: qualities, the variant that made each, and (with ``model``) the stored
        images' embeddings under it: where a new job's searches start (:meth:`GateStats.seed`)."""
        stored = self._items.stored
        if not stored:
            return Recent()
        window = slice(max(0, stored - rows), stored)
        a = self._items.arrays
        fps, statuses, qualities, encoders, chroma = (
            schema.read(a[name], window) for name in ("fingerprint", "status", "quality", "encoder", "chroma"))
        keep = [i for i, (f, st) in enumerate(zip(fps, statuses, strict=True))
                if str(f) == fingerprint and str(st) == "ok"]
        emb = self._emb.get(model) if model is not None else None
        embeddings = schema.read(emb, window)[keep].astype(np.float32) if emb is not None and keep else None
        return Recent(tuple(int(qualities[i]) for i in keep), tuple((str(encoders[i]), str(chroma[i])) for i in keep),
                      embeddings)

    # -- adding ----------------------------------------------------------------------------------

    def add_item(self, row: ItemRow) -> None:
        self._check_open()
        emb = check_item(row, self.models)
        if row.model not in self._emb:
            self._emb[row.model] = schema.create_embedding(self._emb_group, row.model, self._items.stored,
                                                           emb.size)
        self._items.pending.append(dataclasses.replace(row, embedding=emb))
        self._items.added += 1
        self._keys.add(row.key)
        self._write(final=False)

    def add_failure(self, row: FailureRow) -> None:
        self._check_open()
        for col in FAILURE_COLUMNS:
            col.check(getattr(row, col.name))
        self._failures.pending.append(row)
        self._failures.added += 1
        self._failure_keys.add(row.key)
        self._write(final=False)

    def _write(self, *, final: bool) -> None:
        with self._failing("write"):
            for start, block in self._items.take(final=final):
                self._items.write(start, block)
                write_embeddings(self._emb, start, block, resize=True)
            for start, fblock in self._failures.take(final=final):
                self._failures.write(start, fblock)

    @contextmanager
    def _failing(self, action: str) -> Iterator[None]:
        """Storage calls whose failure (:func:`~preprocess.store.storage.storage_error`: STORE_FULL,
        STORE_IO) ends the writer: what was added and not committed is discarded (the branch stays
        at its last commit), and the lock is released."""
        try:
            with storage_errors(action, self._where):
                yield
        except StorageError:
            self.close()
            raise

    # -- rows written elsewhere (forked sessions) --------------------------------------------------

    def reserve_items(self, count: int, *, model: str, dim: int) -> tuple[int, ic.ForkSession]:
        """Make room for ``count`` item rows that other processes write, and fork the session.

        The branch's rows must end on a chunk boundary (add rows with :meth:`add_item` until they
        do). Every item array (and the embedding arrays, ``model``'s created when missing) is
        resized once, here; returns (first reserved row, a picklable fork). Writers of the fork
        (:func:`write_fork`) must write disjoint whole chunks of the reserved rows; then
        :meth:`merge_forks` and :meth:`commit`.
        """
        self._check_open()
        start = self._items.stored
        if self._items.pending or start % CHUNK_ROWS:
            raise InternalError(f"reserve_items needs the rows to end on a chunk boundary (at {start}, "
                                f"{len(self._items.pending)} pending)", code=ErrorCode.STORE_ALIGN)
        if model not in self._emb:
            self._emb[model] = schema.create_embedding(self._emb_group, model, start, dim)
        elif self._emb[model].shape[1] != dim:
            raise ConfigError(f"model {model!r} is stored with {self._emb[model].shape[1]}-d embeddings, not {dim}",
                              code=ErrorCode.EMBEDDING_DIM,
                              hint="a model whose output changed needs a new model name (and version)")
        stop = start + count
        with quiet(), self._failing("write"):
            for arr in self._items.arrays.values():
                arr.resize((stop,))
            for emb in self._emb.values():
                emb.resize((stop, emb.shape[1]))
            fork = self._session.fork()
        self._items.stored = stop
        self._items.added += count
        return start, fork

    def merge_forks(self, forks: Sequence[ic.ForkSession]) -> None:
        """Merge the forks' writes into this writer's session (their rows' keys should have been
        :meth:`claim`-ed, so the writer knows them)."""
        self._check_open()
        if forks:
            with self._failing("write"):
                self._session.merge(*forks)

    # -- committing ------------------------------------------------------------------------------

    def commit(self, message: str, metadata: Mapping[str, Any] | None = None, *,
               allow_empty: bool = False) -> str | None:
        """Write the buffered tail and commit everything added as ONE snapshot; returns its id.

        Returns None (and commits nothing) when nothing was added, unless ``allow_empty``.
        Raises ConflictError COMMIT_CONFLICT when the branch moved meanwhile; then nothing was
        committed and the writer is closed (rerun the job). The writer stays usable after a
        successful commit (e.g. for periodic checkpoints).
        """
        self._check_open()
        if not (self._items.added or self._failures.added or allow_empty):
            return None
        meta = dict(metadata or {})
        try:
            json.dumps(meta, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InternalError(f"commit metadata is not plain JSON: {exc}", code=ErrorCode.COMMIT_METADATA) from exc
        self._write(final=True)
        refs_lock = lock_repo(self._repo, wait=COMMIT_WAIT, purpose=f"commit to {self._branch}",
                              name=REFS_LOCK_FILE)
        try:
            with interrupts.held(), quiet(), self._failing(f"commit to branch {self._branch!r} of"):
                snapshot = self._session.commit(message, metadata=meta, allow_empty=allow_empty)
                interrupts.committed(str(snapshot))
        except ic.ConflictError as exc:  # also RebaseFailedError
            self.close()
            raise ConflictError(f"branch {self._branch!r} changed while this job was writing; nothing was "
                                f"committed ({exc})", code=ErrorCode.COMMIT_CONFLICT) from exc
        finally:
            if refs_lock is not None:
                refs_lock.release()
        self._items.added = self._failures.added = 0
        with self._failing(f"reopen branch {self._branch!r} of"):  # for the next rows (the commit is made)
            self._open_session(reload=False)
            if self._session.snapshot_id != snapshot:  # someone committed right after us: re-read the branch
                self._open_session(reload=True)
        return str(snapshot)

    def close(self) -> None:
        """Discard whatever was not committed; the writer cannot be used afterwards."""
        if not self._closed:
            self._closed = True
            self._items.pending.clear()
            self._failures.pending.clear()
            try:
                if self._session.has_uncommitted_changes:
                    self._session.discard_changes()
            finally:
                self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _check_open(self) -> None:
        if self._closed:
            raise InternalError("this DatasetWriter is closed (after close(), a failed commit or the end of "
                                "its with-block)", code=ErrorCode.STORE_CLOSED)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("a DatasetWriter holds a writable icechunk session and must not be pickled or "
                        "sent to another process; use one writer in the coordinating process")

    def __repr__(self) -> str:
        c = self.counts
        return (f"DatasetWriter(branch={self._branch!r}, items={c.items}, failures={c.failures}, "
                f"uncommitted={c.items_added + c.failures_added})")


NEW_BRANCH = "main"  # the only branch of a new dataset


def check_branch(repo: ic.Repository, branch: str) -> None:
    """ConfigError BRANCH_MISSING unless ``branch`` is a branch of ``repo``."""
    if branch not in repo.list_branches():
        raise NotFoundError(f"branch {branch!r} does not exist in this dataset", code=ErrorCode.BRANCH_MISSING,
                          hint="create it first (e.g. from main) with the branch command")


def check_target(location: str, branch: str = NEW_BRANCH) -> None:
    """Everything :func:`open_writer` with ``create`` would refuse, checked before anything is created
    or locked: the location (see :func:`~preprocess.store.storage.check_location`) and the branch (a
    new dataset has only ``main``: BRANCH_MISSING)."""
    if check_location(location):
        check_branch(open_repo(location, create=False), branch)
    elif branch != NEW_BRANCH:
        raise NotFoundError(f"branch {branch!r} does not exist: {location} is a new dataset, whose only branch "
                          f"is {NEW_BRANCH!r}", code=ErrorCode.BRANCH_MISSING,
                          hint=f"run into {NEW_BRANCH} first (without --branch), then create the branch with "
                               "`preprocess branch`")


def open_writer(location: str, branch: str = NEW_BRANCH, *, create: bool = False, wait: float = 0.0) -> DatasetWriter:
    """A writer on ``branch`` of the dataset at ``location`` (created when ``create`` and missing,
    after :func:`check_target`: a refused target creates nothing); ``wait``: seconds to wait for
    another process's writer on the same local store."""
    if create:
        check_target(location, branch)
    return DatasetWriter(open_repo(location, create=create), branch, wait=wait)

"""Adding rows to a branch of the dataset as ONE commit per job: :class:`DatasetWriter`, the facade the
drivers use over the writer's jobs, each in its own module:

- :mod:`preprocess.store.append`: the rows, appended chunk-aligned (columns and embeddings);
- :mod:`preprocess.store.keys`: the dedupe index (item keys, failure keys; :meth:`DatasetWriter.claim`);
- :mod:`preprocess.store.seed`: the gate's seed (:meth:`DatasetWriter.recent_choices`);
- :mod:`preprocess.store.forks`: rows written by other processes (reserve, write a fork, merge);
- :mod:`preprocess.store.commit`: the branch's writable session, its locks and its commit.

Nothing reaches the branch before :meth:`DatasetWriter.commit`: a writer dropped (or killed) without
committing leaves the branch at its previous snapshot. One writer per branch at a time; a writer is
not thread-safe and must not be pickled (its session is writable). A storage failure (STORE_FULL,
STORE_IO) ends the writer: what was added and not committed is discarded and the lock released.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import NoReturn

import icechunk as ic

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConflictError, InternalError, NotFoundError, StorageError
from preprocess.rows.recent import Recent
from preprocess.rows.schema import FailureRow, ItemRow
from preprocess.sources.location import Location, Where
from preprocess.store import forks, origins, seed
from preprocess.store.append import Tables
from preprocess.store.commit import NEW_BRANCH, BranchSession, check_branch, plain_metadata
from preprocess.store.keys import FailureKey, Keys
from preprocess.store.storage import check_location, open_repo, storage_errors

__all__ = ["NEW_BRANCH", "DatasetWriter", "WriterCounts", "check_target", "open_writer"]


@dataclass(frozen=True)
class WriterCounts:
    items: int  # rows on the branch plus rows added and not yet committed
    failures: int
    items_added: int  # added since the last commit (or since the writer was opened)
    failures_added: int


class DatasetWriter:
    """Adds items and failures to ``branch`` of ``repo``; :meth:`commit` makes them one snapshot.

    Usable as a context manager: leaving the block without a commit discards what was added.
    """

    def __init__(self, repo: ic.Repository, branch: str, *, wait: float = 0.0) -> None:
        self._closed = False
        self._branch = BranchSession(repo, branch, wait=wait)  # BRANCH_MISSING, STORE_LOCKED
        self._keys = Keys()
        try:
            with storage_errors(f"open branch {branch!r} of", self._branch.where):
                self._open(reload=True)
        except BaseException:
            self._branch.unlock()
            raise

    def _open(self, *, reload: bool) -> None:
        """A new session on the branch's tip; with ``reload``, the dedupe index read again from it."""
        self._rows = Tables(self._branch.open().store)
        if reload:
            self._keys = Keys.read(self._rows.items, self._rows.failures)

    # -- state -----------------------------------------------------------------------------------

    @property
    def branch(self) -> str:
        return self._branch.branch

    @property
    def base_snapshot(self) -> str:
        """The snapshot the uncommitted rows will be committed on top of."""
        return str(self._branch.session.snapshot_id)

    @property
    def counts(self) -> WriterCounts:
        items, failures = self._rows.items, self._rows.failures
        return WriterCounts(items=items.rows, failures=failures.rows, items_added=items.added,
                            failures_added=failures.added)

    @property
    def models(self) -> dict[str, int]:
        """Embedding model name -> dimension, for every model on the branch or added."""
        return self._rows.models

    def existing_keys(self) -> set[str]:
        """Item keys (``source_sha256:fingerprint``) on the branch, plus those added or claimed by this
        writer (a copy: e.g. for processes that skip what is stored before the rows reach here)."""
        return set(self._keys.items)

    def existing_failures(self) -> set[FailureKey]:
        """:func:`~preprocess.rows.schema.failure_key` of failures on the branch, plus those added here."""
        return set(self._keys.failures)

    def claim(self, key: str) -> bool:
        """Reserve item ``key`` for a row this writer is about to get; False when the branch, or this
        writer, already has (or claimed) it. Claims end with the writer: a new writer re-reads the
        keys of the branch (what was committed)."""
        return self._keys.claim(key)

    def has_failure(self, key: FailureKey) -> bool:
        """Whether the failure (:attr:`FailureRow.key`) is on the branch or was added here."""
        return key in self._keys.failures

    def recent_qualities(self, fingerprint: str, rows: int = seed.WINDOW) -> list[int]:
        """Qualities chosen by the gate (status "ok") for ``fingerprint`` among the branch's last ``rows``
        stored items, oldest first: a new job's first guess for its quality search."""
        return list(self.recent_choices(fingerprint, rows=rows).qualities)

    def recent_choices(self, fingerprint: str, model: str | None = None, rows: int = seed.WINDOW) -> Recent:
        """What the gate chose (status "ok") for ``fingerprint`` among the branch's last ``rows`` stored
        items, oldest first: qualities, the variant that made each, and (with ``model``) the stored
        images' embeddings under it: where a new job's searches start (:meth:`GateStats.seed_from`)."""
        return seed.recent_choices(self._rows.items, self._rows.embeddings, fingerprint, model, rows)

    # -- adding ----------------------------------------------------------------------------------

    def add_item(self, row: ItemRow) -> None:
        self._check_open()
        self._rows.add_item(row)
        self._keys.items.add(row.key)
        self._write(final=False)

    def add_failure(self, row: FailureRow) -> None:
        self._check_open()
        self._rows.add_failure(row)
        self._keys.failures.add(row.key)
        self._write(final=False)

    def _write(self, *, final: bool) -> None:
        with self._failing("write"):
            self._rows.write(final=final)

    @contextmanager
    def _failing(self, action: str) -> Iterator[None]:
        """Storage calls whose failure (:func:`~preprocess.store.storage.storage_error`: STORE_FULL,
        STORE_IO) ends the writer: what was added and not committed is discarded (the branch stays
        at its last commit), and the lock is released."""
        try:
            with storage_errors(action, self._branch.where):
                yield
        except StorageError:
            self.close()
            raise

    # -- rows written elsewhere (forked sessions: preprocess.store.forks) --------------------------

    def reserve_items(self, count: int, *, model: str, dim: int) -> tuple[int, ic.ForkSession]:
        """Make room for ``count`` item rows that other processes write, and fork the session.

        The branch's rows must end on a chunk boundary (add rows with :meth:`add_item` until they
        do). Every item array (and the embedding arrays, ``model``'s created when missing) is
        resized once, here; returns (first reserved row, a picklable fork). Writers of the fork
        (:func:`~preprocess.store.forks.write_fork`) must write disjoint whole chunks of the reserved rows; then
        :meth:`merge_forks` and :meth:`commit`.
        """
        self._check_open()
        start = forks.prepare(self._rows, model=model, dim=dim)
        with self._failing("write"):
            return start, forks.reserve(self._rows, self._branch.session, count)

    def merge_forks(self, forks: Sequence[ic.ForkSession]) -> None:
        """Merge the forks' writes into this writer's session (their rows' keys should have been
        :meth:`claim`-ed, so the writer knows them)."""
        self._check_open()
        if forks:
            with self._failing("write"):
                self._branch.session.merge(*forks)

    # -- committing (preprocess.store.commit) ------------------------------------------------------

    def commit(self, message: str, metadata: Mapping[str, object] | None = None, *,
               allow_empty: bool = False) -> str | None:
        """Write the buffered tail and commit everything added as ONE snapshot; returns its id.

        Returns None (and commits nothing) when nothing was added, unless ``allow_empty``.
        Raises ConflictError COMMIT_CONFLICT when the branch moved meanwhile; then nothing was
        committed and the writer is closed (rerun the job). The writer stays usable after a
        successful commit (e.g. for periodic checkpoints).
        """
        self._check_open()
        if not (self._rows.added or allow_empty):
            return None
        meta = plain_metadata(metadata)
        self._write(final=True)
        totals = self.counts
        meta.update(origins.held(totals.items, totals.failures))  # what the version holds: read with its history
        branch = self._branch.branch
        try:
            snapshot = self._branch.commit(message, meta, allow_empty=allow_empty,
                                           failing=self._failing(f"commit to branch {branch!r} of"))
        except ic.ConflictError as exc:  # also RebaseFailedError
            self.close()
            raise ConflictError(f"branch {branch!r} changed while this job was writing; nothing was "
                                f"committed ({exc})", code=ErrorCode.COMMIT_CONFLICT) from exc
        self._rows.items.added = self._rows.failures.added = 0
        with self._failing(f"reopen branch {branch!r} of"):  # for the next rows (the commit is made)
            self._open(reload=False)
            if self._branch.session.snapshot_id != snapshot:  # someone committed right after us: re-read
                self._open(reload=True)
        return snapshot

    def close(self) -> None:
        """Discard whatever was not committed; the writer cannot be used afterwards."""
        if not self._closed:
            self._closed = True
            self._rows.discard()
            try:
                self._branch.discard()
            finally:
                self._branch.unlock()

    def _check_open(self) -> None:
        if self._closed:
            raise InternalError("this DatasetWriter is closed (after close(), a failed commit or the end of "
                                "its with-block)", code=ErrorCode.STORE_CLOSED)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __getstate__(self) -> NoReturn:
        raise TypeError("a DatasetWriter holds a writable icechunk session and must not be pickled or "
                        "sent to another process; use one writer in the coordinating process")

    def __repr__(self) -> str:
        c = self.counts
        return (f"DatasetWriter(branch={self.branch!r}, items={c.items}, failures={c.failures}, "
                f"uncommitted={c.items_added + c.failures_added})")


def check_target(location: Where | Location, branch: str = NEW_BRANCH) -> None:
    """Everything :func:`open_writer` with ``create`` would refuse, checked before anything is created
    or locked: the location (see :func:`~preprocess.store.storage.check_location`) and the branch (a
    new dataset has only ``main``: BRANCH_MISSING)."""
    loc = Location.of_store(location)
    if check_location(loc):
        check_branch(open_repo(loc, create=False), branch, loc.text)
    elif branch != NEW_BRANCH:
        raise NotFoundError(f"branch {branch!r} does not exist: {loc.text} is a new dataset, whose only branch "
                          f"is {NEW_BRANCH!r}", code=ErrorCode.BRANCH_MISSING,
                          hint=f"run into {NEW_BRANCH} first (without --branch), then create the branch with "
                               "`preprocess branch`")


def open_writer(location: Where | Location, branch: str = NEW_BRANCH, *, create: bool = False,
                wait: float = 0.0) -> DatasetWriter:
    """A writer on ``branch`` of the dataset at ``location`` (created when ``create`` and missing,
    after :func:`check_target`: a refused target creates nothing); ``wait``: seconds to wait for
    another process's writer on the same local store."""
    loc = Location.of_store(location)
    if create:
        check_target(loc, branch)
    return DatasetWriter(open_repo(loc, create=create), branch, wait=wait)

"""A writable session of one branch, with the store's locks, and its ONE commit.

On a local store the session holds the store's writer lock (:func:`preprocess.store.lock.lock_repo`)
from :class:`BranchSession` to :meth:`BranchSession.unlock`: a second process's writer fails fast
with ConflictError STORE_LOCKED (or waits ``wait`` seconds). A commit takes the refs lock for a
moment and runs in :func:`preprocess.core.interrupts.held`, so a signal never cuts it. On other
storage, concurrent writers are ordered by icechunk: the later commit fails (ic.ConflictError,
which the writer turns into COMMIT_CONFLICT) and commits nothing.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from contextlib import AbstractContextManager

import icechunk as ic

from preprocess.core import interrupts
from preprocess.core.codes import ErrorCode
from preprocess.core.errors import InternalError, NotFoundError
from preprocess.rows.schema import quiet
from preprocess.store.lock import REFS_LOCK_FILE, StoreLock, local_root, lock_repo

COMMIT_WAIT = 60.0  # seconds a commit waits for a tag/branch/reset (a moment) on a local store
NEW_BRANCH = "main"  # the only branch of a new dataset


def check_branch(repo: ic.Repository, branch: str, where: str = "STORE") -> None:
    """NotFoundError BRANCH_MISSING unless ``branch`` is a branch of ``repo`` (at ``where``: its hint gives
    the command that creates the branch)."""
    if branch not in repo.list_branches():
        command = shlex.join(["preprocess", "branch", where, branch, NEW_BRANCH])
        raise NotFoundError(f"branch {branch!r} does not exist in this dataset", code=ErrorCode.BRANCH_MISSING,
                          hint=f"create it first, from {NEW_BRANCH} or another ref: `{command}`")


def plain_metadata(metadata: Mapping[str, object] | None) -> dict[str, object]:
    """A commit's metadata as plain JSON (InternalError COMMIT_METADATA when it is not: a caller bug)."""
    meta = dict(metadata or {})
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InternalError(f"commit metadata is not plain JSON: {exc}", code=ErrorCode.COMMIT_METADATA) from exc
    return meta


class BranchSession:
    """``branch`` of ``repo`` (checked: BRANCH_MISSING), locked for one writer (local stores), and
    its current writable :attr:`session` (:meth:`open` starts a new one)."""

    def __init__(self, repo: ic.Repository, branch: str, *, wait: float = 0.0) -> None:
        self.repo = repo
        self.branch = branch
        root = local_root(repo)
        self.where = str(root) if root is not None else "its object store"  # for storage errors
        check_branch(repo, branch, self.where if root is not None else "STORE")
        self._lock: StoreLock | None = lock_repo(repo, wait=wait, purpose=f"writer on branch {branch}",
                                                 branch=branch)

    def open(self) -> ic.Session:
        """A new writable session on the branch's tip (what was not committed is gone)."""
        self.session = self.repo.writable_session(self.branch)
        return self.session

    def commit(self, message: str, metadata: dict[str, object], *, allow_empty: bool,
               failing: AbstractContextManager[None]) -> str:
        """Commit the session as ONE snapshot under the refs lock, never cut by a signal; returns its
        id. The commit runs inside ``failing`` (the writer's mapping of storage failures); an
        ic.ConflictError (the branch moved) passes to the caller."""
        refs_lock = lock_repo(self.repo, wait=COMMIT_WAIT, purpose=f"commit to {self.branch}", name=REFS_LOCK_FILE)
        try:
            with interrupts.held(), quiet(), failing:
                snapshot = self.session.commit(message, metadata=metadata, allow_empty=allow_empty)
                interrupts.committed(str(snapshot))
        finally:
            if refs_lock is not None:
                refs_lock.release()
        return str(snapshot)

    def discard(self) -> None:
        """Drop the session's uncommitted changes."""
        if self.session.has_uncommitted_changes:
            self.session.discard_changes()

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

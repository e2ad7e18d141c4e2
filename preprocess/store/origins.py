"""Which commit added each row of a version: THE one answer, for every reader (``show --item``, the
lineage API, the web UI's item and failure pages, ``ls``, ``Dataset.added_by``, the export manifest).

A commit only ever appends rows (every driver: ``run``, the watch daemon, which commits many times
under one job id, and Ray, which writes forks and commits once). So along a version's history, oldest
first, the number of rows never falls, and the rows a commit added are the ones between its parent's
count and its own: row ``r`` was added by the oldest commit of the history that holds more than
``r`` rows. The counts are read from each snapshot's arrays (their length), which every store has,
whatever version of preprocess wrote it; a job id is not enough (a daemon's commits share one).

Every commit this version writes also records its counts in its metadata (:data:`HELD`), which the
history listing reads at once: reading each snapshot's arrays costs ~8 ms a commit, and a watch daemon
commits every 30 s (2,880 commits a day: 24 s for an export's ``commit`` column). The recorded counts are
a claim, checked before use: they never fall along the history and the tip's equal its arrays' lengths;
else (or for a commit an older version wrote) the arrays are read. A snapshot never changes, so the
counts read from it are kept for the life of the process (a few bytes each).
"""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import icechunk as ic
import numpy as np
import numpy.typing as npt

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import NotFoundError
from preprocess.rows import schema
from preprocess.rows.schema import FAILURE_COLUMNS, FAILURES, ITEM_COLUMNS, ITEMS
from preprocess.store import refs
from preprocess.store.refs import Ref
from preprocess.store.storage import read_errors

_COUNTS: dict[str, tuple[int, int]] = {}  # snapshot id -> (items, failures) it holds
_COUNTS_LOCK = threading.Lock()
_MAX_KEPT = 200_000


HELD = "rows_held"  # commit metadata (Provenance.rows_held): {"items": n, "failures": m}, the rows the
# version holds at that commit


def held(items: int, failures: int) -> dict[str, object]:
    """The metadata entry a commit records its counts in (the writer's, at every commit)."""
    return {HELD: {"items": items, "failures": failures}}


def _recorded(metadata: object) -> tuple[int, int] | None:
    """The counts a commit's metadata records, or None (none recorded, or not two counts >= 0)."""
    entry = metadata.get(HELD) if isinstance(metadata, dict) else None
    if not isinstance(entry, dict):
        return None
    found = entry.get("items"), entry.get("failures")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in found):
        return None
    return int(found[0]), int(found[1])  # type: ignore[arg-type]


@dataclass(frozen=True)
class Added:
    """One commit of a version's history and the rows it added (``range`` of row numbers)."""

    snapshot: str
    items: range
    failures: range


def counts(repo: ic.Repository, snapshot: str) -> tuple[int, int]:
    """(items, failures) held by ``snapshot`` (0, 0 for an empty one, such as the first)."""
    with _COUNTS_LOCK:
        known = _COUNTS.get(snapshot)
    if known is not None:
        return known
    with read_errors():
        root = schema.open_layout(refs.session(repo, Ref(snapshot, "snapshot", snapshot)).store, writable=False)
        found = (0, 0)
        if root is not None:
            found = (_rows(root, ITEMS, "source_sha256"), _rows(root, FAILURES, "source_path"))
    with _COUNTS_LOCK:
        if len(_COUNTS) >= _MAX_KEPT:
            _COUNTS.clear()
        _COUNTS[snapshot] = found
    return found


def _rows(root: object, path: str, column: str) -> int:
    """The length of one array of a row group (every array of a group has the same length)."""
    import zarr

    assert isinstance(root, zarr.Group)
    group = schema.subgroup(root, path)
    if group is None:
        return 0
    with schema.quiet():
        try:
            node = group[column]
        except KeyError:
            return schema.group_rows(group, ITEM_COLUMNS if path == ITEMS else FAILURE_COLUMNS)
    return int(node.shape[0]) if isinstance(node, zarr.Array) else 0


class Origins:
    """The commits of one version's history (oldest first) and the rows each added."""

    def __init__(self, repo: ic.Repository, snapshot: str) -> None:
        self._repo = repo
        self.snapshot = snapshot
        infos = list(reversed(refs.history(repo, snapshot=snapshot)))
        self.history: list[str] = [s.id for s in infos]
        self._held = self._checked([_recorded(s.metadata) for s in infos])

    def _checked(self, recorded: list[tuple[int, int] | None]) -> list[tuple[int, int] | None]:
        """The recorded counts when they never fall and the tip's are its arrays' (else none: all are read)."""
        known = [c for c in recorded if c is not None]
        if not known:
            return recorded
        steady = all(a[0] <= b[0] and a[1] <= b[1] for a, b in itertools.pairwise(known))
        tip = recorded[-1]
        if steady and tip is not None and tip == counts(self._repo, self.history[-1]):
            return recorded
        return [None] * len(recorded)

    def _count(self, k: int, part: int) -> int:
        found = self._held[k]
        return (found if found is not None else counts(self._repo, self.history[k]))[part]

    def _find(self, row: int, part: int, what: str) -> str:
        total = self._count(len(self.history) - 1, part)
        if not 0 <= row < total:
            raise NotFoundError(f"there is no {what} {row} in snapshot {self.snapshot} (it has {total})",
                                code=ErrorCode.ITEM_MISSING, hint=f"{what}s are numbered from 0")
        lo, hi = 0, len(self.history) - 1  # the answer is in [lo, hi]: history[hi] holds more than `row`
        while lo < hi:
            mid = (lo + hi) // 2
            if self._count(mid, part) > row:
                hi = mid
            else:
                lo = mid + 1
        return self.history[lo]

    def item(self, row: int) -> str:
        """The snapshot id of the commit that added item ``row`` (NotFoundError ITEM_MISSING when
        the version has no such row)."""
        return self._find(row, 0, "item")

    def failure(self, row: int) -> str:
        """The snapshot id of the commit that recorded failure ``row``."""
        return self._find(row, 1, "failure")

    def commits(self) -> list[Added]:
        """Every commit of the history, oldest first, with the rows it added (reads every snapshot)."""
        out: list[Added] = []
        items = failures = 0
        for k, snapshot in enumerate(self.history):
            n_items, n_failures = self._count(k, 0), self._count(k, 1)
            n_items, n_failures = max(n_items, items), max(n_failures, failures)  # never falls (see above)
            out.append(Added(snapshot, range(items, n_items), range(failures, n_failures)))
            items, failures = n_items, n_failures
        return out

    def item_commits(self, rows: Sequence[int] | npt.NDArray[np.int64] | None = None) -> list[str]:
        """The snapshot id that added each of ``rows`` (default: every item), in their order."""
        added = [a for a in self.commits() if a.items]
        ends = [a.items.stop for a in added]
        wanted = range(ends[-1] if ends else 0) if rows is None else rows
        return [added[bisect.bisect_right(ends, int(r))].snapshot for r in wanted]

    def failure_commits(self) -> list[str]:
        """The snapshot id that recorded each failure, in row order."""
        return [a.snapshot for a in self.commits() for _ in a.failures]


def origins(repo: ic.Repository, snapshot: str) -> Origins:
    """The row-to-commit map of version ``snapshot`` (a full snapshot id)."""
    return Origins(repo, snapshot)

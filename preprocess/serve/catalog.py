"""The store as the web UI reads it: refs resolved on every request (branches move), everything
of a snapshot cached (snapshots never change).

History comes from the public functions of :mod:`preprocess.store.history` and
:mod:`preprocess.store.refs`, turned into plain dicts by :func:`plain` (the one adapter: when those
functions return typed objects, only it changes). Rows come from :class:`preprocess.store.Dataset`:
whole columns only for what a grid sorts or filters on, the page's rows for everything else.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from typing import Any

import icechunk as ic
import numpy as np

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import NotFoundError
from preprocess.pipeline.images import decode_rgb
from preprocess.rows.schema import item_key
from preprocess.serve import compare, renditions
from preprocess.serve.cache import LRU
from preprocess.serve.grid import GridQuery, select
from preprocess.store import Dataset, Ref, history, open_repo, refs


def plain(value: Any) -> Any:
    """A history result as plain data: objects with ``to_dict()`` become dicts, lists element-wise."""
    if isinstance(value, list):
        return [plain(v) for v in value]
    to_dict = getattr(value, "to_dict", None)
    return to_dict() if callable(to_dict) else value


class Catalog:
    """Read-only access to one store, with per-snapshot caches (columns, selections, thumbnails,
    comparisons) and a count of the rows read per field (``reads``)."""

    def __init__(self, location: str, repo: ic.Repository | None = None) -> None:
        self.location = location
        self.repo = repo if repo is not None else open_repo(location, create=False)
        self.reads: Counter[str] = Counter()
        self._reads_lock = threading.Lock()
        self._pinned: LRU[Ref] = LRU(max_items=4096)
        self._datasets: LRU[Dataset] = LRU(max_items=16)
        self._columns: LRU[np.ndarray] = LRU(max_items=128, max_bytes=256 * 2**20, size=_nbytes)
        self._selections: LRU[np.ndarray] = LRU(max_items=64, max_bytes=64 * 2**20, size=_nbytes)
        self._jobs: LRU[list[dict[str, Any]]] = LRU(max_items=64)
        self._diffs: LRU[dict[str, Any]] = LRU(max_items=8)
        self.thumbnails: LRU[bytes] = LRU(max_items=8192, max_bytes=128 * 2**20, size=len)
        self.comparisons: LRU[compare.Comparison] = LRU(max_items=32, max_bytes=256 * 2**20,
                                                        size=lambda c: c.nbytes)

    # -- refs ------------------------------------------------------------------------------------

    def resolve(self, ref: str) -> Ref:
        """A branch, tag, snapshot id or prefix (ConfigError REF_MISSING / REF_AMBIGUOUS, as the CLI)."""
        if len(ref) > 200:
            raise NotFoundError(f"{ref[:40]!r}... is not a REF (too long)", code=ErrorCode.REF_MISSING,
                              hint="name a branch, a tag or a snapshot id")
        return refs.resolve_ref(self.repo, ref)

    def pinned(self, snapshot: str) -> Ref:
        """A full snapshot id from a URL path (what item and image URLs are pinned to)."""
        if not refs.SNAPSHOT_ID.match(snapshot):
            raise NotFoundError(f"{snapshot[:40]!r} is not a snapshot id", code=ErrorCode.REF_MISSING,
                              hint="snapshot ids are 20 characters (0-9, A-Z), as `preprocess log` lists them")
        known = self._pinned.get(snapshot)  # until gc deletes it (after a reset): then forget() it
        return known if known is not None else self._pinned.put(snapshot, self.resolve(snapshot))

    def forget(self, snapshot: str) -> None:
        """Drop what is cached of ``snapshot`` but its renditions (a read of it failed: gc may have deleted it)."""
        self._pinned.pop(snapshot)
        self._datasets.pop(snapshot)

    def names(self) -> list[str]:
        return sorted(refs.branches(self.repo)) + sorted(refs.tags(self.repo))

    def tips(self) -> dict[str, list[dict[str, Any]]]:
        """Branches (with their number of items) and tags, each with the commit it points at."""
        labels = refs.labels(self.repo)
        out: dict[str, list[dict[str, Any]]] = {"branches": [], "tags": []}
        for kind, names, tip in (("branches", refs.branches(self.repo), refs.branch_tip),
                                 ("tags", refs.tags(self.repo), refs.tag_target)):
            for name in sorted(names):
                snap = tip(self.repo, name)
                commit = plain(history.commit(refs.snapshot_info(self.repo, snap), labels))
                entry = {"name": name, "commit": commit}
                if kind == "branches":
                    entry["items"] = len(self.dataset(snap))
                out[kind].append(entry)
        return out

    # -- history ---------------------------------------------------------------------------------

    def log(self, target: Ref) -> list[dict[str, Any]]:
        return list(plain(history.log(self.repo, target.snapshot)))

    def commit(self, target: Ref) -> dict[str, Any]:
        return dict(plain(history.show(self.repo, target.snapshot)))

    def _history(self, snapshot: str) -> list[dict[str, Any]]:
        """``snapshot``'s commits, oldest first, cached: their ids, jobs and specs never change (the
        branches and tags pointing at them do: pages that show those call :meth:`log`)."""
        return self._jobs.get_or_make(snapshot, lambda: self.log(Ref(snapshot, "snapshot", snapshot))[::-1])

    def commit_of_job(self, snapshot: str, job_id: str) -> str | None:
        """The id of the commit in ``snapshot``'s history that job ``job_id`` made."""
        return next((c["id"] for c in self._history(snapshot) if job_id and c["job_id"] == job_id), None)

    def specs(self, target: Ref) -> dict[str, str]:
        """Spec fingerprint -> pipeline name, for the specs in ``target``'s history."""
        return {c["fingerprint"]: c["spec"] for c in self._history(target.snapshot) if c["fingerprint"]}

    def diff(self, a: Ref, b: Ref) -> dict[str, Any]:
        """history.diff of two snapshots, each listed item with its row (``row``) in its version."""
        def make() -> dict[str, Any]:
            d = dict(plain(history.diff(self.repo, a.snapshot, b.snapshot)))
            rows_a, rows_b = self.keys(a.snapshot), self.keys(b.snapshot)
            for r in d["added"]:
                r["row"] = rows_b.get(r["key"])
            for r in d["removed"]:
                r["row"] = rows_a.get(r["key"])
            for r in d["changed"]:
                r["row"], r["row_a"] = rows_b.get(r["key"]), rows_a.get(r["key"])
            return d

        return self._diffs.get_or_make((a.snapshot, b.snapshot), make)

    # -- rows ------------------------------------------------------------------------------------

    def dataset(self, snapshot: str) -> Dataset:
        return self._datasets.get_or_make(snapshot, lambda: Dataset(
            refs.session(self.repo, Ref(snapshot, "snapshot", snapshot)), ref=snapshot))

    def column(self, snapshot: str, name: str) -> np.ndarray:
        """A whole item column (read once per snapshot)."""
        def make() -> np.ndarray:
            ds = self.dataset(snapshot)
            self._count(name, len(ds))
            return ds.items_table([name])[name]

        return self._columns.get_or_make((snapshot, name), make)

    def select(self, snapshot: str, q: GridQuery) -> np.ndarray:
        rows = len(self.dataset(snapshot))
        return self._selections.get_or_make(
            (snapshot, q.selection_key), lambda: select(lambda name: self.column(snapshot, name), rows, q))

    def rows(self, snapshot: str, rows: np.ndarray | list[int],
             fields: list[str] | None = None) -> list[dict[str, Any]]:
        """The given rows' fields (default: every field but the bytes), each with its ``row``."""
        table = self.dataset(snapshot).items_at(rows, fields)
        for name in table:
            self._count(name, len(rows))
        return [{"row": int(r), **{k: _py(v[i]) for k, v in table.items()}} for i, r in enumerate(rows)]

    def failures(self, snapshot: str, rows: np.ndarray | list[int]) -> list[dict[str, Any]]:
        table = self.dataset(snapshot).failures_at(rows)
        return [{"row": int(r), **{k: _py(v[i]) for k, v in table.items()}} for i, r in enumerate(rows)]

    def item(self, snapshot: str, row: int) -> dict[str, Any]:
        """Every field of one row (ConfigError ITEM_MISSING when there is no such row)."""
        self._check_row(snapshot, row)
        return self.rows(snapshot, [row])[0]

    def stored(self, snapshot: str, row: int) -> bytes:
        """The stored bytes of one row, as they are."""
        self._check_row(snapshot, row)
        size = self.rows(snapshot, [row], ["width", "height"])[0]
        renditions.check_pixels(int(size["width"]), int(size["height"]))
        self._count("jpeg", 1)
        return self.dataset(snapshot).jpeg(row)

    def _check_row(self, snapshot: str, row: int) -> None:
        n = len(self.dataset(snapshot))
        if not 0 <= row < n:
            raise NotFoundError(f"there is no item {row} in snapshot {snapshot} (it has {n} items)",
                              code=ErrorCode.ITEM_MISSING,
                              hint="items are numbered from 0; open the version's items page")

    def keys(self, snapshot: str) -> dict[str, int]:
        """Item key (source sha256 + spec fingerprint) -> row."""
        shas, fps = self.column(snapshot, "source_sha256"), self.column(snapshot, "fingerprint")
        return {item_key(str(s), str(f)): i for i, (s, f) in enumerate(zip(shas, fps, strict=True))}

    # -- what the browser is shown ---------------------------------------------------------------

    def thumbnail(self, snapshot: str, row: int) -> bytes:
        return self.thumbnails.get_or_make((snapshot, row), lambda: renditions.thumbnail(self.stored(snapshot, row)))

    def comparison(self, snapshot: str, row: int, item: dict[str, Any] | None = None) -> compare.Comparison:
        """Source beside stored (ConfigError SOURCE_UNAVAILABLE when the source cannot be shown);
        ``item``: the row's fields when the caller has them already."""
        def make() -> compare.Comparison:
            nonlocal item
            item = item or self.item(snapshot, row)
            source = compare.source_bytes(str(item["source_path"]), str(item["source_sha256"]))
            return compare.compare(source, decode_rgb(self.stored(snapshot, row)), path=str(item["source_path"]))

        return self.comparisons.get_or_make((snapshot, row), make)

    def _count(self, field: str, rows: int) -> None:
        with self._reads_lock:
            self.reads[field] += rows


def _nbytes(a: np.ndarray) -> int:
    return int(a.nbytes) + (sum(len(str(v)) for v in a[:1000]) * max(1, a.size // 1000) if a.dtype.kind in "OT" else 0)


def _py(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value if isinstance(value, (int, float, bool, bytes)) or value is None else str(value)

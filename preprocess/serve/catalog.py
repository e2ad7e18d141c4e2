"""The store as the web UI reads it: refs resolved on every request (branches move), everything
of a snapshot cached (snapshots never change).

History comes from :mod:`preprocess.store.history` and :mod:`preprocess.store.diff` as their typed
results; which commit added a row from :mod:`preprocess.store.origins` (the same answer as
``show --item`` and the notebook API). Rows come from :class:`preprocess.store.Dataset`: whole
columns only for what a grid sorts or filters on, the page's rows for everything else.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import icechunk as ic
import numpy as np
import numpy.typing as npt

from preprocess.core import names
from preprocess.core.codes import ErrorCode
from preprocess.core.errors import NotFoundError
from preprocess.core.units import number
from preprocess.pipeline.images import decode_rgb
from preprocess.pipeline.stored_pixels import check_recorded
from preprocess.rows.schema import item_key
from preprocess.serve import compare, renditions
from preprocess.serve.cache import LRU
from preprocess.serve.grid import GridQuery, Rows, select
from preprocess.store import Dataset, Ref, history, open_repo, refs
from preprocess.store.cells import Record, record
from preprocess.store.diff import Diff, ItemBrief, diff
from preprocess.store.history import Commit, ShownCommit
from preprocess.store.listing import spec_names, version_columns
from preprocess.store.origins import Origins, origins
from preprocess.store.where import HISTORY, Column

type Picture = npt.NDArray[np.generic]


@dataclass(frozen=True)
class Tip:
    """A branch or tag and the commit it points at (a branch's number of items too)."""

    name: str
    commit: Commit
    items: int | None = None


@dataclass(frozen=True)
class Tips:
    branches: list[Tip]
    tags: list[Tip]


@dataclass(frozen=True)
class Card:
    """One image of a grid: what its card shows, and the row it links to."""

    row: int
    source_path: str
    status: str
    bytes: int
    quality: int
    similarity: float | None
    format: str = ""
    fingerprint: str = ""
    width: int = 0
    height: int = 0
    crops: float | None = None  # the crops view's similarity (its worst crop), when the gate checked it

    @property
    def name(self) -> str:
        """The source's file name, printed escaped (:mod:`preprocess.core.names`)."""
        return names.quote(os.path.basename(names.real(self.source_path)))

    @classmethod
    def of(cls, r: Record) -> Card:
        sim = r.get("similarity")
        return cls(row=int(r.get("row") or 0), source_path=str(r.get("source_path") or ""),
                   status=str(r.get("status") or ""), bytes=int(r.get("bytes") or 0),
                   quality=int(r.get("quality") or 0), similarity=float(sim) if isinstance(sim, int | float) else None,
                   format=str(r.get("format") or ""), fingerprint=str(r.get("fingerprint") or ""),
                   width=int(r.get("width") or 0), height=int(r.get("height") or 0),
                   crops=number(r.get("similarity_crops")))

    @classmethod
    def brief(cls, r: ItemBrief, row: int) -> Card:
        return cls(row=row, source_path=r.source_path, status=r.status, bytes=r.bytes, quality=r.quality,
                   similarity=r.similarity, format=r.format, fingerprint=r.fingerprint)


@dataclass(frozen=True)
class DiffView:
    """A diff with each listed row's place in its version (for cards and links)."""

    d: Diff
    rows_a: dict[str, int] = field(repr=False)
    rows_b: dict[str, int] = field(repr=False)

    def added(self) -> list[Card]:
        return [Card.brief(r, self.rows_b[r.key]) for r in self.d.added_alone]

    def removed(self) -> list[Card]:
        return [Card.brief(r, self.rows_a[r.key]) for r in self.d.removed_alone]

    def pairs(self) -> list[tuple[Card, Card]]:
        return [(Card.brief(p.a, self.rows_a[p.a.key]), Card.brief(p.b, self.rows_b[p.b.key])) for p in self.d.pairs]


@dataclass(frozen=True)
class Sibling:
    """The same source (by content) stored elsewhere: another spec in this version, or another version."""

    snapshot: str
    row: int
    where: str  # "this version" or the branch or tag it is on
    card: Card

    @property
    def size(self) -> tuple[int, int]:
        return max(1, self.card.width), max(1, self.card.height)


@dataclass(frozen=True)
class Shown:
    """A comparison kept, with what its source was when it was read: its path, sha256 and stamp
    (:func:`~preprocess.serve.compare.source_stamp`), to tell whether the source is still the same."""

    comparison: compare.Comparison
    path: str
    sha256: str
    stamp: compare.Stamp | None

    @property
    def nbytes(self) -> int:
        return self.comparison.nbytes


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
        self._columns: LRU[Column] = LRU(max_items=128, max_bytes=256 * 2**20, size=_nbytes)
        self._selections: LRU[Rows] = LRU(max_items=64, max_bytes=64 * 2**20, size=_nbytes)
        self._commits: LRU[Commit] = LRU(max_items=4096)
        self._logs: LRU[list[Commit]] = LRU(max_items=64)
        self._origins: LRU[Origins] = LRU(max_items=64)
        self._specs: LRU[dict[str, str]] = LRU(max_items=64)
        self._diffs: LRU[DiffView] = LRU(max_items=8)
        self.thumbnails: LRU[bytes] = LRU(max_items=8192, max_bytes=128 * 2**20, size=len)
        self.comparisons: LRU[Shown] = LRU(max_items=32, max_bytes=256 * 2**20, size=lambda c: c.nbytes)

    # -- refs ------------------------------------------------------------------------------------

    def resolve(self, ref: str) -> Ref:
        """A branch, tag, snapshot id or prefix (NotFoundError REF_MISSING / REF_AMBIGUOUS, as the CLI)."""
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

    def tips(self) -> Tips:
        """Branches (with their number of items) and tags, each with the commit it points at."""
        labels = refs.labels(self.repo)
        branches = [Tip(name, history.commit(refs.snapshot_info(self.repo, snap), labels), len(self.dataset(snap)))
                    for name in sorted(refs.branches(self.repo)) for snap in [refs.branch_tip(self.repo, name)]]
        tags = [Tip(name, history.commit(refs.snapshot_info(self.repo, refs.tag_target(self.repo, name)), labels))
                for name in sorted(refs.tags(self.repo))]
        return Tips(branches, tags)

    # -- history ---------------------------------------------------------------------------------

    def other_tips(self, snapshot: str) -> bool:
        """Whether some branch is at another snapshot than ``snapshot`` (the dataset has commits beyond it)."""
        return any(refs.branch_tip(self.repo, b) != snapshot for b in refs.branches(self.repo))

    def log(self, target: Ref) -> list[Commit]:
        return history.log(self.repo, target.snapshot)

    def commit(self, target: Ref) -> ShownCommit:
        return history.show(self.repo, target.snapshot)

    def added_commits(self, snapshot: str, limit: int = 500) -> list[Commit]:
        """The newest ``limit`` commits of ``snapshot``'s history that added items (the grid's commit
        filter; cached: a snapshot's history never changes, only the refs shown beside it)."""
        target = Ref(snapshot, "snapshot", snapshot)
        return self._logs.get_or_make((snapshot, limit), lambda: [c for c in self.log(target) if c.added][:limit])

    def commit_at(self, snapshot: str) -> Commit:
        """The commit ``snapshot`` (its refs as they were when first read: pages that show a commit's
        refs call :meth:`commit`)."""
        return self._commits.get_or_make(snapshot, lambda: history.commit(refs.snapshot_info(self.repo, snapshot)))

    def origins(self, snapshot: str) -> Origins:
        """Which commit added each row of ``snapshot`` (cached: a snapshot's history never changes)."""
        return self._origins.get_or_make(snapshot, lambda: origins(self.repo, snapshot))

    def added_by(self, snapshot: str, row: int) -> Commit:
        """The commit that added item ``row`` of ``snapshot``."""
        return self.commit_at(self.origins(snapshot).item(row))

    def failure_added_by(self, snapshot: str, row: int) -> str:
        """The snapshot id of the commit that recorded failure ``row`` of ``snapshot``."""
        return self.origins(snapshot).failure(row)

    def specs(self, target: Ref) -> dict[str, str]:
        """Spec fingerprint -> pipeline name, for the specs in ``target``'s history."""
        return self._specs.get_or_make(target.snapshot, lambda: spec_names(self.repo, target.snapshot))

    def diff(self, a: Ref, b: Ref) -> DiffView:
        """The item-level diff of two snapshots, with each listed row's place in its version."""
        return self._diffs.get_or_make((a.snapshot, b.snapshot), lambda: DiffView(
            diff(self.repo, a.snapshot, b.snapshot), self.keys(a.snapshot), self.keys(b.snapshot)))

    # -- rows ------------------------------------------------------------------------------------

    def dataset(self, snapshot: str) -> Dataset:
        return self._datasets.get_or_make(snapshot, lambda: Dataset(
            refs.session(self.repo, Ref(snapshot, "snapshot", snapshot)), ref=snapshot, repo=self.repo))

    def column(self, snapshot: str, name: str) -> Column:
        """A whole item column (read once per snapshot); ``commit``: the snapshot that added each row,
        ``spec_name``: each row's spec's name; ``HISTORY``: the version's snapshot ids (not one per row)."""
        def read(field_name: str) -> Column:
            if field_name != name:  # a column another is made from (spec_name: fingerprint): read once, cached
                return self.column(snapshot, field_name)
            ds = self.dataset(snapshot)
            self._count(field_name, len(ds))
            return ds.items_table([field_name])[field_name]

        def make() -> Column:
            if name == "commit":
                return np.asarray(self.origins(snapshot).item_commits(), dtype=np.dtypes.StringDType())
            if name == HISTORY:
                return np.asarray(self.origins(snapshot).history, dtype=np.dtypes.StringDType())
            return version_columns(self.repo, snapshot, read)(name)

        return self._columns.get_or_make((snapshot, name), make)

    def select(self, snapshot: str, q: GridQuery) -> Rows:
        rows = len(self.dataset(snapshot))
        return self._selections.get_or_make(
            (snapshot, q.selection_key), lambda: select(lambda name: self.column(snapshot, name), rows, q))

    def rows(self, snapshot: str, rows: Rows | Sequence[int], fields: Sequence[str] | None = None) -> list[Record]:
        """The given rows' fields (default: every field but the bytes), each with its ``row``."""
        table = self.dataset(snapshot).items_at(rows, fields)
        for name in table:
            self._count(name, len(rows))
        return [{"row": int(r), **record(table, i)} for i, r in enumerate(rows)]

    def cards(self, snapshot: str, rows: Rows | Sequence[int]) -> list[Card]:
        from preprocess.serve.grid import CARD_FIELDS

        return [Card.of(r) for r in self.rows(snapshot, rows, list(CARD_FIELDS))]

    def failures(self, snapshot: str, rows: Sequence[int]) -> list[Record]:
        table = self.dataset(snapshot).failures_at(rows)
        return [{"row": int(r), **record(table, i)} for i, r in enumerate(rows)]

    def item(self, snapshot: str, row: int) -> Record:
        """Every field of one row (NotFoundError ITEM_MISSING when there is no such row)."""
        self._check_row(snapshot, row)
        return self.rows(snapshot, [row])[0]

    def stored(self, snapshot: str, row: int, *, shown: bool = False) -> bytes:
        """The stored bytes of one row, as they are. ``shown``: for a page to decode or show, so their header
        must give the size the row records (:func:`~preprocess.pipeline.stored_pixels.check_recorded`: E_CORRUPT,
        a 422, before any decode); a download takes them as they are."""
        self._check_row(snapshot, row)
        size = self.rows(snapshot, [row], ["width", "height"])[0]
        recorded = (int(size["width"] or 0), int(size["height"] or 0))
        renditions.check_pixels(*recorded)
        self._count("jpeg", 1)
        data = self.dataset(snapshot).jpeg(row)
        if shown:
            check_recorded(data, recorded)
        return data

    def _check_row(self, snapshot: str, row: int) -> None:
        n = len(self.dataset(snapshot))
        if not 0 <= row < n:
            raise NotFoundError(f"there is no item {row} in snapshot {snapshot} (it has {n} items)",
                                code=ErrorCode.ITEM_MISSING, hint="items are numbered from 0; open the version's "
                                                                  "items page")

    def keys(self, snapshot: str) -> dict[str, int]:
        """Item key (source sha256 + spec fingerprint) -> row."""
        shas, fps = self.column(snapshot, "source_sha256"), self.column(snapshot, "fingerprint")
        return {item_key(str(s), str(f)): i for i, (s, f) in enumerate(zip(shas, fps, strict=True))}

    def siblings(self, snapshot: str, row: int, source_sha256: str) -> list[Sibling]:
        """The same source stored under other specs in this version, then at the tips of the other
        branches (rows this version does not hold)."""
        out: list[Sibling] = []
        seen = {(snapshot, row)}
        places = [(snapshot, "this version")] + [(refs.branch_tip(self.repo, b), b)
                                                 for b in sorted(refs.branches(self.repo))]
        mine = set(self.keys(snapshot))
        for snap, where in places:
            hits = np.flatnonzero(self.column(snap, "source_sha256") == source_sha256)
            for r in hits.tolist()[:8]:
                card = self.cards(snap, [r])[0]
                key = item_key(source_sha256, card.fingerprint)
                if (snap, r) in seen or (snap != snapshot and key in mine):
                    continue
                seen.add((snap, r))
                mine.add(key)
                out.append(Sibling(snap, r, where, card))
        return out

    # -- what the browser is shown ---------------------------------------------------------------

    def thumbnail(self, snapshot: str, row: int) -> bytes:
        return self.thumbnails.get_or_make((snapshot, row),
                                           lambda: renditions.thumbnail(self.stored(snapshot, row, shown=True)))

    def comparison(self, snapshot: str, row: int, item: Record | None = None) -> compare.Comparison:
        """Source beside stored (NotFoundError SOURCE_UNAVAILABLE when the source cannot be shown: gone,
        changed, ...); ``item``: the row's fields when the caller has them already. A kept comparison is
        checked on every call: its source's stamp taken again (a stat), the file read and hashed again when
        the stamp changed (deleted, rewritten, replaced, touched)."""
        key = (snapshot, row)
        kept = self.comparisons.get(key)
        if kept is not None:
            stamp = compare.source_stamp(kept.path)
            if stamp is not None and stamp == kept.stamp:
                return kept.comparison
            self.comparisons.pop(key)
            compare.source_bytes(kept.path, kept.sha256)  # SOURCE_UNAVAILABLE when it is gone or changed
            return self.comparisons.put(key, replace(kept, stamp=stamp)).comparison
        fields = item or self.item(snapshot, row)
        path, sha256 = str(fields["source_path"]), str(fields["source_sha256"])
        stamp = compare.source_stamp(path)  # before the read: a change while it is read shows next time
        source = compare.source_bytes(path, sha256)
        stored = decode_rgb(self.stored(snapshot, row, shown=True))
        made = Shown(compare.compare(source, stored, path=path), path, sha256, stamp)
        return self.comparisons.put(key, made).comparison

    def _count(self, name: str, rows: int) -> None:
        with self._reads_lock:
            self.reads[name] += rows


def _nbytes(a: Picture) -> int:
    return int(a.nbytes) + (sum(len(str(v)) for v in a[:1000]) * max(1, a.size // 1000) if a.dtype.kind in "OT" else 0)

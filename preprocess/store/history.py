"""What was stored, from what, how and when: log, show, item lineage and item-level diff.

Pure functions over an icechunk Repository, returning typed results (each with ``to_dict()``
for ``--json``). The provenance they read is each commit's :class:`~preprocess.rows.provenance.Provenance`
(read tolerantly: commits of older versions still read) and the rows' own ``job_id``/``fingerprint``
columns, which link every stored image to the commit and spec that made it.

icechunk's own diff is structural and works only along ancestry; :func:`diff` compares the rows of
any two versions (two diverged branches included), keyed by source sha256 + spec fingerprint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import icechunk as ic
import numpy as np

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import NotFoundError
from preprocess.rows import schema
from preprocess.rows.provenance import Provenance, SpecInfo
from preprocess.rows.schema import ITEM_COLUMNS, item_key
from preprocess.store import lookup, refs
from preprocess.store.reader import Dataset
from preprocess.store.refs import Ref

ROOT_MESSAGE = "Repository initialized"


@dataclass(frozen=True)
class Commit:
    """One snapshot as the log shows it, with its provenance (None when preprocess did not make it)."""

    id: str
    parent: str | None
    written_at: datetime
    message: str
    refs: list[str]  # branches and tags pointing here now
    metadata: dict[str, Any] = field(repr=False)  # exactly as stored
    provenance: Provenance | None = field(repr=False)

    @property
    def kind(self) -> str:
        """"run", "watch", ... (the provenance's), "init" (the repository's first snapshot) or "other"."""
        if self.provenance is not None:
            return self.provenance.kind
        return "init" if self.parent is None else "other"

    @property
    def job_id(self) -> str:
        return self.provenance.job_id if self.provenance else ""

    @property
    def added(self) -> int | None:
        """Items stored by this commit."""
        return self.provenance.counts.stored if self.provenance else None

    @property
    def failed(self) -> int | None:
        return self.provenance.counts.failed if self.provenance else None

    @property
    def fingerprint(self) -> str:
        return self.provenance.fingerprint if self.provenance else ""

    @property
    def spec(self) -> str:
        """The spec's pipeline name."""
        return self.provenance.spec_info.pipeline.name if self.provenance else ""

    @property
    def model(self) -> str:
        return self.provenance.model.name if self.provenance else ""

    @property
    def branch(self) -> str:
        """The branch the job committed to."""
        return self.provenance.inputs.branch if self.provenance else ""

    def to_dict(self, *, full: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id, "parent": self.parent, "written_at": self.written_at.isoformat(),
            "message": self.message, "kind": self.kind, "job_id": self.job_id, "added": self.added,
            "failed": self.failed, "fingerprint": self.fingerprint, "spec": self.spec, "model": self.model,
            "branch": self.branch, "refs": self.refs,
        }
        if full:
            d["metadata"] = self.metadata
        return d


def commit(info: ic.SnapshotInfo, labels: dict[str, list[str]] | None = None) -> Commit:
    md: dict[str, Any] = canonical(dict(info.metadata or {}))
    return Commit(id=info.id, parent=info.parent_id, written_at=info.written_at, message=info.message,
                  refs=list((labels or {}).get(info.id, [])), metadata=md, provenance=Provenance.from_metadata(md))


def canonical(value: Any) -> Any:
    """``value`` with every mapping's keys in sorted order, recursively. icechunk hands a commit's
    metadata back in a different key order on every read; sorted, whatever is built from it (the
    provenance, ``to_dict()``, ``--json``) is the same bytes for the same content."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value


def _ancestry(repo: ic.Repository, target: Ref) -> list[ic.SnapshotInfo]:
    return refs.history(repo, snapshot=target.snapshot)


def check_format(repo: ic.Repository, target: Ref) -> None:
    """StorageError STORE_FORMAT when ``target`` holds something preprocess did not write."""
    schema.open_layout(refs.session(repo, target).store, writable=False)


def log(repo: ic.Repository, ref: str = "main", *, limit: int | None = None) -> list[Commit]:
    """The commits of ``ref``'s history, newest first (without the repository's first, empty snapshot)."""
    target = refs.resolve_ref(repo, ref)
    check_format(repo, target)
    labels = refs.labels(repo)
    out = [commit(info, labels) for info in _ancestry(repo, target) if info.parent_id is not None]
    return out[:limit] if limit is not None else out


@dataclass(frozen=True)
class VersionInfo:
    """What a version holds."""

    items: int
    failures: int
    models: dict[str, int]  # embedding model -> dimension

    def to_dict(self) -> dict[str, Any]:
        return {"items": self.items, "failures": self.failures, "models": self.models}


@dataclass(frozen=True)
class ShownCommit:
    """:func:`show`: one commit, the ref it was reached by, and what its version holds."""

    ref: Ref
    commit: Commit
    version: VersionInfo

    def to_dict(self) -> dict[str, Any]:
        return {**self.ref.to_dict(), **self.commit.to_dict(full=True), "version": self.version.to_dict()}


def show(repo: ic.Repository, ref: str) -> ShownCommit:
    """One commit's full provenance, plus what the version it made holds."""
    target = refs.resolve_ref(repo, ref)
    ds = Dataset(refs.session(repo, target), ref=ref)
    c = commit(refs.snapshot_info(repo, target.snapshot), refs.labels(repo))
    return ShownCommit(target, c, VersionInfo(len(ds), ds.num_failures, ds.models))


# -- item lineage ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class MadeBy:
    """The commit that stored a row (None if it is not in the version's history: should not happen)."""

    commit: Commit | None

    @property
    def provenance(self) -> Provenance | None:
        return self.commit.provenance if self.commit else None

    def to_dict(self) -> dict[str, Any]:
        c, p = self.commit, self.provenance
        out: dict[str, Any] = {"commit": {k: v for k, v in c.to_dict().items() if k != "refs"} if c else None}
        if p is None:
            return out | dict.fromkeys(("spec", "spec_path", "spec_sha256", "model_info", "software", "engine",
                                        "inputs"))
        return out | {"spec": p.spec, "spec_path": p.spec_path, "spec_sha256": p.spec_sha256,
                      "model_info": p.model.model_dump(mode="json"), "software": p.software,
                      "engine": p.engine.model_dump(mode="json"), "inputs": p.inputs.model_dump(mode="json")}


@dataclass(frozen=True)
class LineageItem:
    """A stored row that matched, with everything that made it."""

    index: int
    row: dict[str, Any]  # every field of the row (not its bytes or embedding)
    made_by: MadeBy

    @property
    def key(self) -> str:
        return item_key(self.row["source_sha256"], self.row["fingerprint"])

    @property
    def source(self) -> dict[str, Any]:
        return {c.name: self.row[c.name] for c in ITEM_COLUMNS if c.part == "source" and c.name in self.row}

    @property
    def stored(self) -> dict[str, Any]:
        return {c.name: self.row[c.name] for c in ITEM_COLUMNS if c.part == "stored" and c.name in self.row}

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "key": self.key, "source": self.source, "stored": self.stored,
                "fingerprint": self.row["fingerprint"], "model": self.row["model"], "job_id": self.row["job_id"],
                **self.made_by.to_dict()}


@dataclass(frozen=True)
class LineageFailure:
    """A recorded failure that matched, with the commit that recorded it."""

    index: int
    row: dict[str, Any]  # every field of the failure row
    made_by: MadeBy

    def to_dict(self) -> dict[str, Any]:
        return {**self.row, "index": self.index, **self.made_by.to_dict()}


@dataclass(frozen=True)
class Lineage:
    """:func:`lineage`: the rows and failures of a version whose source matched a query."""

    ref: Ref
    query: str
    items: list[LineageItem]
    failures: list[LineageFailure]

    def to_dict(self) -> dict[str, Any]:
        return {**self.ref.to_dict(), "query": self.query, "items": [r.to_dict() for r in self.items],
                "failures": [f.to_dict() for f in self.failures]}


def lineage(repo: ic.Repository, query: str, ref: str = "main") -> Lineage:
    """Every stored row (and recorded failure) of ``ref`` that ``query`` names, each with the commit,
    spec and model that made it. ``query``: a source path or file name, a file on disk (matched by
    content: the source's or the stored bytes'), an exported file's name, or 8+ hex digits of a
    sha256 (the source's, else the stored bytes'): see :mod:`preprocess.store.lookup`.

    ConfigError ITEM_MISSING when nothing matches.
    """
    target = refs.resolve_ref(repo, ref)
    ds = Dataset(refs.session(repo, target), ref=ref)
    hits = lookup.find(ds, query)
    if not hits:
        raise NotFoundError(f"no stored image or failure of {ref!r} comes from {query!r}", code=ErrorCode.ITEM_MISSING,
                          hint="give a source path or file name, a source or stored (exported) file, or 8+ hex "
                               "digits of its sha256")
    by_job: dict[str, Commit] = {}
    labels = refs.labels(repo)
    for info in _ancestry(repo, target):
        c = commit(info, labels)
        if c.job_id:
            by_job.setdefault(c.job_id, c)
    items = ds.items_at(hits.items)
    failures = ds.failures_at(hits.failures)
    found = [LineageItem(i, _row(items, k), MadeBy(by_job.get(str(items["job_id"][k]))))
             for k, i in enumerate(hits.items)]
    failed = [LineageFailure(i, _row(failures, k), MadeBy(by_job.get(str(failures["job_id"][k]))))
              for k, i in enumerate(hits.failures)]
    return Lineage(target, query, found, failed)


def _row(table: dict[str, np.ndarray[Any, Any]], k: int) -> dict[str, Any]:
    return {name: _py(column[k]) for name, column in table.items()}


# -- diff -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemBrief:
    """One row in a diff."""

    key: str
    source_path: str
    fingerprint: str
    status: str
    bytes: int
    similarity: float | None
    quality: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ItemChange:
    """A row in both versions whose fields differ: field -> [value in a, value in b]."""

    item: ItemBrief  # as in b
    fields: dict[str, list[Any]]

    def to_dict(self) -> dict[str, Any]:
        return {**self.item.to_dict(), "fields": self.fields}


@dataclass(frozen=True)
class SpecBrief:
    """A spec (fingerprint) added or removed, and what made rows with it (the provenance of the
    oldest commit that has it; None when no commit names it)."""

    fingerprint: str
    provenance: Provenance | None = None

    @property
    def info(self) -> SpecInfo:
        return self.provenance.spec_info if self.provenance else SpecInfo()

    def to_dict(self) -> dict[str, Any]:
        p = self.provenance
        if p is None:
            return {"fingerprint": self.fingerprint}
        return {"fingerprint": self.fingerprint, "spec": self.info.pipeline.name, "spec_sha256": p.spec_sha256,
                "model": p.model.name, **{k: p.spec.get(k) for k in ("resize", "quality", "gate", "encode")}}


@dataclass(frozen=True)
class Diff:
    """:func:`diff`: the item-level difference from version ``a`` to ``b``."""

    a: Ref
    b: Ref
    base: str | None  # the newest snapshot in both histories
    items_a: int
    items_b: int
    added: list[ItemBrief]
    removed: list[ItemBrief]
    changed: list[ItemChange]
    unchanged: int
    bytes_a: int
    bytes_b: int
    failures_added: list[str]  # "sha256:fingerprint:code" ("path:<source path>" instead of sha256 when unread)
    failures_removed: list[str]
    specs_added: list[SpecBrief]
    specs_removed: list[SpecBrief]
    models_added: list[str]
    models_removed: list[str]

    @property
    def bytes_delta(self) -> int:
        return self.bytes_b - self.bytes_a

    @property
    def bytes_added(self) -> int:
        return sum(r.bytes for r in self.added)

    @property
    def bytes_removed(self) -> int:
        return sum(r.bytes for r in self.removed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a.to_dict(), "b": self.b.to_dict(), "base": self.base,
            "items_a": self.items_a, "items_b": self.items_b,
            "added": [r.to_dict() for r in self.added], "removed": [r.to_dict() for r in self.removed],
            "changed": [r.to_dict() for r in self.changed], "unchanged": self.unchanged,
            "bytes_a": self.bytes_a, "bytes_b": self.bytes_b, "bytes_delta": self.bytes_delta,
            "bytes_added": self.bytes_added, "bytes_removed": self.bytes_removed,
            "failures_added": self.failures_added, "failures_removed": self.failures_removed,
            "specs_added": [s.to_dict() for s in self.specs_added],
            "specs_removed": [s.to_dict() for s in self.specs_removed],
            "models_added": self.models_added, "models_removed": self.models_removed,
        }


def _specs(repo: ic.Repository, target: Ref) -> dict[str, Provenance]:
    """fingerprint -> the provenance of the oldest commit that made rows with it."""
    out: dict[str, Provenance] = {}
    for info in reversed(_ancestry(repo, target)):
        p = Provenance.from_metadata(canonical(info.metadata))
        if p is not None and p.fingerprint and p.fingerprint not in out:
            out[p.fingerprint] = p
    return out


def merge_base(repo: ic.Repository, a: Ref, b: Ref) -> str | None:
    """The newest snapshot in both histories (None when they share nothing but the first, empty one)."""
    ours = [s.id for s in _ancestry(repo, a)]
    theirs = {s.id for s in _ancestry(repo, b)}
    return next((s for s in ours if s in theirs), None)


@dataclass(frozen=True)
class _Version:
    """One side of a diff: the dataset, its item columns, and its rows by key."""

    ds: Dataset
    table: dict[str, np.ndarray[Any, Any]]
    keys: dict[str, int]

    @classmethod
    def at(cls, repo: ic.Repository, target: Ref, ref: str) -> _Version:
        ds = Dataset(refs.session(repo, target), ref=ref)
        table = ds.items_table()
        return cls(ds, table, _keys(table))

    def column(self, name: str) -> set[str]:
        return set(self.table[name].tolist())


def diff(repo: ic.Repository, ref_a: str, ref_b: str) -> Diff:
    """Item-level difference from version ``ref_a`` to ``ref_b`` (any two refs).

    Rows are matched by key (source sha256 + spec fingerprint). ``changed`` lists keys in both whose
    fields differ (``jpeg`` when the stored bytes differ); ``bytes_delta`` is the stored-size change.
    """
    a, b = refs.resolve_ref(repo, ref_a), refs.resolve_ref(repo, ref_b)
    va, vb = _Version.at(repo, a, ref_a), _Version.at(repo, b, ref_b)
    common = va.keys.keys() & vb.keys.keys()
    changed = sorted((c for k in common if (c := _change(va, vb, k)) is not None),
                     key=lambda r: (r.item.source_path, r.item.key))
    fa, fb = _failure_keys(va.ds), _failure_keys(vb.ds)
    sa, sb = _specs(repo, a), _specs(repo, b)
    fps_a, fps_b = va.column("fingerprint"), vb.column("fingerprint")
    return Diff(
        a=a, b=b, base=merge_base(repo, a, b), items_a=len(va.ds), items_b=len(vb.ds),
        added=[_brief(vb.table, i, k) for k, i in vb.keys.items() if k not in va.keys],
        removed=[_brief(va.table, i, k) for k, i in va.keys.items() if k not in vb.keys],
        changed=changed, unchanged=len(common) - len(changed),
        bytes_a=int(np.sum(va.table["bytes"], dtype=np.int64)), bytes_b=int(np.sum(vb.table["bytes"], dtype=np.int64)),
        failures_added=sorted(fb - fa), failures_removed=sorted(fa - fb),
        specs_added=[SpecBrief(fp, sb.get(fp)) for fp in sorted(fps_b - fps_a)],
        specs_removed=[SpecBrief(fp, sa.get(fp)) for fp in sorted(fps_a - fps_b)],
        models_added=sorted(vb.column("model") - va.column("model")),
        models_removed=sorted(va.column("model") - vb.column("model")))


def _change(a: _Version, b: _Version, key: str) -> ItemChange | None:
    """How the row with ``key`` differs from a to b, or None when it does not."""
    i, j, ta, tb = a.keys[key], b.keys[key], a.table, b.table
    fields = {name: [_py(ta[name][i]), _py(tb[name][j])] for name in ta
              if name in tb and not _same(ta[name][i], tb[name][j])}
    if fields and a.ds.jpeg(i) != b.ds.jpeg(j):
        fields["jpeg"] = [f"{int(ta['bytes'][i])} bytes", f"{int(tb['bytes'][j])} bytes"]
    return ItemChange(_brief(tb, j, key), fields) if fields else None


def _keys(table: dict[str, np.ndarray[Any, Any]]) -> dict[str, int]:
    return {item_key(str(s), str(f)): i
            for i, (s, f) in enumerate(zip(table["source_sha256"], table["fingerprint"], strict=True))}


def _brief(table: dict[str, np.ndarray[Any, Any]], i: int, key: str) -> ItemBrief:
    return ItemBrief(key=key, source_path=str(table["source_path"][i]), fingerprint=str(table["fingerprint"][i]),
                     status=str(table["status"][i]), bytes=int(table["bytes"][i]),
                     similarity=_py(table["similarity"][i]), quality=int(table["quality"][i]))


def _failure_keys(ds: Dataset) -> set[str]:
    t = ds.failures_table(["source_path", "source_sha256", "fingerprint", "code"])
    return {":".join(schema.failure_key(str(s), str(p), str(f), str(c)))  # the writer's identity of a failure
            for p, s, f, c in zip(t["source_path"], t["source_sha256"], t["fingerprint"], t["code"], strict=True)}


def _same(x: Any, y: Any) -> bool:
    if isinstance(x, (float, np.floating)) and isinstance(y, (float, np.floating)):
        return bool(x == y or (math.isnan(x) and math.isnan(y)))
    return bool(x == y)


def _py(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value) if not isinstance(value, (int, float, bool, bytes)) else value

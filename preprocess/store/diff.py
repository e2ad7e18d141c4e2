"""The item-level difference of two versions (``preprocess diff``, :func:`preprocess.history.diff`).

icechunk's own diff is structural and works only along ancestry; :func:`diff` compares the rows of
any two versions (two diverged branches included), keyed by source sha256 + spec fingerprint. A
source stored in both versions under different specs (a JPEG branch against an AVIF branch, a new
quality ladder) is one removed and one added row: :attr:`Diff.pairs` puts them side by side, and an
added row whose source ``a`` also holds (its row there kept in ``b``: the same photos stored again under
another spec) beside that row (:attr:`Pair.kept`): neither is a new source.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import icechunk as ic
import numpy as np

from preprocess.core.jsonable import JsonObject
from preprocess.rows import schema
from preprocess.rows.provenance import Provenance, SpecInfo
from preprocess.rows.schema import item_key
from preprocess.store import refs
from preprocess.store.cells import Cell, Table, cell, same
from preprocess.store.history import canonical_metadata, merge_base
from preprocess.store.reader import Dataset
from preprocess.store.refs import Ref


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
    format: str = ""
    source_sha256: str = ""

    def to_dict(self) -> JsonObject:
        return dict(asdict(self))

    def words(self) -> str:
        """``jpeg 27.0 KB q41`` (the format, stored size and quality)."""
        from preprocess.core.units import size

        quality = f" q{self.quality}" if self.quality else f" ({self.status})"
        return f"{self.format or '?'} {size(self.bytes)}{quality}"


@dataclass(frozen=True)
class ItemChange:
    """A row in both versions whose fields differ: field -> [value in a, value in b]."""

    item: ItemBrief  # as in b
    fields: dict[str, list[Cell]]

    def to_dict(self) -> JsonObject:
        return {**self.item.to_dict(), "fields": self.fields}


@dataclass(frozen=True)
class Pair:
    """The same source in both versions under different specs: its row in a and its row in b (``kept``:
    a's row is in b too, so b stores the source twice, under both specs)."""

    a: ItemBrief
    b: ItemBrief
    kept: bool = False

    @property
    def source_path(self) -> str:
        return self.b.source_path

    def to_dict(self) -> JsonObject:
        return {"source_sha256": self.b.source_sha256, "source_path": self.source_path,
                "a": self.a.to_dict(), "b": self.b.to_dict(), "bytes_delta": self.b.bytes - self.a.bytes,
                "kept": self.kept}

    def words(self) -> str:
        """``cam0-0780.jpg: jpeg 27.0 KB q41 -> avif 30.4 KB q47``."""
        return f"{self.source_path.rsplit('/', 1)[-1]}: {self.a.words()} -> {self.b.words()}"


@dataclass(frozen=True)
class SpecBrief:
    """A spec (fingerprint) added or removed, and what made rows with it (the provenance of the
    oldest commit that has it; None when no commit names it)."""

    fingerprint: str
    provenance: Provenance | None = None

    @property
    def info(self) -> SpecInfo:
        return self.provenance.spec_info if self.provenance else SpecInfo()

    def to_dict(self) -> JsonObject:
        p = self.provenance
        if p is None:
            return {"fingerprint": self.fingerprint}
        return {"fingerprint": self.fingerprint, "spec": self.info.pipeline.name, "spec_sha256": p.spec_sha256,
                "model": p.model.name, **{k: p.spec.get(k) for k in ("resize", "quality", "gate", "encode")}}


@dataclass(frozen=True)
class Diff:
    """:func:`diff`: the item-level difference from version ``a`` to ``b``. ``added`` and ``removed``
    list every row of one version and not the other; ``pairs`` matches those of the same source."""

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
    pairs: list[Pair]
    held: frozenset[str] = frozenset()  # the removed rows' sources (sha256) that b still holds under another spec
    failed: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # a failure key -> (source path, code)

    def failure(self, key: str) -> JsonObject:
        """A failure key as the source it names: ``{"key", "source_path", "code"}``."""
        path, code = self.failed.get(key, ("", key.rsplit(":", 1)[-1]))
        return {"key": key, "source_path": path, "code": code}

    @property
    def bytes_delta(self) -> int:
        return self.bytes_b - self.bytes_a

    @property
    def bytes_added(self) -> int:
        return sum(r.bytes for r in self.added)

    @property
    def bytes_removed(self) -> int:
        return sum(r.bytes for r in self.removed)

    @property
    def added_alone(self) -> list[ItemBrief]:
        """Added rows whose source is not in a pair (a source new to version b)."""
        paired = {p.b.key for p in self.pairs}
        return [r for r in self.added if r.key not in paired]

    @property
    def removed_alone(self) -> list[ItemBrief]:
        """Removed rows whose source is not in a pair."""
        paired = {p.a.key for p in self.pairs}
        return [r for r in self.removed if r.key not in paired]

    @property
    def sources_gone(self) -> int:
        """The sources of :attr:`removed_alone` that b holds under no spec at all."""
        return len({r.source_sha256 for r in self.removed_alone if r.source_sha256 not in self.held})

    @property
    def removed_held(self) -> int:
        """The rows of :attr:`removed_alone` whose source b still holds under another spec."""
        return sum(r.source_sha256 in self.held for r in self.removed_alone)

    def to_dict(self) -> JsonObject:
        return {
            "a": self.a.to_dict(), "b": self.b.to_dict(), "base": self.base,
            "items_a": self.items_a, "items_b": self.items_b,
            "added": [r.to_dict() for r in self.added], "removed": [r.to_dict() for r in self.removed],
            "pairs": [p.to_dict() for p in self.pairs], "sources_gone": self.sources_gone,
            "removed_held": self.removed_held,
            "changed": [r.to_dict() for r in self.changed], "unchanged": self.unchanged,
            "bytes_a": self.bytes_a, "bytes_b": self.bytes_b, "bytes_delta": self.bytes_delta,
            "bytes_added": self.bytes_added, "bytes_removed": self.bytes_removed,
            "failures_added": self.failures_added, "failures_removed": self.failures_removed,
            "failures_added_sources": [self.failure(k) for k in self.failures_added],
            "failures_removed_sources": [self.failure(k) for k in self.failures_removed],
            "specs_added": [s.to_dict() for s in self.specs_added],
            "specs_removed": [s.to_dict() for s in self.specs_removed],
            "models_added": self.models_added, "models_removed": self.models_removed,
        }


def _specs(repo: ic.Repository, target: Ref) -> dict[str, Provenance]:
    """fingerprint -> the provenance of the oldest commit that made rows with it."""
    out: dict[str, Provenance] = {}
    for info in reversed(refs.history(repo, snapshot=target.snapshot)):
        p = Provenance.from_metadata(canonical_metadata(info.metadata))
        if p is not None and p.fingerprint and p.fingerprint not in out:
            out[p.fingerprint] = p
    return out


@dataclass(frozen=True)
class _Version:
    """One side of a diff: the dataset, its item columns, and its rows by key."""

    ds: Dataset
    table: Table
    keys: dict[str, int]

    @classmethod
    def at(cls, repo: ic.Repository, target: Ref, ref: str) -> _Version:
        ds = Dataset(refs.session(repo, target), ref=ref)
        table = ds.items_table()
        return cls(ds, table, _keys(table))

    def column(self, name: str) -> set[str]:
        return {str(v) for v in self.table[name].tolist()}


def diff(repo: ic.Repository, ref_a: str, ref_b: str) -> Diff:
    """Item-level difference from version ``ref_a`` to ``ref_b`` (any two refs).

    Rows are matched by key (source sha256 + spec fingerprint). ``changed`` lists keys in both whose
    fields differ (``jpeg`` when the stored bytes differ); ``bytes_delta`` is the stored-size change;
    ``pairs`` the removed and added rows of the same source.
    """
    a, b = refs.resolve_ref(repo, ref_a), refs.resolve_ref(repo, ref_b)
    va, vb = _Version.at(repo, a, ref_a), _Version.at(repo, b, ref_b)
    common = va.keys.keys() & vb.keys.keys()
    changed = sorted((c for k in common if (c := _change(va, vb, k)) is not None),
                     key=lambda r: (r.item.source_path, r.item.key))
    fa, fb = _failure_keys(va.ds), _failure_keys(vb.ds)
    sa, sb = _specs(repo, a), _specs(repo, b)
    fps_a, fps_b = va.column("fingerprint"), vb.column("fingerprint")
    added = [_brief(vb.table, i, k) for k, i in vb.keys.items() if k not in va.keys]
    removed = [_brief(va.table, i, k) for k, i in va.keys.items() if k not in vb.keys]
    new_shas = {r.source_sha256 for r in added}
    kept = [_brief(va.table, va.keys[k], k) for k in sorted(common)
            if str(va.table["source_sha256"][va.keys[k]]) in new_shas]  # a's rows of sources b adds again
    held = {r.source_sha256 for r in removed} & {str(sha) for sha in vb.table["source_sha256"]}
    return Diff(
        a=a, b=b, base=merge_base(repo, a, b), items_a=len(va.ds), items_b=len(vb.ds),
        added=added, removed=removed, changed=changed, unchanged=len(common) - len(changed),
        bytes_a=_total(va.table), bytes_b=_total(vb.table),
        failures_added=sorted(fb.keys() - fa.keys()), failures_removed=sorted(fa.keys() - fb.keys()),
        specs_added=[SpecBrief(fp, sb.get(fp)) for fp in sorted(fps_b - fps_a)],
        specs_removed=[SpecBrief(fp, sa.get(fp)) for fp in sorted(fps_a - fps_b)],
        models_added=sorted(vb.column("model") - va.column("model")),
        models_removed=sorted(va.column("model") - vb.column("model")), pairs=pair(removed, added, kept),
        held=frozenset(held), failed={**fa, **fb})


def _total(table: Table) -> int:
    return int(np.asarray(table["bytes"], dtype=np.int64).sum())


def pair(removed: list[ItemBrief], added: list[ItemBrief], kept: Sequence[ItemBrief] = ()) -> list[Pair]:
    """Removed and added rows of the same source (by content), in the added rows' order; a source
    with several rows on a side pairs them in fingerprint order. An added row left unpaired whose source
    has a ``kept`` row (in both versions) pairs with it (:attr:`Pair.kept`); the rest stay unpaired."""
    gone: dict[str, list[ItemBrief]] = defaultdict(list)
    for r in sorted(removed, key=lambda r: r.fingerprint):
        gone[r.source_sha256].append(r)
    also: dict[str, ItemBrief] = {}
    for r in sorted(kept, key=lambda r: r.fingerprint):
        also.setdefault(r.source_sha256, r)
    out: list[Pair] = []
    for r in sorted(added, key=lambda r: (r.source_path, r.fingerprint)):
        if gone.get(r.source_sha256):
            out.append(Pair(gone[r.source_sha256].pop(0), r))
        elif r.source_sha256 in also:
            out.append(Pair(also[r.source_sha256], r, kept=True))
    return out


def _change(a: _Version, b: _Version, key: str) -> ItemChange | None:
    """How the row with ``key`` differs from a to b, or None when it does not."""
    i, j, ta, tb = a.keys[key], b.keys[key], a.table, b.table
    fields = {name: [cell(ta[name][i]), cell(tb[name][j])] for name in ta
              if name in tb and not same(ta[name][i], tb[name][j])}
    if fields and a.ds.jpeg(i) != b.ds.jpeg(j):
        fields["jpeg"] = [f"{int(ta['bytes'][i])} bytes", f"{int(tb['bytes'][j])} bytes"]
    return ItemChange(_brief(tb, j, key), fields) if fields else None


def _keys(table: Table) -> dict[str, int]:
    return {item_key(str(s), str(f)): i
            for i, (s, f) in enumerate(zip(table["source_sha256"], table["fingerprint"], strict=True))}


def _brief(table: Table, i: int, key: str) -> ItemBrief:
    sim = cell(table["similarity"][i])
    return ItemBrief(key=key, source_path=str(table["source_path"][i]), fingerprint=str(table["fingerprint"][i]),
                     status=str(table["status"][i]), bytes=int(table["bytes"][i]),
                     similarity=float(sim) if isinstance(sim, int | float) else None, quality=int(table["quality"][i]),
                     format=str(table["format"][i]), source_sha256=str(table["source_sha256"][i]))


def _failure_keys(ds: Dataset) -> dict[str, tuple[str, str]]:
    """Each failure's key (the writer's identity of a failure) -> (its source path, its code)."""
    t = ds.failures_table(["source_path", "source_sha256", "fingerprint", "code"])
    return {":".join(schema.failure_key(str(s), str(p), str(f), str(c))): (str(p), str(c))
            for p, s, f, c in zip(t["source_path"], t["source_sha256"], t["fingerprint"], t["code"], strict=True)}

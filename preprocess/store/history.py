"""What was stored, from what, how and when: log, show, item lineage and item-level diff.

Pure functions over an icechunk Repository. The provenance they read is the commit metadata each
job writes (:func:`preprocess.job.commit_metadata`: ``preprocess.job_id``, spec, fingerprint, model,
software, inputs) and the rows' own ``job_id``/``fingerprint`` columns, which link every stored
image to the commit and spec that made it.

icechunk's own diff is structural and works only along ancestry; :func:`diff` compares the rows of
any two versions (two diverged branches included), keyed by source sha256 + spec fingerprint.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import icechunk as ic
import numpy as np

from preprocess.errors import ConfigError
from preprocess.store import refs, schema
from preprocess.store.reader import Dataset
from preprocess.store.refs import Ref
from preprocess.store.schema import item_key

ROOT_MESSAGE = "Repository initialized"


@dataclass(frozen=True)
class Commit:
    """One snapshot as the log shows it (``metadata`` is its full provenance)."""

    id: str
    parent: str | None
    written_at: datetime
    message: str
    kind: str  # "run", "watch", ... (preprocess.kind), "init" (the repository's first snapshot), "other"
    job_id: str
    added: int | None  # items stored by this commit
    failed: int | None
    fingerprint: str
    spec: str  # the spec's pipeline name
    model: str
    branch: str  # the branch the job committed to
    refs: list[str]  # branches and tags pointing here now
    metadata: dict[str, Any] = field(repr=False)

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
    md: dict[str, Any] = dict(info.metadata or {})
    pp = md.get("preprocess") if isinstance(md.get("preprocess"), dict) else None
    kind = str(pp.get("kind", "run")) if pp is not None else "init" if info.parent_id is None else "other"
    counts = md.get("counts") or {}
    spec = md.get("spec") or {}
    return Commit(
        id=info.id, parent=info.parent_id, written_at=info.written_at, message=info.message, kind=kind,
        job_id=str((pp or {}).get("job_id", "")), added=counts.get("stored"), failed=counts.get("failed"),
        fingerprint=str(md.get("fingerprint", "")), spec=str((spec.get("pipeline") or {}).get("name", "")),
        model=str((md.get("model") or {}).get("name", "")), branch=str((md.get("inputs") or {}).get("branch", "")),
        refs=list((labels or {}).get(info.id, [])), metadata=md)


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


def show(repo: ic.Repository, ref: str) -> dict[str, Any]:
    """One commit's full provenance, plus what the version it made holds."""
    target = refs.resolve_ref(repo, ref)
    ds = Dataset(refs.session(repo, target), ref=ref)
    c = commit(refs.snapshot_info(repo, target.snapshot), refs.labels(repo))
    return {**target.to_dict(), **c.to_dict(full=True),
            "version": {"items": len(ds), "failures": ds.num_failures, "models": ds.models}}


# -- item lineage ---------------------------------------------------------------------------------

_SOURCE_FIELDS = ("source_path", "source_sha256", "source_bytes", "source_width", "source_height",
                  "source_format", "capture_time", "camera_model")
_STORED_FIELDS = ("status", "format", "width", "height", "bytes", "quality", "similarity", "probes")


def _matches(query: str, paths: np.ndarray[Any, Any], shas: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    q = query.strip()
    hit = np.zeros(len(paths), dtype=bool)
    if not q:
        return hit
    lower = q.lower()
    if len(lower) >= 8 and all(ch in "0123456789abcdef" for ch in lower):
        hit |= np.array([str(s).startswith(lower) for s in shas], dtype=bool)
    wanted = {q, str(Path(q).expanduser().absolute())}
    local = Path(q).expanduser()
    if local.is_file():
        wanted.add(str(local.resolve()))
        hit |= shas == hashlib.sha256(local.read_bytes()).hexdigest()
    names = np.array([Path(str(p)).name for p in paths], dtype=object)
    hit |= np.isin(np.asarray(paths, dtype=object), list(wanted)) | (names == q)
    return hit


def lineage(repo: ic.Repository, query: str, ref: str = "main") -> dict[str, Any]:
    """Every stored row (and recorded failure) of ``ref`` whose source matches ``query`` (a source
    path or file name, a file on disk (matched by content), or a source sha256 prefix of 8+ hex),
    each with the commit, spec and model that made it.

    ConfigError ITEM_MISSING when nothing matches.
    """
    target = refs.resolve_ref(repo, ref)
    ds = Dataset(refs.session(repo, target), ref=ref)
    by_job: dict[str, Commit] = {}
    labels = refs.labels(repo)
    for info in _ancestry(repo, target):
        c = commit(info, labels)
        if c.job_id:
            by_job.setdefault(c.job_id, c)
    items = ds.items_table()
    failures = ds.failures_table()
    rows = []
    for i in np.flatnonzero(_matches(query, items["source_path"], items["source_sha256"])):
        row = {k: _py(v[i]) for k, v in items.items()}
        rows.append({
            "index": int(i), "key": item_key(row["source_sha256"], row["fingerprint"]),
            "source": {k: row[k] for k in _SOURCE_FIELDS}, "stored": {k: row[k] for k in _STORED_FIELDS},
            "fingerprint": row["fingerprint"], "model": row["model"], "job_id": row["job_id"],
            **_made_by(by_job.get(row["job_id"]))})
    failed = []
    for i in np.flatnonzero(_matches(query, failures["source_path"], failures["source_sha256"])):
        frow = {k: _py(v[i]) for k, v in failures.items()}
        failed.append({**frow, "index": int(i), **_made_by(by_job.get(frow["job_id"]))})
    if not rows and not failed:
        raise ConfigError(f"no stored image or failure of {ref!r} comes from {query!r}", code="ITEM_MISSING",
                          hint="give a source path or file name, a source file, or 8+ hex digits of its sha256")
    return {**target.to_dict(), "query": query, "items": rows, "failures": failed}


def _made_by(c: Commit | None) -> dict[str, Any]:
    if c is None:  # a row whose commit is not in this version's history (should not happen)
        return {"commit": None, "spec": None, "spec_path": None, "model_info": None, "software": None}
    md = c.metadata
    return {"commit": {k: v for k, v in c.to_dict().items() if k not in ("refs",)},
            "spec": md.get("spec"), "spec_path": md.get("spec_path"), "spec_sha256": md.get("spec_sha256"),
            "model_info": md.get("model"), "software": md.get("software"), "engine": md.get("engine"),
            "inputs": md.get("inputs")}


# -- diff -------------------------------------------------------------------------------------------


def _specs(repo: ic.Repository, target: Ref) -> dict[str, dict[str, Any]]:
    """fingerprint -> what made rows with it (spec name and digest, model), from commit metadata."""
    out: dict[str, dict[str, Any]] = {}
    for info in reversed(_ancestry(repo, target)):
        md = dict(info.metadata or {})
        fp = md.get("fingerprint")
        if isinstance(fp, str) and fp and fp not in out:
            spec = md.get("spec") or {}
            out[fp] = {"fingerprint": fp, "spec": (spec.get("pipeline") or {}).get("name", ""),
                       "spec_sha256": md.get("spec_sha256", ""), "model": (md.get("model") or {}).get("name", ""),
                       "resize": spec.get("resize"), "quality": spec.get("quality"), "gate": spec.get("gate"),
                       "encode": spec.get("encode")}
    return out


def merge_base(repo: ic.Repository, a: Ref, b: Ref) -> str | None:
    """The newest snapshot in both histories (None when they share nothing but the first, empty one)."""
    ours = [s.id for s in _ancestry(repo, a)]
    theirs = {s.id for s in _ancestry(repo, b)}
    return next((s for s in ours if s in theirs), None)


def diff(repo: ic.Repository, ref_a: str, ref_b: str) -> dict[str, Any]:
    """Item-level difference from version ``ref_a`` to ``ref_b`` (any two refs).

    Rows are matched by key (source sha256 + spec fingerprint). ``changed`` lists keys in both whose
    fields differ (``jpeg`` when the stored bytes differ); ``bytes_delta`` is the stored-size change.
    """
    a, b = refs.resolve_ref(repo, ref_a), refs.resolve_ref(repo, ref_b)
    da, db = Dataset(refs.session(repo, a), ref=ref_a), Dataset(refs.session(repo, b), ref=ref_b)
    ta, tb = da.items_table(), db.items_table()
    ka, kb = _keys(ta), _keys(tb)
    added = [_brief(tb, kb[k], k) for k in kb if k not in ka]
    removed = [_brief(ta, ka[k], k) for k in ka if k not in kb]
    changed = []
    for k in kb.keys() & ka.keys():
        i, j = ka[k], kb[k]
        fields = {name: [_py(ta[name][i]), _py(tb[name][j])] for name in ta
                  if name in tb and not _same(ta[name][i], tb[name][j])}
        if fields and da.jpeg(i) != db.jpeg(j):
            fields["jpeg"] = [f"{int(ta['bytes'][i])} bytes", f"{int(tb['bytes'][j])} bytes"]
        if fields:
            changed.append({**_brief(tb, j, k), "fields": fields})
    changed.sort(key=lambda r: (r["source_path"], r["key"]))
    bytes_a, bytes_b = int(np.sum(ta["bytes"], dtype=np.int64)), int(np.sum(tb["bytes"], dtype=np.int64))
    fa, fb = _failure_keys(da), _failure_keys(db)
    sa, sb = _specs(repo, a), _specs(repo, b)
    fps_a, fps_b = set(ta["fingerprint"].tolist()), set(tb["fingerprint"].tolist())
    models_a, models_b = set(ta["model"].tolist()), set(tb["model"].tolist())
    return {
        "a": a.to_dict(), "b": b.to_dict(), "base": merge_base(repo, a, b),
        "items_a": len(da), "items_b": len(db),
        "added": added, "removed": removed, "changed": changed,
        "unchanged": len(ka.keys() & kb.keys()) - len(changed),
        "bytes_a": bytes_a, "bytes_b": bytes_b, "bytes_delta": bytes_b - bytes_a,
        "bytes_added": sum(r["bytes"] for r in added), "bytes_removed": sum(r["bytes"] for r in removed),
        "failures_added": sorted(fb - fa), "failures_removed": sorted(fa - fb),
        "specs_added": [sb.get(fp, {"fingerprint": fp}) for fp in sorted(fps_b - fps_a)],
        "specs_removed": [sa.get(fp, {"fingerprint": fp}) for fp in sorted(fps_a - fps_b)],
        "models_added": sorted(models_b - models_a), "models_removed": sorted(models_a - models_b),
    }


def _keys(table: dict[str, np.ndarray[Any, Any]]) -> dict[str, int]:
    return {item_key(str(s), str(f)): i
            for i, (s, f) in enumerate(zip(table["source_sha256"], table["fingerprint"], strict=True))}


def _brief(table: dict[str, np.ndarray[Any, Any]], i: int, key: str) -> dict[str, Any]:
    return {"key": key, "source_path": str(table["source_path"][i]), "fingerprint": str(table["fingerprint"][i]),
            "status": str(table["status"][i]), "bytes": int(table["bytes"][i]),
            "similarity": _py(table["similarity"][i]), "quality": int(table["quality"][i])}


def _failure_keys(ds: Dataset) -> set[str]:
    t = ds.failures_table(["source_path", "source_sha256", "fingerprint", "code"])
    return {f"{s}:{f}:{c}" if s else f"{p}:{f}:{c}"
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

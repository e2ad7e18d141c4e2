"""Ingest: the rules between the engine and the store, shared by ``run``, the watch daemon and Ray.

    sources -> read + hash -> Ingest.admit -> Processor -> Ingest.store -> ... -> Ingest.commit

An :class:`Ingest` holds the branch's :class:`~preprocess.store.DatasetWriter` and owns, for the
rows of one commit (a job, or one commit window of the daemon):

- **dedupe**: a source whose ``sha256:fingerprint`` key is on the branch, or was admitted before by
  this writer (a second copy in the same job), is skipped. The keys live in the writer, once
  (:meth:`~preprocess.store.DatasetWriter.claim`).
- **failures once**: the same failure (content, fingerprint, code) is recorded once per branch.
- **the tally**: counts, bytes, similarity/quality/probe statistics and stage timings.
- **the input list**: (path, sha256) of every source read, hashed into the provenance.
- **the commit**: ONE commit with its :class:`~preprocess.rows.provenance.Provenance`, and the
  :class:`Summary` of what was done (built here, and only here).

The drivers decide only how sources are found and batched, where processing runs and when to
commit: :func:`preprocess.drivers.run.run_job`, :class:`preprocess.drivers.watch.WatchDaemon`,
:func:`preprocess.drivers.ray.job.run_ray_job`.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from preprocess.core import names
from preprocess.core.errors import InputError
from preprocess.core.timing import Stopwatch, Timings, now_iso
from preprocess.pipeline.extractor.built import BuiltModel
from preprocess.pipeline.gatespec import VIEW_NAMES
from preprocess.pipeline.process import BatchResult, Failed, Plan
from preprocess.rows.provenance import (
    ByteCounts,
    Counts,
    EngineInfo,
    Header,
    Inputs,
    Machine,
    ModelInfo,
    Provenance,
    QualityStats,
    RayInfo,
    WatchInfo,
    software_versions,
)
from preprocess.rows.schema import FailureRow, item_key
from preprocess.sources.files import SourceFile, list_digest, read_source
from preprocess.sources.location import Location, Where, given
from preprocess.store import DatasetWriter


class Candidate(Protocol):
    """A source offered to :meth:`Ingest.admit`: its path and content sha256 ("" when unreadable)."""

    @property
    def path(self) -> str: ...
    @property
    def sha256(self) -> str: ...


class Describes(Protocol):
    """What made the rows: a :class:`~preprocess.pipeline.process.Processor` (or, on Ray, what the actors said)."""

    def describe(self) -> dict[str, str]: ...


@dataclass
class Summary:
    """What a job (or one commit window) did; printed as a table, or as JSON with ``--json``."""

    job_id: str
    snapshot: str | None
    branch: str
    store: str
    engine: str
    device: str
    spec: str
    fingerprint: str
    model: str
    sources: int = 0
    skipped: int = 0  # already stored with this spec fingerprint (or duplicate content in this run)
    stored: int = 0
    failed: int = 0  # failure rows this commit added
    failed_known: int = 0  # sources that failed again, their failure already recorded (no row added)
    flagged: int = 0
    kept_source: int = 0  # gate failed and on_fail = source
    passthrough: int = 0  # the source JPEG was already smaller than any candidate
    bytes_in: int = 0
    bytes_out: int = 0
    similarity_min: float | None = None
    similarity_mean: float | None = None
    views: dict[str, dict[str, float]] = field(default_factory=dict)  # each checked view's min and mean
    quality_mean: float | None = None
    probes_mean: float | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # the spec's (Spec.warnings): what it does not check
    # the skipped sources that are a second copy of a source of this commit: path, and same_as (its path)
    duplicates: list[dict[str, str]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        done = self.stored + self.failed
        return done / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["images_per_second"] = round(self.images_per_second, 3)
        d["ratio"] = round(self.bytes_in / self.bytes_out, 3) if self.bytes_out else None
        return d


@dataclass(frozen=True)
class Admission[F: Candidate]:
    todo: list[F]  # to process (unreadable sources included: they become failure rows)
    skipped: list[F]  # already stored, or a second copy of content admitted before


@dataclass(frozen=True)
class Stored:
    bytes_in: int  # of the stored items' sources
    bytes_out: int  # stored


class Tally:
    """Running totals of one commit's rows."""

    def __init__(self) -> None:
        self.counts = Counts()
        self.failed_known = 0  # failed again, their failure already recorded: no row (the summary says how many)
        self.failed_paths: set[str] = set()  # every source that failed in this commit (its row new or known)
        self.bytes_in = self.bytes_out = 0
        self.similarities: list[float] = []
        self.views: dict[str, list[float]] = {v: [] for v in VIEW_NAMES}
        self.qualities: list[int] = []
        self.probes: list[int] = []
        self.failures: list[FailureRow] = []
        self.timings = Timings()
        self.admitted: dict[str, str] = {}  # item key -> the path of the source admitted with it
        self.duplicates: dict[str, str] = {}  # a skipped second copy's path -> the path admitted with its content

    def duplicate_pairs(self) -> list[tuple[str, str]]:
        """(a second copy's path, the path its content was admitted with), as stored."""
        return [(names.storable(path), names.storable(first)) for path, first in self.duplicates.items()]

    def add(self, result: BatchResult, failures: Sequence[FailureRow]) -> Stored:
        """Count a batch's rows; ``failures``: those of its failures that were added (the others were
        recorded before), so that the counts say what the commit holds."""
        c = self.counts
        self.timings.merge(result.timings)
        bytes_in = sum(row.source_bytes for row in result.items)
        bytes_out = sum(row.bytes for row in result.items)
        for row in result.items:
            c.stored += 1
            c.flagged += row.status == "flagged"
            c.kept_source += row.status == "source"
            c.passthrough += row.status == "passthrough"
            self.similarities.append(row.similarity)
            for view, sims in self.views.items():
                if math.isfinite(value := getattr(row, f"similarity_{view}")):
                    sims.append(value)
            self.probes.append(row.probes)
            if row.quality:
                self.qualities.append(row.quality)
        c.failed += len(failures)
        self.failed_known += len(result.failures) - len(failures)
        self.failures.extend(failures)
        self.failed_paths.update(f.source_path for f in result.failures)  # recorded now or before
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out
        return Stored(bytes_in, bytes_out)

    def quality(self) -> QualityStats:
        def mean(values: Sequence[float]) -> float | None:
            return float(np.mean(values)) if values else None

        views = {v: {"min": round(float(min(sims)), 6), "mean": round(float(np.mean(sims)), 6)}
                 for v, sims in self.views.items() if sims}
        return QualityStats(similarity_min=float(min(self.similarities)) if self.similarities else None,
                            similarity_mean=mean(self.similarities), quality_mean=mean(self.qualities),
                            probes_mean=mean(self.probes), views=views or None)


def read_files(paths: Sequence[Path], max_bytes: int, *, roots: Sequence[str] | None = None,
               follow_symlinks: bool = False) -> list[SourceFile | Failed]:
    """Read and hash each file; one that cannot be read becomes a :class:`~preprocess.pipeline.process.Failed`.
    ``roots`` and ``follow_symlinks``: which symlinks may be followed
    (:func:`~preprocess.sources.files.read_source`)."""
    out: list[SourceFile | Failed] = []
    for p in paths:
        try:
            out.append(read_source(p, max_bytes=max_bytes, roots=roots, follow_symlinks=follow_symlinks))
        except InputError as exc:
            out.append(Failed(str(p), exc))
    return out


def _model_info(built: BuiltModel) -> ModelInfo:
    m = built.manifest
    return ModelInfo(name=m.name, weights_sha256=m.weights_sha256(), onnx_sha256=built.onnx_sha256,
                     manifest=m.origin, dim=m.output.dim)


def input_roots(roots: Sequence[Where | Location]) -> list[str]:
    """The source roots as recorded in provenance: absolute local paths, ``s3://`` URLs as given."""
    return [loc.text if loc.remote else str(Path(loc.text).resolve()) for loc in map(Location.of_source, roots)]


@dataclass(frozen=True)
class JobInfo:
    """Who is ingesting: what the provenance and the summary say about the job."""

    kind: str  # the provenance's kind: "run" (also on Ray), "watch"
    roots: Sequence[Where | Location]  # the sources (as the user gave them, or parsed)
    store: Where | Location  # the dataset's location (as the user gave it, or parsed)
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # on every row and in the provenance
    title: str = ""  # the default commit message's start (default: "preprocess KIND")
    device: str = ""  # the device the summary reports (default: the plan's)


class Ingest:
    """Admits, stores and commits the rows of one job on one branch (see the module doc); takes
    over ``writer`` (:meth:`close` closes it). ``since``: when the job started (default: now).
    After :meth:`commit` the next rows start a new commit (the watch daemon's next window) with the
    same job id.
    """

    def __init__(self, writer: DatasetWriter, p: Plan, job: JobInfo, *, since: Stopwatch | None = None) -> None:
        self.writer = writer
        self.plan = p
        self.job = job
        self._since = since or Stopwatch()
        self._tally = Tally()
        self._listed: list[tuple[str, str]] = []

    # -- one commit's rows -----------------------------------------------------------------------

    @property
    def job_id(self) -> str:
        return self.job.job_id

    @property
    def timings(self) -> Timings:
        """This commit's stage timings (drivers add their own stages: read, process, ...)."""
        return self._tally.timings

    @property
    def pending_rows(self) -> int:
        """Rows (items + failures) added to the writer since the last commit."""
        c = self.writer.counts
        return c.items_added + c.failures_added

    def admit[F: Candidate](self, files: Sequence[F]) -> Admission[F]:
        """Lists every read source as an input and drops what is stored (see the module doc)."""
        todo: list[F] = []
        skipped: list[F] = []
        fingerprint, t = self.plan.fingerprint, self._tally
        for f in files:
            if f.sha256:
                self._listed.append((f.path, f.sha256))
                key = item_key(f.sha256, fingerprint)
                if not self.writer.claim(key):
                    if key in t.admitted:  # not on the branch: the same content came first in this commit
                        t.duplicates[f.path] = t.admitted[key]
                    skipped.append(f)
                    continue
                t.admitted[key] = f.path
            todo.append(f)
        self._tally.counts.sources += len(files)
        self._tally.counts.skipped += len(skipped)
        return Admission(todo, skipped)

    def store(self, result: BatchResult) -> Stored:
        """Add a processed batch's rows to the writer (each failure once) and count them."""
        with self.timings.stage("store"):
            for row in result.items:
                self.writer.add_item(row)
            added = self._add_failures(result.failures)
        return self._tally.add(result, added)

    def record(self, result: BatchResult) -> Stored:
        """Like :meth:`store` for rows whose items reach the writer another way (Ray's forked
        writes): records the failures (once) and counts everything."""
        return self._tally.add(result, self._add_failures(result.failures))

    def _add_failures(self, failures: Sequence[FailureRow]) -> list[FailureRow]:
        """Add the failures not recorded yet (on the branch, or earlier in this job); returns them."""
        added = []
        for row in failures:
            if not self.writer.has_failure(row.key):
                self.writer.add_failure(row)
                added.append(row)
        return added

    # -- the commit ------------------------------------------------------------------------------

    def commit(self, message: str = "", *, engine: Describes, watch: WatchInfo | None = None,
               ray: RayInfo | None = None) -> Summary:
        """ONE commit of everything added since the last (none when nothing was added) with its
        provenance; returns the summary (``snapshot`` None when nothing was committed)."""
        described = engine.describe()
        provenance = self.provenance(described, watch=watch, ray=ray)
        c = self._tally.counts
        with self.timings.stage("commit"):
            title = self.job.title or f"preprocess {self.job.kind}"
            snapshot = self.writer.commit(message or f"{title}: {c.stored} stored, {c.failed} failed",
                                          provenance.to_metadata())
        summary = self.summary(snapshot, engine=described.get("engine", self.plan.engine))
        self._tally = Tally()
        self._listed = []
        self._since = Stopwatch()
        return summary

    def provenance(self, engine: dict[str, str], *, watch: WatchInfo | None = None,
                   ray: RayInfo | None = None) -> Provenance:
        """The provenance of the rows since the last commit (written by :meth:`commit`)."""
        p, t = self.plan, self._tally
        return Provenance(
            preprocess=Header(kind=self.job.kind, job_id=self.job_id),
            spec=p.spec.to_dict(), spec_path=p.spec_path, spec_sha256=p.spec.digest(), fingerprint=p.fingerprint,
            model=_model_info(p.built),
            others=[_model_info(b) for b in p.others] or None,
            software=software_versions(), engine=EngineInfo.model_validate(engine), machine=Machine.here(),
            inputs=Inputs(roots=input_roots(self.job.roots), count=len(self._listed),
                          list_sha256=list_digest(self._listed), branch=self.writer.branch,
                          parent_snapshot=self.writer.base_snapshot,
                          duplicates=dict(t.duplicate_pairs()) or None),
            counts=t.counts.model_copy(), bytes=ByteCounts.of(t.bytes_in, t.bytes_out), quality=t.quality(),
            timings=t.timings.rounded(), started_at=self._since.started_at, finished_at=now_iso(),
            watch=watch, ray=ray)

    def summary(self, snapshot: str | None = None, *, engine: str | None = None) -> Summary:
        """What was done since the last commit (the job's summary)."""
        p, t, c, q = self.plan, self._tally, self._tally.counts, self._tally.quality()
        return Summary(
            job_id=self.job_id, snapshot=snapshot, branch=self.writer.branch, store=given(self.job.store),
            engine=engine or p.engine, device=self.job.device or p.device, spec=p.spec_path, fingerprint=p.fingerprint,
            model=p.model, sources=c.sources, skipped=c.skipped, stored=c.stored, failed=c.failed,
            failed_known=t.failed_known,
            flagged=c.flagged, kept_source=c.kept_source, passthrough=c.passthrough, bytes_in=t.bytes_in,
            bytes_out=t.bytes_out, similarity_min=q.similarity_min, similarity_mean=q.similarity_mean,
            views=q.views or {}, warnings=p.spec.warnings(),
            quality_mean=q.quality_mean, probes_mean=q.probes_mean, seconds=round(self._since.elapsed(), 3),
            timings=t.timings.rounded(),
            failures=[{"path": names.storable(f.source_path), "code": f.code, "message": names.text(f.message)}
                      for f in t.failures],
            duplicates=[{"path": names.storable(path), "same_as": names.storable(first),
                         "same_as_outcome": "failed" if first in t.failed_paths else "stored"}
                        for path, first in t.duplicates.items()])

    def close(self) -> None:
        """Close the writer: what was not committed is discarded."""
        self.writer.close()

"""The batch job: list sources -> read + hash -> skip what is stored -> process -> ONE commit.

Shared by the CLI's ``run``. Everything that can be checked before touching an image is checked
first (spec, model, engine, sources, store, branch). Each bad source becomes a failure row and
the job goes on. Nothing is visible in the store until the single commit at the end: a killed
job leaves the branch at its last commit, and a rerun skips every (source content, spec
fingerprint) already stored.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from preprocess.errors import InputError
from preprocess.objects import is_object_url
from preprocess.process import BatchResult, Failed, PendingBatch, Plan, Processor, describe_plan, plan
from preprocess.provenance import machine, software_versions
from preprocess.sources import SourceFile, batched, list_digest, list_sources, local_roots, read_source
from preprocess.store import DatasetWriter, item_key, open_repo
from preprocess.store.schema import failure_key

PROVENANCE_FORMAT = 1


class Progress(Protocol):
    def start(self, total: int) -> None: ...
    def advance(self, images: int, bytes_in: int, bytes_out: int) -> None: ...
    def finish(self) -> None: ...


class SilentProgress:
    def start(self, total: int) -> None: ...
    def advance(self, images: int, bytes_in: int, bytes_out: int) -> None: ...
    def finish(self) -> None: ...


@dataclass
class JobOptions:
    sources: Sequence[str]
    store: str
    spec_path: str | None = None
    branch: str = "main"
    message: str = ""
    engine: str = "auto"
    device: str = "auto"
    wait: float = 0.0  # seconds to wait for another process writing the same local store
    follow_symlinks: bool = False  # follow symlinks that lead outside the source roots (default: refuse them)


@dataclass
class Summary:
    """What a job did; printed as a table, or as JSON with ``--json``."""

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
    failed: int = 0
    flagged: int = 0
    kept_source: int = 0  # gate failed and on_fail = source
    passthrough: int = 0  # the source JPEG was already smaller than any candidate
    bytes_in: int = 0
    bytes_out: int = 0
    similarity_min: float | None = None
    similarity_mean: float | None = None
    quality_mean: float | None = None
    probes_mean: float | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        done = self.stored + self.failed
        return done / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["images_per_second"] = round(self.images_per_second, 3)
        d["ratio"] = round(self.bytes_in / self.bytes_out, 3) if self.bytes_out else None
        return d


class Tally:
    """Running totals over a job's batches (or over one commit window of the watch daemon)."""

    def __init__(self, summary: Summary) -> None:
        self.summary = summary
        self.sims: list[float] = []
        self.quals: list[int] = []
        self.probes: list[int] = []
        self.timings: dict[str, float] = {}

    def time(self, stage: str, seconds: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds

    def add(self, result: BatchResult) -> tuple[int, int]:
        s = self.summary
        bytes_in = bytes_out = 0
        for stage, secs in result.timings.items():
            self.time(stage, secs)
        for row in result.items:
            s.stored += 1
            s.flagged += row.status == "flagged"
            s.kept_source += row.status == "source"
            s.passthrough += row.status == "passthrough"
            bytes_in += row.source_bytes
            bytes_out += row.bytes
            self.sims.append(row.similarity)
            self.probes.append(row.probes)
            if row.quality:
                self.quals.append(row.quality)
        for f in result.failures:
            s.failed += 1
            s.failures.append({"path": f.source_path, "code": f.code, "message": f.message})
        s.bytes_in += bytes_in
        s.bytes_out += bytes_out
        return bytes_in, bytes_out

    def close(self) -> None:
        s = self.summary
        s.similarity_min = float(min(self.sims)) if self.sims else None
        s.similarity_mean = float(np.mean(self.sims)) if self.sims else None
        s.quality_mean = float(np.mean(self.quals)) if self.quals else None
        s.probes_mean = float(np.mean(self.probes)) if self.probes else None
        s.timings = {k: round(v, 4) for k, v in self.timings.items()}


def read_files(batch: Sequence[Path], max_bytes: int, *, roots: Sequence[str] | None = None,
               follow_symlinks: bool = False) -> list[SourceFile | Failed]:
    """Read and hash each file; one that cannot be read becomes a :class:`Failed`. ``roots`` and
    ``follow_symlinks``: which symlinks may be followed (see :func:`~preprocess.sources.read_source`)."""
    out: list[SourceFile | Failed] = []
    for p in batch:
        try:
            out.append(read_source(p, max_bytes=max_bytes, roots=roots, follow_symlinks=follow_symlinks))
        except InputError as exc:
            out.append(Failed(str(p), exc))
    return out


def new_summary(opts: JobOptions, p: Plan, *, device: str, sources: int) -> Summary:
    """A fresh job's summary (with a new job id), shared by the local and the Ray job."""
    return Summary(job_id=uuid.uuid4().hex, snapshot=None, branch=opts.branch, store=opts.store, engine=p.engine,
                   device=device, spec=p.spec_path, fingerprint=p.fingerprint, model=p.model, sources=sources)


def run_job(opts: JobOptions, progress: Progress | None = None) -> Summary:
    progress = progress or SilentProgress()
    t_start = time.perf_counter()
    started_at = datetime.now(UTC).isoformat()
    p = plan(opts.spec_path, opts.engine, opts.device)
    paths = list_sources(opts.sources)
    writer = DatasetWriter(open_repo(opts.store, create=True), opts.branch, wait=opts.wait)
    summary = new_summary(opts, p, device=p.device, sources=len(paths))
    job_id = summary.job_id
    tally = Tally(summary)
    known = writer.existing_keys()
    known_failures = writer.existing_failures()
    processor = Processor(p, job_id=job_id)
    processor.stats.seed(writer.recent_qualities(p.fingerprint))  # the first batch's guess
    progress.start(len(paths))
    try:
        listed = run_batches(processor, writer, list(batched(paths, processor.batch_size)),
                             max_bytes=p.spec.limits.max_file_bytes, known=known, known_failures=known_failures,
                             tally=tally, progress=progress, roots=local_roots(opts.sources),
                             follow_symlinks=opts.follow_symlinks)
        tally.close()
        t0 = time.perf_counter()
        metadata = provenance(opts, p, processor, summary, listed, writer.base_snapshot, started_at)
        message = opts.message or f"preprocess run: {summary.stored} stored, {summary.failed} failed"
        summary.snapshot = writer.commit(message, metadata)
        tally.time("commit", time.perf_counter() - t0)
    finally:
        processor.close()
        writer.close()
        progress.finish()
    tally.close()
    summary.seconds = round(time.perf_counter() - t_start, 3)
    return summary


def run_batches(processor: Processor, writer: DatasetWriter, batches: Sequence[Sequence[Path]], *, max_bytes: int,
                known: set[str], known_failures: set[tuple[str, str, str]], tally: Tally,
                progress: Progress, roots: Sequence[str] | None = None,
                follow_symlinks: bool = False) -> list[tuple[str, str]]:
    """Read, dedupe, process and store batch after batch (no commit); returns (path, sha256) of
    every source read, for the commit's input list.

    Three things overlap: a reader thread reads the next batch, the processor's lanes work on
    up to two batches, and this thread stores the older one as soon as it is done.
    """
    listed: list[tuple[str, str]] = []
    queued: deque[tuple[int, PendingBatch]] = deque()  # submitted, not yet stored
    fingerprint = processor.plan.fingerprint

    def store_oldest() -> None:
        count, pending = queued.popleft()
        result = pending.result()
        t0 = time.perf_counter()
        write_result(writer, result, known_failures)
        tally.time("store", time.perf_counter() - t0)
        bytes_in, bytes_out = tally.add(result)
        progress.advance(count, bytes_in, bytes_out)

    read = partial(read_files, max_bytes=max_bytes, roots=roots, follow_symlinks=follow_symlinks)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="reader") as reader:
        ahead: Future[list[SourceFile | Failed]] | None = reader.submit(read, batches[0]) if batches else None
        for n in range(len(batches)):
            assert ahead is not None
            t0 = time.perf_counter()
            files = ahead.result()
            tally.time("read", time.perf_counter() - t0)
            ahead = reader.submit(read, batches[n + 1]) if n + 1 < len(batches) else None
            listed.extend((f.path, f.sha256) for f in files if isinstance(f, SourceFile))
            todo, skipped = dedupe(files, known, fingerprint)
            tally.summary.skipped += len(skipped)
            queued.append((len(files), processor.submit(todo)))
            # Keep the next batch queued on the lanes while storing this one; but while there is no
            # first-probe guess yet (a fresh branch), wait, so the next batch starts from this one's.
            if len(queued) > 1 or processor.stats.guess() is None:
                store_oldest()
        while queued:
            store_oldest()
    return listed


def dedupe(files: Sequence[SourceFile | Failed], known: set[str],
           fingerprint: str) -> tuple[list[SourceFile | Failed], list[SourceFile]]:
    """Split read files into (to process, already stored): a source whose ``sha256:fingerprint`` key
    is in ``known`` is skipped; the keys of the others are added to ``known``, so a second copy of
    the same content (in this batch or a later one) is skipped too."""
    todo: list[SourceFile | Failed] = []
    skipped: list[SourceFile] = []
    for f in files:
        if isinstance(f, SourceFile):
            key = item_key(f.sha256, fingerprint)
            if key in known:
                skipped.append(f)
                continue
            known.add(key)
        todo.append(f)
    return todo, skipped


def write_result(writer: DatasetWriter, result: BatchResult, known_failures: set[tuple[str, str, str]]) -> None:
    """Add a batch's rows to the writer; the same failure (:func:`~preprocess.store.schema.failure_key`) is
    recorded once."""
    for row in result.items:
        writer.add_item(row)
    for frow in result.failures:
        key = failure_key(frow.source_sha256, frow.source_path, frow.fingerprint, frow.code)
        if key not in known_failures:
            known_failures.add(key)
            writer.add_failure(frow)


def provenance(opts: JobOptions, p: Plan, processor: Processor, summary: Summary,
               listed: list[tuple[str, str]], parent: str, started_at: str) -> dict[str, Any]:
    """A ``run`` commit's metadata: how every row of it was made."""
    return commit_metadata("run", p, processor, summary, roots=opts.sources, branch=opts.branch, listed=listed,
                           parent=parent, started_at=started_at)


class Describes(Protocol):
    """What made the rows: a :class:`Processor` (or, for a Ray job, what its actors reported)."""

    def describe(self) -> dict[str, str]: ...


def input_roots(roots: Sequence[str]) -> list[str]:
    """The source roots as recorded in provenance: absolute local paths, ``s3://`` URLs as given."""
    return [s if is_object_url(s) else str(Path(s).resolve()) for s in roots]


def commit_metadata(kind: str, p: Plan, processor: Describes, summary: Summary, *, roots: Sequence[str],
                    branch: str, listed: list[tuple[str, str]], parent: str, started_at: str,
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A commit's metadata (``run``, ``watch``, ...): how every row of it was made; ``extra`` is
    merged in at the top level (e.g. the watch daemon's ``watch`` section)."""
    return {
        "preprocess": {"format": PROVENANCE_FORMAT, "kind": kind, "job_id": summary.job_id},
        **describe_plan(p),
        "software": software_versions(),
        "engine": processor.describe(),
        "machine": machine(),
        "inputs": {"roots": input_roots(roots), "count": len(listed),
                   "list_sha256": list_digest(listed), "branch": branch, "parent_snapshot": parent},
        "counts": {"sources": summary.sources, "skipped": summary.skipped, "stored": summary.stored,
                   "failed": summary.failed, "flagged": summary.flagged, "kept_source": summary.kept_source,
                   "passthrough": summary.passthrough},
        "bytes": {"in": summary.bytes_in, "out": summary.bytes_out},
        "quality": {"similarity_min": summary.similarity_min, "similarity_mean": summary.similarity_mean,
                    "quality_mean": summary.quality_mean, "probes_mean": summary.probes_mean},
        "timings": summary.timings,
        "started_at": started_at,
        "finished_at": datetime.now(UTC).isoformat(),
        **(extra or {}),
    }

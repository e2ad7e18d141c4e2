"""The batch job: sources -> probe -> engine (decode, resize) -> gate (encode, judge) -> store -> ONE commit.

Shared by the CLI's ``run`` (and later the watch daemon and Ray workers). Everything that can
be checked before touching an image is checked first (spec, model, engine, store, branch).
Each source's bad input becomes a failure row; the job goes on. Nothing is visible in the
store until the single commit at the end: a killed job leaves the branch at its last commit,
and a rerun skips every (source content, spec fingerprint) already stored.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from preprocess import errors
from preprocess.engines import make_engine, resolve
from preprocess.engines.base import Engine, SourceImage
from preprocess.errors import InputError, input_error
from preprocess.extractor.build import BuiltModel, build
from preprocess.extractor.manifest import find_manifest
from preprocess.extractor.session import Extractor
from preprocess.gate import GateStats, decide
from preprocess.images import probe
from preprocess.provenance import machine, software_versions
from preprocess.sources import SourceFile, batched, list_digest, list_sources, read_source
from preprocess.spec import Spec, default_spec_path, load_spec
from preprocess.store import DatasetWriter, FailureRow, ItemRow, open_repo

PROVENANCE_FORMAT = 1


class Progress(Protocol):
    def start(self, total: int) -> None: ...
    def advance(self, images: int, bytes_in: int, bytes_out: int) -> None: ...
    def finish(self) -> None: ...


class _Silent:
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


class _Clock:
    def __init__(self) -> None:
        self.totals: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.totals[stage] = self.totals.get(stage, 0.0) + seconds

    def timed(self, stage: str, fn: Callable[..., Any], *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.add(stage, time.perf_counter() - t0)


@dataclass
class Prepared:
    """Everything decided before a job touches an image."""

    spec: Spec
    spec_path: str
    built: BuiltModel
    fingerprint: str
    engine_name: str
    device: str


def prepare(opts: JobOptions) -> Prepared:
    spec_path = opts.spec_path or str(default_spec_path())
    spec = load_spec(spec_path)
    manifest = find_manifest(spec.gate.model)
    engine_name, device = resolve(opts.engine, opts.device)
    built = build(manifest)
    return Prepared(spec, spec_path, built, spec.fingerprint(built.manifest.weights_sha256()),
                    engine_name, device)


def run_job(opts: JobOptions, progress: Progress | None = None) -> Summary:
    progress = progress or _Silent()
    t_start = time.perf_counter()
    started_at = datetime.now(UTC).isoformat()
    prep = prepare(opts)
    spec = prep.spec
    paths = list_sources(opts.sources)
    repo = open_repo(opts.store, create=True)
    writer = DatasetWriter(repo, opts.branch)
    job_id = uuid.uuid4().hex
    summary = Summary(job_id=job_id, snapshot=None, branch=opts.branch, store=opts.store,
                      engine=prep.engine_name, device=prep.device, spec=prep.spec_path,
                      fingerprint=prep.fingerprint, model=prep.built.manifest.name, sources=len(paths))
    known = writer.existing_keys()
    known_failures = writer.existing_failures()
    clock = _Clock()
    engine = make_engine(prep.engine_name, prep.device, encode=spec.encode, view=prep.built.manifest.input,
                         max_batch=spec.batch.size)
    extractor = Extractor(prep.built, device=prep.device)
    stats = GateStats()
    listed: list[tuple[str, str]] = []
    seen: set[str] = set()
    sims: list[float] = []
    quals: list[int] = []
    probes: list[int] = []

    def fail(src_path: str, sha: str, size: int, exc: InputError) -> None:
        summary.failed += 1
        summary.failures.append({"path": src_path, "code": exc.code, "message": exc.message})
        if (sha, prep.fingerprint, exc.code) in known_failures:
            return
        known_failures.add((sha, prep.fingerprint, exc.code))
        writer.add_failure(FailureRow(source_path=src_path, source_sha256=sha, source_bytes=size,
                                      fingerprint=prep.fingerprint, code=exc.code, message=exc.message,
                                      job_id=job_id))

    def read_batch(batch: list[Path]) -> list[SourceFile | tuple[str, InputError]]:
        out: list[SourceFile | tuple[str, InputError]] = []
        for p in batch:
            try:
                out.append(read_source(p, max_bytes=spec.limits.max_file_bytes))
            except InputError as exc:
                out.append((str(p), exc))
        return out

    progress.start(len(paths))
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="reader") as reader:
            batches = list(batched(paths, spec.batch.size))
            pending: Future[list[SourceFile | tuple[str, InputError]]] | None = (
                reader.submit(read_batch, batches[0]) if batches else None)
            for n in range(len(batches)):
                assert pending is not None
                t0 = time.perf_counter()
                files = pending.result()
                clock.add("read", time.perf_counter() - t0)
                pending = reader.submit(read_batch, batches[n + 1]) if n + 1 < len(batches) else None
                _process_batch(files, prep, engine, extractor, writer, stats, clock, summary, known,
                               seen, listed, sims, quals, probes, fail, job_id, progress)
        t0 = time.perf_counter()
        summary.similarity_min = float(min(sims)) if sims else None
        summary.similarity_mean = float(np.mean(sims)) if sims else None
        summary.quality_mean = float(np.mean(quals)) if quals else None
        summary.probes_mean = float(np.mean(probes)) if probes else None
        summary.timings = {k: round(v, 4) for k, v in clock.totals.items()}
        metadata = _provenance(opts, prep, engine, summary, listed, repo_parent(writer), started_at)
        message = opts.message or (f"preprocess run: {summary.stored} stored, {summary.failed} failed "
                                   f"({prep.spec_path})")
        summary.snapshot = writer.commit(message, metadata)
        clock.add("commit", time.perf_counter() - t0)
    finally:
        engine.close()
        progress.finish()
    summary.timings = {k: round(v, 4) for k, v in clock.totals.items()}
    summary.seconds = round(time.perf_counter() - t_start, 3)
    return summary


def repo_parent(writer: DatasetWriter) -> str:
    return str(getattr(writer, "base_snapshot", "") or "")


def _process_batch(files: list[SourceFile | tuple[str, InputError]], prep: Prepared, engine: Engine,
                   extractor: Extractor, writer: DatasetWriter, stats: GateStats, clock: _Clock,
                   summary: Summary, known: set[str], seen: set[str], listed: list[tuple[str, str]],
                   sims: list[float], quals: list[int], probes: list[int],
                   fail: Callable[[str, str, int, InputError], None], job_id: str, progress: Progress) -> None:
    spec = prep.spec
    todo: list[SourceImage] = []
    bytes_in = bytes_out = 0
    done = 0
    for f in files:
        if isinstance(f, tuple):
            fail(f[0], "", 0, f[1])
            done += 1
            continue
        listed.append((f.path, f.sha256))
        key = f"{f.sha256}:{prep.fingerprint}"
        if key in known or f.sha256 in seen:
            summary.skipped += 1
            done += 1
            continue
        seen.add(f.sha256)
        try:
            t0 = time.perf_counter()
            info = probe(f.data, max_pixels=spec.limits.max_pixels, path=f.path)
            clock.add("probe", time.perf_counter() - t0)
        except InputError as exc:
            fail(f.path, f.sha256, f.size, exc)
            done += 1
            continue
        todo.append(SourceImage(path=f.path, data=f.data, sha256=f.sha256, info=info,
                                target=spec.resize.target(info.width, info.height)))
    if todo:
        loaded = clock.timed("decode_resize", engine.load, todo)
        for idx, exc in loaded.failures:
            s = todo[idx]
            fail(s.path, s.sha256, len(s.data), exc)
        decisions = clock.timed("gate", decide, engine, extractor, loaded, spec.quality, spec.gate, stats)
        t0 = time.perf_counter()
        for prepared, d in zip(loaded.prepared, decisions, strict=True):
            s = todo[prepared.index]
            if d.status == "rejected":
                fail(s.path, s.sha256, len(s.data), input_error(
                    errors.GATE_REJECTED, f"best similarity {d.similarity:.4f} at quality {d.quality} is below "
                    f"the threshold {spec.gate.threshold}", s.path))
                continue
            if d.jpeg is not None and _source_is_smaller(s, prepared.width, prepared.height, len(d.jpeg)):
                # Never store more bytes than the source when the source is already a plain JPEG of
                # the target size: its bytes are smaller and exact (similarity 1 by definition).
                d = replace(d, status="passthrough", quality=0, similarity=1.0, jpeg=None, embedding=d.reference)
            keep_source = d.status in ("source", "passthrough")
            blob = s.data if keep_source else d.jpeg
            assert blob is not None
            writer.add_item(ItemRow(
                jpeg=blob, format=s.info.format.lower() if keep_source else "jpeg", status=d.status,
                width=s.info.width if keep_source else prepared.width,
                height=s.info.height if keep_source else prepared.height,
                bytes=len(blob), quality=d.quality, similarity=float(d.similarity), probes=d.probes,
                model=prep.built.manifest.name, source_path=s.path, source_sha256=s.sha256,
                source_bytes=len(s.data), source_width=s.info.width, source_height=s.info.height,
                source_format=s.info.format.lower(), capture_time=s.info.capture_time,
                camera_model=s.info.camera_model, fingerprint=prep.fingerprint, job_id=job_id,
                embedding=np.asarray(d.embedding, dtype=np.float32)))
            summary.stored += 1
            summary.flagged += d.status == "flagged"
            summary.kept_source += d.status == "source"
            summary.passthrough += d.status == "passthrough"
            summary.bytes_in += len(s.data)
            summary.bytes_out += len(blob)
            bytes_in += len(s.data)
            bytes_out += len(blob)
            sims.append(d.similarity)
            probes.append(d.probes)
            if not keep_source:
                quals.append(d.quality)
        clock.add("store", time.perf_counter() - t0)
        done += len(todo)
    progress.advance(done, bytes_in, bytes_out)


def _source_is_smaller(s: SourceImage, width: int, height: int, candidate_bytes: int) -> bool:
    info = s.info
    return (info.format == "JPEG" and info.plain and info.orientation == 1
            and (width, height) == (info.width, info.height) and len(s.data) <= candidate_bytes)


def _provenance(opts: JobOptions, prep: Prepared, engine: Engine, summary: Summary,
                listed: list[tuple[str, str]], parent: str, started_at: str) -> dict[str, Any]:
    m = prep.built.manifest
    return {
        "preprocess": {"format": PROVENANCE_FORMAT, "kind": "run", "job_id": summary.job_id},
        "spec": prep.spec.to_dict(),
        "spec_path": prep.spec_path,
        "spec_sha256": prep.spec.digest(),
        "fingerprint": prep.fingerprint,
        "model": {"name": m.name, "weights_sha256": m.weights_sha256(), "onnx_sha256": prep.built.onnx_sha256,
                  "manifest": m.origin, "dim": m.output.dim},
        "software": software_versions(),
        "engine": engine.describe(),
        "machine": machine(),
        "inputs": {"roots": [str(Path(s).resolve()) for s in opts.sources], "count": len(listed),
                   "list_sha256": list_digest(listed), "branch": opts.branch, "parent_snapshot": parent},
        "counts": {"sources": summary.sources, "skipped": summary.skipped, "stored": summary.stored,
                   "failed": summary.failed, "flagged": summary.flagged, "kept_source": summary.kept_source,
                   "passthrough": summary.passthrough},
        "bytes": {"in": summary.bytes_in, "out": summary.bytes_out},
        "quality": {"similarity_min": summary.similarity_min, "similarity_mean": summary.similarity_mean,
                    "quality_mean": summary.quality_mean, "probes_mean": summary.probes_mean},
        "timings": summary.timings,
        "started_at": started_at,
        "finished_at": datetime.now(UTC).isoformat(),
    }

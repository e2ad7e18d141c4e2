"""Turning source files into dataset rows: probe -> engine (decode, resize) -> gate -> rows.

:class:`Processor` is the one place that does it, shared by the batch job, the watch daemon
and distributed workers. It owns the engine and the extractor; it never touches the store,
so the caller decides what is already stored (dedupe), where rows go and when to commit.

On the CPU (the pillow engine) a batch is cut into small chunks that ``lanes`` threads take in
turn, each running decode -> gate -> encode for its chunk with single-threaded Pillow and
onnxruntime calls: every core stays busy, with no barrier between stages (measured on 2 cores:
one model call on 2 intra-op threads is only ~1.2x faster than on one). A GPU engine batches
instead: one lane, the whole batch per call.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from preprocess import errors
from preprocess.engines import make_engine, resolve
from preprocess.engines.base import SourceImage
from preprocess.errors import ConfigError, InputError, input_error
from preprocess.extractor.build import BuiltModel, build
from preprocess.extractor.manifest import Manifest, find_manifest
from preprocess.extractor.session import Extractor
from preprocess.gate import Decision, GateStats, Measure, Outcome, Priors, decide
from preprocess.images import probe
from preprocess.sources import SourceFile
from preprocess.spec import Spec, default_spec_path, load_spec
from preprocess.store import FailureRow, ItemRow


@dataclass(frozen=True)
class Plan:
    """Everything decided before any image is touched: spec, model, engine, device."""

    spec: Spec
    spec_path: str
    built: BuiltModel
    fingerprint: str
    engine: str
    device: str

    @property
    def model(self) -> str:
        return self.built.manifest.name


def plan(spec_path: str | None, engine: str = "auto", device: str = "auto") -> Plan:
    """Validate the spec, find and build the model, resolve engine/device; raise ConfigError early."""
    path = spec_path or str(default_spec_path())
    spec = load_spec(path)
    manifest = _spec_model(spec.gate.model, path)
    engine_name, device_name = resolve(engine, device)
    built = build(manifest)
    return Plan(spec, path, built, spec.fingerprint(manifest.weights_sha256()), engine_name, device_name)


def _spec_model(model: str, spec_path: str) -> Manifest:
    """The spec's ``gate.model``; when it cannot be found, the error names the spec file and the field
    (the manifest path alone does not say where it came from)."""
    try:
        return find_manifest(model)
    except ConfigError as exc:
        if exc.code not in ("MODEL_MISSING", "MODEL_UNKNOWN"):
            raise
        where = f" (manifest: {exc.path})" if exc.path else ""
        raise ConfigError(f"gate.model = {model!r}: {exc.message}{where}", code=exc.code, path=spec_path,
                          hint=f"fix gate.model in {spec_path}: {exc.hint or 'see `preprocess models list`'}") from None


@dataclass
class Failed:
    """A source that could not be read at all (no content hash)."""

    path: str
    error: InputError

    @property
    def sha256(self) -> str:
        return ""  # never read: nothing to dedupe it by


@dataclass
class BatchResult:
    items: list[ItemRow] = field(default_factory=list)
    failures: list[FailureRow] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, summed over lanes

    def extend(self, other: BatchResult) -> None:
        self.items.extend(other.items)
        self.failures.extend(other.failures)
        for stage, secs in other.timings.items():
            self.timings[stage] = self.timings.get(stage, 0.0) + secs


LANE_CHUNK = 4  # images per lane task: small enough to balance the lanes, big enough to batch a model call


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cpu_lanes(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota (a container's
    CPU limit, e.g. Kubernetes ``limits.cpu``: ``400000 100000`` is 4 CPUs) when there is one."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 file, or not in the expected form
        pass
    return n


class Processor:
    """Processes batches of already-read sources for one :class:`Plan` (engine + model + gate).

    ``lanes``: how many chunks of a batch run at once on the CPU engine (default: the CPUs this
    process may use; a Ray actor passes its CPU share). The DALI engine always runs one lane.
    """

    def __init__(self, p: Plan, *, job_id: str, lanes: int | None = None) -> None:
        self.plan = p
        self.job_id = job_id
        cpu = p.engine == "pillow"
        self.lanes = max(1, lanes or cpu_lanes()) if cpu else 1
        threads: dict[str, int] = {"threads": 1} if cpu else {}  # parallel lanes, not parallel calls
        self.engine = make_engine(p.engine, p.device, encode=p.spec.encode, view=p.built.manifest.input,
                                  max_batch=p.spec.batch.size, **threads)
        self.extractor = Extractor(p.built, device=p.device, **threads)
        self.stats = GateStats(p.spec)
        self.chunk = LANE_CHUNK if cpu else None  # None: the whole batch in one engine call
        # Always a pool (even of one), so a caller can queue the next batch while it stores this one.
        self._lanes = ThreadPoolExecutor(self.lanes, thread_name_prefix="lane")
        # Called from a lane as each chunk is done, with its number of files (a job's progress bar moves
        # per chunk of LANE_CHUNK images, not per batch). Must be thread-safe.
        self.on_chunk: Callable[[int], None] | None = None

    def describe(self) -> dict[str, str]:
        return self.engine.describe()

    def failure(self, path: str, sha256: str, size: int, exc: InputError) -> FailureRow:
        return FailureRow(source_path=path, source_sha256=sha256, source_bytes=size,
                          fingerprint=self.plan.fingerprint, code=exc.code, message=exc.message,
                          job_id=self.job_id)

    def process(self, files: Sequence[SourceFile | Failed]) -> BatchResult:
        """Rows for every file: an item per stored image, a failure per bad one (order kept per kind)."""
        return self.submit(files).result()

    def submit(self, files: Sequence[SourceFile | Failed]) -> PendingBatch:
        """Queue a batch on the lanes and return at once; ``.result()`` gives its rows.

        A caller may keep the next batch queued while it stores this one (the lanes then never
        wait between batches), as long as it takes results in the order it submitted. The
        batch's first-probe guess comes from the batches whose results were taken before this
        call, and the chunks are the same whatever the lanes: the rows depend on the order of
        calls only, never on timing.
        """
        priors = self.stats.priors()
        size = self.chunk or max(len(files), 1)
        chunks = [files[i:i + size] for i in range(0, len(files), size)]
        return PendingBatch(self, [self._lanes.submit(self._chunk_done, c, priors) for c in chunks])

    def _chunk_done(self, files: Sequence[SourceFile | Failed], priors: Priors) -> tuple[BatchResult, list[Outcome]]:
        done = self._chunk(files, priors)
        if self.on_chunk is not None:
            self.on_chunk(len(files))
        return done

    def _chunk(self, files: Sequence[SourceFile | Failed], priors: Priors) -> tuple[BatchResult, list[Outcome]]:
        """Probe, decode, gate and encode some of a batch's files (one lane's share)."""
        spec = self.plan.spec
        out = BatchResult()
        clock = out.timings
        todo: list[SourceImage] = []
        t0 = time.perf_counter()
        for f in files:
            if isinstance(f, Failed):
                out.failures.append(self.failure(f.path, "", 0, f.error))
                continue
            try:
                info = probe(f.data, max_pixels=spec.limits.max_pixels, path=f.path)
            except InputError as exc:
                out.failures.append(self.failure(f.path, f.sha256, f.size, exc))
                continue
            todo.append(SourceImage(path=f.path, data=f.data, sha256=f.sha256, info=info,
                                    target=spec.resize.target(info.width, info.height)))
        clock["probe"] = time.perf_counter() - t0
        if not todo:
            return out, []
        t0 = time.perf_counter()
        loaded = self.engine.load(todo)
        clock["decode_resize"] = time.perf_counter() - t0
        for idx, error in loaded.failures:
            s = todo[idx]
            out.failures.append(self.failure(s.path, s.sha256, len(s.data), error))
        decisions, outcomes = decide(Measure(self.engine, self.extractor), loaded, spec, priors, clock)
        for prepared, d in zip(loaded.prepared, decisions, strict=True):
            s = todo[prepared.index]
            if d.status == "rejected":
                out.failures.append(self.failure(s.path, s.sha256, len(s.data), input_error(
                    errors.GATE_REJECTED, f"best similarity {d.similarity:.4f} at quality {d.quality} is "
                    f"below the threshold {spec.gate.threshold}", s.path)))
                continue
            out.items.append(self._row(s, prepared.width, prepared.height, d))
        return out, outcomes

    def _row(self, s: SourceImage, width: int, height: int, d: Decision) -> ItemRow:
        if d.data is not None and _source_is_smaller(s, width, height, len(d.data)):
            # Never store more bytes than the source when it is already a plain JPEG of the target
            # size: its bytes are smaller and exact (similarity 1 by definition).
            d = replace(d, status="passthrough", candidate=None, similarity=1.0, data=None, embedding=d.reference)
        keep_source = d.data is None or d.candidate is None
        blob = s.data if keep_source else d.data
        assert blob is not None
        info = s.info
        variant = None if keep_source or d.candidate is None else d.candidate.variant
        return ItemRow(
            jpeg=blob, format=info.format.lower() if variant is None else variant.format, status=d.status,
            encoder="" if variant is None else self.engine.library(variant),
            chroma="" if variant is None else variant.chroma,
            width=info.width if keep_source else width, height=info.height if keep_source else height,
            bytes=len(blob), quality=d.quality, similarity=float(d.similarity), probes=d.probes,
            model=self.plan.model, source_path=s.path, source_sha256=s.sha256, source_bytes=len(s.data),
            source_width=info.width, source_height=info.height, source_format=info.format.lower(),
            capture_time=info.capture_time, camera_model=info.camera_model, fingerprint=self.plan.fingerprint,
            job_id=self.job_id, embedding=np.asarray(d.embedding, dtype=np.float32))

    def close(self) -> None:
        self._lanes.shutdown(wait=True, cancel_futures=True)
        self.engine.close()


class PendingBatch:
    """A batch queued by :meth:`Processor.submit`."""

    def __init__(self, processor: Processor, parts: list[Future[tuple[BatchResult, list[Outcome]]]]) -> None:
        self._processor = processor
        self._parts = parts
        self._result: BatchResult | None = None

    def result(self) -> BatchResult:
        """Wait for every chunk; the first call also feeds the batch's choices to later guesses."""
        if self._result is None:
            out = BatchResult()
            for fut in self._parts:
                part, outcomes = fut.result()
                out.extend(part)
                self._processor.stats.record(outcomes)
            self._result = out
        return self._result


def _source_is_smaller(s: SourceImage, width: int, height: int, candidate_bytes: int) -> bool:
    info = s.info
    return (info.format == "JPEG" and info.plain and info.orientation == 1
            and (width, height) == (info.width, info.height) and len(s.data) <= candidate_bytes)

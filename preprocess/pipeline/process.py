"""Turning source files into dataset rows: probe -> engine (decode, resize) -> gate -> rows.

:class:`Processor` is the one place that does it, shared by the batch job, the watch daemon
and distributed workers. It owns the engine and the extractor; it never touches the store,
so the caller decides what is already stored (dedupe), where rows go and when to commit.

One design on both devices: a batch's headers are probed on the processor's own thread, then the
batch is cut into chunks that ``lanes`` threads take in turn, each running decode -> gate -> encode
for its chunk. On the CPU (the pillow engine) the chunks are small and every call single-threaded:
every core stays busy, with no barrier between stages (measured on 2 cores: one model call on 2
intra-op threads is only ~1.2x faster than on one). On the GPU a few lanes each drive their own
DALI pipelines, nvImageCodec encoder, CUDA stream and onnxruntime session with device batches of
128+, so that one lane's host work (Python, CPU encodes, synchronisation) overlaps the others' GPU
work.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

from preprocess.core import errors
from preprocess.core.codes import ErrorCode
from preprocess.core.cpus import cpu_lanes, cpu_share
from preprocess.core.errors import ConfigError, DeviceError, InputError, device_fault, input_error
from preprocess.pipeline.devices import DeviceChoice, DeviceName, EngineChoice, EngineName
from preprocess.pipeline.engines import make_engine, resolve
from preprocess.pipeline.engines.base import Engine, SourceImage
from preprocess.pipeline.extractor.build import BuiltModel, build
from preprocess.pipeline.extractor.manifest import Manifest, find_manifest
from preprocess.pipeline.extractor.session import Extractor
from preprocess.pipeline.gate import Decision, GateStats, Measure, Outcome, Priors, decide, view_columns
from preprocess.pipeline.images import probe
from preprocess.pipeline.spec import Batch, Spec, default_spec_path, find_spec, load_spec
from preprocess.rows.schema import FailureRow, ItemRow
from preprocess.sources.files import SourceFile


@dataclass(frozen=True)
class Plan:
    """Everything decided before any image is touched: spec, models, engine, device."""

    spec: Spec
    spec_path: str
    built: BuiltModel  # the primary model of gate.models (its embedding is stored with each row)
    fingerprint: str
    engine: EngineName
    device: DeviceName
    others: tuple[BuiltModel, ...] = ()  # the other models of gate.models, in order

    @property
    def model(self) -> str:
        return self.built.manifest.name

    @property
    def models(self) -> tuple[BuiltModel, ...]:
        return (self.built, *self.others)


def plan(spec_path: str | None, engine: EngineChoice = "auto", device: DeviceChoice = "auto") -> Plan:
    """Validate the spec, find and build its models, resolve engine/device; raise ConfigError early."""
    path = str(find_spec(spec_path)) if spec_path else str(default_spec_path())
    spec = load_spec(path)
    manifests = [_spec_model(m, path) for m in spec.gate.models]
    _one_input(manifests, path)
    engine_name, device_name = resolve(engine, device)
    built = [build(m) for m in manifests]
    fingerprint = spec.fingerprint([m.weights_sha256() for m in manifests])
    return Plan(spec, path, built[0], fingerprint, engine_name, device_name, tuple(built[1:]))


def _one_input(manifests: Sequence[Manifest], spec_path: str) -> None:
    """The models of one spec embed the same model batch: they must take the same input."""
    first = manifests[0]
    for m in manifests[1:]:
        if m.input != first.input:
            a, b = m.input, first.input
            raise ConfigError(f"gate.models: {m.name!r} takes another input than {first.name!r} "
                              f"({a.width}x{a.height} {a.layout}, mean {a.mean} vs "
                              f"{b.width}x{b.height} {b.layout}, mean {b.mean})",
                              code=ErrorCode.SPEC_INVALID, path=spec_path,
                              hint="the models of one spec share one model input (size, colour, layout, "
                                   "normalisation): check the others with `preprocess tune --model`")


def _spec_model(model: str, spec_path: str) -> Manifest:
    """A model of the spec's ``gate.models``; when it cannot be found, the error names the spec file and
    the field (the manifest path alone does not say where it came from)."""
    try:
        return find_manifest(model)
    except ConfigError as exc:
        if exc.code not in (ErrorCode.MODEL_MISSING, ErrorCode.MODEL_UNKNOWN):
            raise
        where = f" (manifest: {exc.path})" if exc.path else ""
        raise ConfigError(f"gate.models: {model!r}: {exc.message}{where}", code=exc.code, path=spec_path,
                          hint=f"fix gate.models in {spec_path}: {exc.hint or 'see `preprocess models list`'}",
                          ) from None


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


LANE_CHUNK = 4  # images per CPU lane task: small enough to balance the lanes, big enough to batch a model call
GPU_LANES = 3  # lanes sharing one GPU (PREPROCESS_GPU_LANES overrides)
GPU_BATCH = 128  # images per GPU lane call while the spec's [batch] size is the CPU default
CPU_BATCH = Batch().size


@dataclass(frozen=True)
class Layout:
    """How a :class:`Processor` cuts work: ``lanes`` threads, each taking ``chunk`` images per engine
    call; ``batch`` images per submitted batch (what a job reads at once). Each batch's searches start
    from the priors of the batches before it, so ``batch`` never depends on the lanes: rows don't."""

    lanes: int
    chunk: int
    batch: int
    shared: bool  # one engine + extractor for every lane (pillow) or one each (DALI: pipelines, encoder, stream)


def layout(p: Plan, lanes: int | None = None, lane_batch: int | None = None) -> Layout:
    """The pillow engine: one lane per CPU, chunks of :data:`LANE_CHUNK`, single-threaded calls, the
    spec's batch. DALI on the GPU: :data:`GPU_LANES` lanes (``PREPROCESS_GPU_LANES``), each with its
    own engine and extractor, and device batches of ``[batch] size``, or of :data:`GPU_BATCH` while
    that is the CPU default, 32 (``PREPROCESS_GPU_BATCH`` sets it in any case). DALI on the CPU: one
    lane unless asked (its threads parallelise each call), device batches of ``[batch] size``.
    ``lanes``/``lane_batch`` given here win over all of that."""
    size = p.spec.batch.size
    if p.engine == "pillow":
        return Layout(max(1, lanes or cpu_lanes()), LANE_CHUNK, size, shared=True)
    if p.device == "gpu":
        n = max(1, lanes or _env_int("PREPROCESS_GPU_LANES") or GPU_LANES)
        chunk = lane_batch or _env_int("PREPROCESS_GPU_BATCH") or (GPU_BATCH if size == CPU_BATCH else size)
        # every default lane busy, whatever lanes and chunks were asked for (rows must not depend on them)
        return Layout(n, chunk, (GPU_BATCH if size == CPU_BATCH else size) * GPU_LANES, shared=False)
    return Layout(max(1, lanes or 1), lane_batch or size, size, shared=False)


def _failing(spec: Spec, d: Decision) -> str:
    """The checks a rejected image's best candidate failed, e.g. ``crops 0.9512 < 0.97 (dinov2-small)``."""
    thresholds = dict(spec.gate.views.items())
    bad = [f"{view} {s:.4f} < {thresholds[view]}" + (f" ({model})" if len(spec.gate.models) > 1 else "")
           for model, views in d.checks.items() for view, s in views.items() if s < thresholds[view]]
    return ", ".join(bad) or f"similarity {d.similarity:.4f} is below the threshold {spec.gate.threshold}"


def _tried(d: Decision) -> str:
    """Where a rejected image's search ended: the candidate measured at its top, e.g. ``jpegli 4:2:0 q95``."""
    c = d.candidate
    return "nothing measured" if c is None else c.label


def _env_int(name: str) -> int | None:
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{name}={text!r} is not a positive whole number", code=ErrorCode.ENV_INVALID,
                          hint=f"unset {name}, or set it to e.g. 2")
    return int(text)


@dataclass
class _Kit:
    """What one lane works with: an engine and an extractor per model (shared by every lane, or its own)."""

    engine: Engine
    extractor: Extractor
    others: tuple[Extractor, ...] = ()

    def measure(self) -> Measure:
        return Measure(self.engine, self.extractor, self.others)


@dataclass
class _Probed:
    """A batch after the header probe: what goes to the lanes, and the failures so far (by position)."""

    todo: list[tuple[int, SourceImage]] = field(default_factory=list)
    failures: list[tuple[int, FailureRow]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class _LaneResult:
    """One chunk's rows, failures by position in the batch, timings and what the gate learned."""

    items: list[ItemRow] = field(default_factory=list)
    failures: list[tuple[int, FailureRow]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)


class Processor:
    """Processes batches of already-read sources for one :class:`Plan` (engine + model + gate).

    A batch's headers are probed on the processor's own thread (never on a lane), then the batch is
    cut into chunks that ``lanes`` threads take in turn (:func:`layout`). Each image's result depends
    only on its pixels and the batch's priors, never on the chunk it lands in (model calls on the GPU
    have one fixed shape: :class:`~preprocess.pipeline.extractor.session.Extractor`), so lanes never change a row.
    ``lanes``, ``lane_batch``: default per :func:`layout` (a Ray actor passes its CPU share).
    """

    def __init__(self, p: Plan, *, job_id: str, lanes: int | None = None, lane_batch: int | None = None) -> None:
        self.plan = p
        self.job_id = job_id
        self.layout = layout(p, lanes, lane_batch)
        self.lanes = self.layout.lanes
        self.batch_size = self.layout.batch
        self.chunk = self.layout.chunk
        n = 1 if self.layout.shared else self.lanes
        threads = 1 if self.layout.shared else cpu_share(self.lanes)  # parallel lanes, not parallel calls
        self._kits = [self._kit(threads) for _ in range(n)]
        self.engine = self._kits[0].engine  # for what every lane's engine says alike (library, describe)
        self.stats = GateStats(p.spec)
        free: queue.SimpleQueue[_Kit] = queue.SimpleQueue()
        for k in range(self.lanes):
            free.put(self._kits[k % n])
        self._local = threading.local()

        def enter_lane() -> None:  # once in each lane thread: its kit, and its engine's stream if it has one
            self._local.kit = free.get()
            if not self.layout.shared:
                self._local.kit.engine.bind_lane()

        # Always a pool (even of one), so a caller can queue the next batch while it stores this one.
        self._lanes = ThreadPoolExecutor(self.lanes, thread_name_prefix="lane", initializer=enter_lane)
        self._prober = ThreadPoolExecutor(1, thread_name_prefix="probe")
        # Called as each chunk is done on a lane (and for a batch's header failures, on the probe thread)
        # with its number of files: a job's progress bar moves per chunk, not per batch. Thread-safe.
        self.on_chunk: Callable[[int], None] | None = None

    def _kit(self, threads: int) -> _Kit:
        p = self.plan
        engine = make_engine(p.engine, p.device, encode=p.spec.encode, view=p.built.manifest.input,
                             max_batch=self.chunk, threads=threads)
        return _Kit(engine, Extractor(p.built, device=p.device, threads=threads),
                    tuple(Extractor(b, device=p.device, threads=threads) for b in p.others))

    def describe(self) -> dict[str, str]:
        out = self.engine.describe() | {"lanes": str(self.lanes), "lane_batch": str(self.chunk)}
        fallbacks = sum(getattr(k.engine, "fallbacks", 0) for k in self._kits)
        if fallbacks:
            out["encode_fallbacks"] = f"{fallbacks} images encoded on the CPU after the GPU encoder failed on them"
        return out

    def failure(self, path: str, sha256: str, size: int, exc: InputError) -> FailureRow:
        return FailureRow(source_path=path, source_sha256=sha256, source_bytes=size,
                          fingerprint=self.plan.fingerprint, code=exc.code, message=exc.message,
                          job_id=self.job_id)

    def process(self, files: Sequence[SourceFile | Failed]) -> BatchResult:
        """Rows for every file: an item per stored image, a failure per bad one (sources' order per kind)."""
        return self.submit(files).result()

    def submit(self, files: Sequence[SourceFile | Failed]) -> PendingBatch:
        """Queue a batch (header probe, then the lanes) and return at once; ``.result()`` gives its rows.

        A caller may keep the next batch queued while it stores this one (the lanes then never
        wait between batches), as long as it takes results in the order it submitted. The
        batch's first-probe guess comes from the batches whose results were taken before this
        call, and the chunks are the same whatever the lanes: the rows depend on the order of
        calls only, never on timing.
        """
        priors = self.stats.priors()
        return PendingBatch(self, self._prober.submit(self._probe_and_queue, list(files), priors))

    def _probe_and_queue(self, files: list[SourceFile | Failed],
                         priors: Priors) -> tuple[_Probed, list[Future[_LaneResult]]]:
        probed = self._probe(files)
        self._done(len(probed.failures))
        size = self.chunk
        chunks = [probed.todo[i:i + size] for i in range(0, len(probed.todo), size)]
        return probed, [self._lanes.submit(self._chunk_done, c, priors) for c in chunks]

    def _chunk_done(self, todo: Sequence[tuple[int, SourceImage]], priors: Priors) -> _LaneResult:
        done = self._chunk(todo, priors)
        self._done(len(todo))
        return done

    def _done(self, files: int) -> None:
        if files and self.on_chunk is not None:
            self.on_chunk(files)

    def _probe(self, files: Sequence[SourceFile | Failed]) -> _Probed:
        spec = self.plan.spec
        out = _Probed()
        t0 = time.perf_counter()
        for pos, f in enumerate(files):
            if isinstance(f, Failed):
                out.failures.append((pos, self.failure(f.path, "", 0, f.error)))
                continue
            try:
                info = probe(f.data, max_pixels=spec.limits.max_pixels, path=f.path)
            except InputError as exc:
                out.failures.append((pos, self.failure(f.path, f.sha256, f.size, exc)))
                continue
            out.todo.append((pos, SourceImage(path=f.path, data=f.data, sha256=f.sha256, info=info,
                                              target=spec.resize.target(info.width, info.height))))
        out.seconds = time.perf_counter() - t0
        return out

    def _chunk(self, todo: Sequence[tuple[int, SourceImage]], priors: Priors) -> _LaneResult:
        """Decode, gate and encode some of a batch's images (one lane's share), with this lane's kit.
        A device failure (also one a library raised as its own error) stops everything: DeviceError."""
        try:
            return self._lane_work(self._local.kit, todo, priors)
        except DeviceError:
            raise
        except Exception as exc:
            fault = device_fault(exc)
            if fault is not None:
                raise fault from exc
            raise

    def _lane_work(self, kit: _Kit, todo: Sequence[tuple[int, SourceImage]], priors: Priors) -> _LaneResult:
        spec = self.plan.spec
        res = _LaneResult()
        t0 = time.perf_counter()
        loaded = kit.engine.load([s for _, s in todo])
        res.timings["decode_resize"] = time.perf_counter() - t0
        for idx, error in loaded.failures:
            pos, s = todo[idx]
            res.failures.append((pos, self.failure(s.path, s.sha256, len(s.data), error)))
        decisions, res.outcomes = decide(kit.measure(), loaded, spec, priors, timings=res.timings,
                                         sources=[s for _, s in todo])
        for prepared, d in zip(loaded.prepared, decisions, strict=True):
            pos, s = todo[prepared.index]
            if d.status == "rejected":
                res.failures.append((pos, self.failure(s.path, s.sha256, len(s.data), input_error(
                    errors.GATE_REJECTED, f"the best candidate ({_tried(d)}) fails the gate: {_failing(spec, d)}",
                    s.path))))
                continue
            res.items.append(self._row(s, *(d.size or (prepared.width, prepared.height)), d))
        return res

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
            encoder="" if variant is None else (d.library or self.engine.library(variant)),
            chroma="" if variant is None else variant.chroma,
            width=info.width if keep_source else width, height=info.height if keep_source else height,
            bytes=len(blob), quality=d.quality, similarity=float(d.similarity), probes=d.probes,
            model=self.plan.model, source_path=s.path, source_sha256=s.sha256, source_bytes=len(s.data),
            source_width=info.width, source_height=info.height, source_format=info.format.lower(),
            capture_time=info.capture_time, camera_model=info.camera_model, fingerprint=self.plan.fingerprint,
            job_id=self.job_id, embedding=np.asarray(d.embedding, dtype=np.float32),
            **view_columns({} if keep_source else d.checks, None if keep_source else d.worst_crop))

    def close(self) -> None:
        self._prober.shutdown(wait=True, cancel_futures=True)  # it queues work on the lanes: first
        self._lanes.shutdown(wait=True, cancel_futures=True)
        for kit in self._kits:
            kit.engine.close()


class PendingBatch:
    """A batch queued by :meth:`Processor.submit`."""

    def __init__(self, processor: Processor, probed: Future[tuple[_Probed, list[Future[_LaneResult]]]]) -> None:
        self._processor = processor
        self._probed = probed
        self._result: BatchResult | None = None

    def result(self) -> BatchResult:
        """Wait for every chunk; the first call also feeds the batch's choices to later guesses.
        Items come in the sources' order, failures too (header, engine and gate failures merged)."""
        if self._result is None:
            probed, parts = self._probed.result()
            out = BatchResult(timings={"probe": probed.seconds})
            failures = list(probed.failures)
            for fut in parts:
                part = fut.result()
                out.items.extend(part.items)
                failures.extend(part.failures)
                for stage, secs in part.timings.items():
                    out.timings[stage] = out.timings.get(stage, 0.0) + secs
                self._processor.stats.record(part.outcomes)
            out.failures = [row for _, row in sorted(failures, key=lambda f: f[0])]
            self._result = out
        return self._result


def _source_is_smaller(s: SourceImage, width: int, height: int, candidate_bytes: int) -> bool:
    info = s.info
    return (info.format == "JPEG" and info.plain and info.orientation == 1
            and (width, height) == (info.width, info.height) and len(s.data) <= candidate_bytes)


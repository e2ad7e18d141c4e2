"""The batch job on a Ray cluster (Ray Data): the same rows and guarantees as :func:`preprocess.drivers.run.run_job`.

1. The driver plans (spec, model), lists the sources, opens the branch (the store's writer lock on
   a local store) and reads the keys already stored.
2. Ray Data: the source paths are read as bytes by stateless tasks (local files or S3, per-file
   failure rows), then a pool of stateful actors, each building its :class:`~preprocess.pipeline.process.Processor`
   (engine + ONNX session) once, dedupes against the branch's keys and does probe -> decode ->
   resize -> encode -> gate. The processed rows are materialized in Ray's object store
   (``preserve_order``: rows come out in source order, as in a local run).
3. The driver takes the small columns (keys, failures, statistics), drops a second copy of the same
   content, fills the branch's partial last chunk itself, resizes every array once and forks its
   session; write tasks each get whole 256-row chunks (disjoint regions) and the fork, write and
   return it; the driver merges the forks and makes ONE commit with the run's provenance plus the
   cluster's shape. Any failure before the commit discards everything: nothing is committed.

Actors ask for ``gpus_per_worker`` GPUs each when the cluster has GPUs (0.5 = two actors per GPU);
on a CPU-only cluster they run on CPUs instead of waiting for a GPU that never comes.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import icechunk as ic
import numpy as np
import pyarrow as pa

from preprocess.core import interrupts
from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, InputError, InternalError, PreprocessError, device_fault
from preprocess.core.progress import Progress, SilentProgress
from preprocess.core.timing import Stopwatch
from preprocess.drivers.ingest import Ingest, JobInfo, Stored, Summary
from preprocess.drivers.ray.sink import check_region, decode_failure, decode_item, encode_row, items_of
from preprocess.drivers.run import JobOptions, find_sources
from preprocess.pipeline.devices import DeviceChoice, DeviceName, EngineChoice
from preprocess.pipeline.process import BatchResult, Failed, Processor, plan
from preprocess.rows.provenance import EngineInfo, RayInfo
from preprocess.rows.recent import Recent
from preprocess.rows.schema import CHUNK_ROWS, Values, item_key
from preprocess.sources.files import SourceFile, local_roots, read_source, source_path
from preprocess.sources.location import Location
from preprocess.store import DatasetWriter, check_target, open_writer
from preprocess.store.forks import write_fork

if TYPE_CHECKING:
    import ray.data

type Batch = dict[str, Values]  # a Ray Data batch in numpy format: column name -> values
type _Out = tuple[str, str, str, str, bytes, bytes, bytes]  # a processed row: the columns of _OUT


@dataclass
class RayOptions:
    address: str = "local"  # local (start or join a one-machine Ray) | auto (the running cluster) | ADDRESS
    actors: int | None = None  # actor pool size; default: GPUs / gpus_per_worker, or CPUs - 1 on CPU
    gpus_per_worker: float = 1.0  # GPUs per actor on a GPU cluster (0.5: two actors per GPU)
    cpus_per_actor: float = 1.0  # CPUs per actor
    read_cpus: float = 0.5  # CPUs per read task
    batch_size: int | None = None  # images per actor call; default: the spec's batch.size
    write_chunks: int = 4  # 256-row chunks per write task
    max_restarts: int = 3  # an actor that dies is restarted, its batch retried, this many times


# -- workers ---------------------------------------------------------------------------------------


def read_batch(batch: Batch, *, max_bytes: int, roots: Sequence[str] | None = None,
               follow_symlinks: bool = False) -> pa.Table:
    """Read and hash a batch of sources (a Ray Data task); an unreadable one carries its error. ``roots``
    and ``follow_symlinks``: the symlink rules of a local run (:func:`~preprocess.sources.files.read_source`)."""
    paths, shas, datas, codes, messages = [], [], [], [], []
    for item in batch["path"]:
        loc = str(item)
        try:
            f = read_source(source_path(loc), max_bytes=max_bytes, roots=roots, follow_symlinks=follow_symlinks)
            paths.append(f.path)
            shas.append(f.sha256)
            datas.append(f.data)
            codes.append("")
            messages.append("")
        except InputError as exc:
            paths.append(loc)
            shas.append("")
            datas.append(b"")
            codes.append(exc.code)
            messages.append(exc.message)
    return pa.table({"path": pa.array(paths, pa.string()), "sha256": pa.array(shas, pa.string()),
                     "data": pa.array(datas, pa.binary()), "code": pa.array(codes, pa.string()),
                     "message": pa.array(messages, pa.string())})


_reader: Callable[..., pa.Table] = read_batch  # Ray's map_batches type does not take keyword-only arguments


@dataclass(frozen=True)
class ActorConfig:
    """What every processing actor is built from (sent to each: small, but for the seed's embeddings, at
    most 512 rows of the model's dimension)."""

    spec_path: str | None
    engine: EngineChoice
    device: DeviceChoice
    job_id: str
    fingerprint: str  # the driver's: an actor whose spec or model differs refuses to start
    known: frozenset[str]  # the branch's item keys when the job started (skipped without processing)
    seed: Recent = field(default_factory=Recent)  # the branch's recent choices: the first batch's guesses
    lanes: int = 1


_OUT = ("path", "sha256", "kind", "key", "item", "summary", "failure")  # the columns of a processed row


class ProcessActor:
    """A Ray actor: one Processor (engine + ONNX session) for its life; batches of read sources ->
    one output row per source: kind item | failure | skipped."""

    def __init__(self, config: ActorConfig) -> None:
        p = plan(config.spec_path, config.engine, config.device)
        if p.fingerprint != config.fingerprint:
            raise ConfigError(f"the spec or model on this worker gives fingerprint {p.fingerprint}, the driver's "
                              f"is {config.fingerprint}", code=ErrorCode.RAY_FINGERPRINT,
                              hint="run the same preprocess version, spec and models on every node")
        self.processor = Processor(p, job_id=config.job_id, lanes=config.lanes)  # lanes: the CPUs it was given
        self.processor.stats.seed_from(config.seed)  # the first batch's guesses, as in a local job
        self.known = config.known
        self.engine = json.dumps({**self.processor.describe(), "engine": p.engine, "device": p.device},
                                 sort_keys=True)

    def __call__(self, batch: Batch) -> pa.Table:
        fp = self.processor.plan.fingerprint
        files: list[SourceFile | Failed] = []
        skipped: list[tuple[str, str]] = []
        for path, sha, data, code, message in zip(batch["path"], batch["sha256"], batch["data"], batch["code"],
                                                  batch["message"], strict=True):
            if code:
                files.append(Failed(str(path), InputError(str(message), code=ErrorCode(str(code)), path=str(path))))
            elif item_key(str(sha), fp) in self.known:
                skipped.append((str(path), str(sha)))
            else:
                files.append(SourceFile(path=str(path), data=bytes(data), sha256=str(sha)))
        result = self.processor.process(files)
        rows: list[_Out] = []
        for row in result.items:
            light = replace(row, jpeg=b"", embedding=np.zeros(0, dtype=np.float32))
            rows.append((row.source_path, row.source_sha256, "item", row.key, encode_row(row), encode_row(light), b""))
        for f in result.failures:
            rows.append((f.source_path, f.source_sha256, "failure", "", b"", b"", encode_row(f)))
        for path, sha in skipped:
            rows.append((path, sha, "skipped", item_key(sha, fp), b"", b"", b""))
        return self._table(rows, json.dumps(result.timings))

    def _table(self, rows: list[_Out], timings: str) -> pa.Table:
        cols = dict(zip(_OUT, zip(*rows, strict=True), strict=True)) if rows else dict.fromkeys(_OUT, ())
        types = {"item": pa.binary(), "summary": pa.binary(), "failure": pa.binary()}
        n = len(rows)
        return pa.table({
            **{k: pa.array(list(cols[k]), types.get(k, pa.string())) for k in _OUT},
            "engine": pa.array([self.engine] * n, pa.string()),
            "timings": pa.array([timings] + [""] * (n - 1) if n else [], pa.string()),  # once per batch
        })


def _write_task(fork: ic.ForkSession, start: int, total_stop: int, *tables: pa.Table) -> ic.ForkSession:
    """A Ray task: write whole chunks of item rows into the fork, through the store's writer code."""
    rows = items_of(tables)
    check_region(start, len(rows), total_stop)
    return write_fork(fork, start, rows)


# -- the driver ------------------------------------------------------------------------------------


def connect(address: str) -> None:
    """Start or join Ray: ``local`` (this machine), ``auto`` (the running cluster) or an address."""
    import ray

    if ray.is_initialized():
        return
    if address == "local":
        ray.init(include_dashboard=False, log_to_driver=False)
    elif address == "auto" or address.startswith(("ray://", "http")) or ":" in address:
        ray.init(address=address, log_to_driver=False)
    else:
        raise ConfigError(f"--ray {address!r} is not local, auto or a cluster address", code=ErrorCode.RAY_ADDRESS,
                          hint="e.g. --ray local, --ray auto, --ray ray://head:10001")
    interrupts.reinstall()  # ray.init replaced SIGTERM's handler (sys.exit(15)): SIGTERM is an interrupt again


@dataclass(frozen=True)
class Shape:
    nodes: int
    cpus: float
    gpus: float
    actors: int
    gpus_per_actor: float
    cpus_per_actor: float
    device: DeviceName


def cluster_shape(ro: RayOptions, device: DeviceChoice) -> Shape:
    import ray

    res: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    cpus, gpus = float(res.get("CPU", 0.0)), float(res.get("GPU", 0.0))
    alive: list[dict[str, object]] = ray.nodes()  # type: ignore[no-untyped-call]
    nodes = len([n for n in alive if n.get("Alive")])
    if device == "gpu" and gpus <= 0:
        raise ConfigError("--device gpu, but the Ray cluster has no GPUs", code=ErrorCode.RAY_NO_GPU,
                          hint="use --device auto (CPU actors) or add GPU workers")
    use_gpu = gpus > 0 and device != "cpu"
    if ro.gpus_per_worker <= 0 or ro.cpus_per_actor < 0:
        raise ConfigError("--gpus-per-worker must be > 0", code=ErrorCode.RAY_RESOURCES, hint="e.g. 1, or 0.5")
    if use_gpu:
        actors = ro.actors or max(1, int(gpus / ro.gpus_per_worker))
        return Shape(nodes, cpus, gpus, actors, ro.gpus_per_worker, ro.cpus_per_actor, "gpu")
    actors = ro.actors or max(1, int((cpus - ro.read_cpus) // max(ro.cpus_per_actor, 1e-9)))
    return Shape(nodes, cpus, gpus, actors, 0.0, ro.cpus_per_actor, "cpu")


def run_ray_job(opts: JobOptions, ro: RayOptions | None = None, progress: Progress | None = None) -> Summary:
    """Run the job on Ray; ONE commit (or none on any failure). Same Summary as a local run."""
    import ray

    ro = ro or RayOptions()
    progress = progress or SilentProgress()
    since = Stopwatch()
    p = plan(opts.spec_path, opts.engine, "cpu" if opts.device == "cpu" else "auto")
    roots = [Location.of_source(s) for s in opts.sources]  # the locations, parsed once
    paths = find_sources(roots, follow_symlinks=opts.follow_symlinks)
    store = Location.of_store(opts.store)
    check_target(store, opts.branch)  # before Ray starts and before anything is created
    writer: DatasetWriter | None = None
    try:
        connect(ro.address)
        shape = cluster_shape(ro, opts.device)
        if shape.nodes > 1 and not store.remote:
            raise ConfigError(f"a local dataset path with a {shape.nodes}-node Ray cluster: write tasks on other "
                              "nodes would write to their own disks", code=ErrorCode.RAY_LOCAL_STORE, path=opts.store,
                              hint="put the dataset on object storage (--store s3://bucket/prefix)")
        writer = open_writer(store, opts.branch, create=True, wait=opts.wait)
        ingest = Ingest(writer, p, JobInfo(kind="run", roots=roots, store=store,
                                           title="preprocess run (ray)", device=shape.device), since=since)
        progress.start(len(paths))
        return _Driver(ingest, opts, ro, shape).run(paths, progress)
    except PreprocessError:
        raise
    except ray.exceptions.RayError as exc:
        fault = device_fault(exc)  # an actor's GPU failed: the same exit as a local job's (6), nothing committed
        if fault is not None:
            raise fault from exc
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
        raise InternalError(f"the Ray job failed, nothing was committed: {first}", code=ErrorCode.RAY_JOB,
                            hint="see the Ray logs (/tmp/ray/session_latest/logs); rerun: nothing is redone "
                                 "twice") from exc
    finally:
        if writer is not None:
            writer.close()
        progress.finish()


@dataclass(frozen=True)
class _Row:
    """A processed row's small columns, as the driver admits it (a :class:`~preprocess.drivers.ingest.Candidate`)."""

    path: str
    sha256: str
    kind: str  # item | failure | skipped
    summary: bytes  # an item row without its bytes and embedding
    failure: bytes
    engine: str
    timings: str

    @classmethod
    def of(cls, m: Mapping[str, object]) -> _Row:
        return cls(str(m["path"]), str(m["sha256"]), str(m["kind"]), _bytes(m["summary"]), _bytes(m["failure"]),
                   str(m["engine"]), str(m["timings"]))


def _bytes(value: object) -> bytes:
    """A binary column's value (Arrow gives bytes)."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise InternalError(f"a processed row holds {type(value).__name__}, not bytes", code=ErrorCode.RAY_ROWS)
    return bytes(value)


class _Driver:
    """One Ray job's driver: process on the cluster, admit and count the rows, write the items
    through forks, commit through the :class:`~preprocess.drivers.ingest.Ingest`."""

    def __init__(self, ingest: Ingest, opts: JobOptions, ro: RayOptions, shape: Shape) -> None:
        self.ingest = ingest
        self.opts = opts
        self.ro = ro
        self.shape = shape
        self.batch_size = ro.batch_size or ingest.plan.spec.batch.size

    def run(self, paths: Sequence[Path], progress: Progress) -> Summary:
        import ray

        timings = self.ingest.timings
        with timings.stage("process"):
            processed = self._process(paths, bars=not isinstance(progress, SilentProgress))
        with timings.stage("collect"):
            rows = [_Row.of(m) for m in processed.select_columns(
                ["path", "sha256", "kind", "summary", "failure", "engine", "timings"]).take_all()]
            if len(rows) != len(paths):
                raise InternalError(f"{len(paths)} sources gave {len(rows)} rows", code=ErrorCode.RAY_ROWS)
            keep, stored = self._admit(rows)
            progress.advance(len(paths), stored.bytes_in, stored.bytes_out)
            items = self._items(processed, keep)
        with timings.stage("store"):
            embedding = (self.ingest.plan.model, self.ingest.plan.built.manifest.output.dim)
            forks = _write(self.ingest.writer, items, len(keep), self.ro.write_chunks, embedding)
            self.ingest.writer.merge_forks(forks)
        engines = sorted({r.engine for r in rows if r.engine})  # what the actors ran (the driver may have no GPU)
        info = RayInfo(address=self.ro.address, version=ray.__version__, **asdict(self.shape),
                       batch_size=self.batch_size, write_chunks=self.ro.write_chunks, write_tasks=len(forks),
                       engines=[EngineInfo.model_validate_json(e) for e in engines])
        return self.ingest.commit(self.opts.message, engine=_Engines(info.engines), ray=info)

    def _process(self, paths: Sequence[Path], *, bars: bool) -> ray.data.Dataset:
        """The Ray Data pipeline, materialized: paths -> read tasks (bytes) -> processing actors (rows)."""
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = bars
        p, shape, ro, writer = self.ingest.plan, self.shape, self.ro, self.ingest.writer
        config = ActorConfig(spec_path=self.opts.spec_path, engine=self.opts.engine, device=shape.device,
                             job_id=self.ingest.job_id, fingerprint=p.fingerprint,
                             known=frozenset(writer.existing_keys()),
                             seed=writer.recent_choices(p.fingerprint, p.model),
                             lanes=max(1, int(shape.cpus_per_actor)))
        with warnings.catch_warnings():  # max_restarts is a "ray_remote_args" (deprecated, still the way)
            warnings.simplefilter("ignore", DeprecationWarning)
            processed: ray.data.Dataset = ray.data.from_items(
                [{"path": str(x)} for x in paths], override_num_blocks=max(1, -(-len(paths) // self.batch_size)),
            ).map_batches(
                _reader, batch_size=self.batch_size,
                fn_kwargs={"max_bytes": p.spec.limits.max_file_bytes, "follow_symlinks": self.opts.follow_symlinks,
                           "roots": list(local_roots([Location.of_source(s) for s in self.opts.sources]))},
                num_cpus=ro.read_cpus, batch_format="numpy",
            ).map_batches(
                ProcessActor, batch_size=self.batch_size, batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=shape.actors),
                num_cpus=shape.cpus_per_actor, num_gpus=shape.gpus_per_actor or None,
                fn_constructor_kwargs={"config": config},
                max_restarts=ro.max_restarts, max_task_retries=ro.max_restarts,
            ).materialize()
        return processed

    def _admit(self, rows: list[_Row]) -> tuple[set[str], Stored]:
        """Admit the rows in source order (a second copy of the same content is skipped; what the
        actors skipped is on the branch), record the failures and count everything; returns the
        paths of the items to store and what was stored."""
        admitted = self.ingest.admit(rows)
        result = BatchResult()
        for r in rows:
            if r.timings:
                for stage, secs in json.loads(r.timings).items():
                    result.timings[stage] = result.timings.get(stage, 0.0) + secs
        keep: set[str] = set()
        for r in admitted.todo:
            if r.kind == "item":
                keep.add(r.path)
                result.items.append(decode_item(r.summary))
            elif r.kind == "failure":
                result.failures.append(decode_failure(r.failure))
            else:
                raise InternalError(f"{r.path}: an actor skipped content this branch does not have",
                                    code=ErrorCode.RAY_ROWS)
        return keep, self.ingest.record(result)

    def _items(self, processed: ray.data.Dataset, keep: set[str]) -> ray.data.Dataset:
        """The item rows to store (their full rows, in source order), still in the object store."""
        with warnings.catch_warnings():  # a set of paths is no expression
            warnings.simplefilter("ignore", UserWarning)
            items: ray.data.Dataset = processed.filter(
                lambda r: r["kind"] == "item" and r["path"] in keep).select_columns(["item"]).materialize()
        count = items.count()
        if count != len(keep):
            raise InternalError(f"{len(keep)} items to store, {count} found", code=ErrorCode.RAY_ROWS)
        return items


class _Engines:
    """What the actors said about their engine (the commit's ``engine`` section: the first one)."""

    def __init__(self, engines: Sequence[EngineInfo]) -> None:
        self.engines = list(engines)

    def describe(self) -> dict[str, str]:
        if not self.engines:
            return {}
        return {k: str(v) for k, v in self.engines[0].model_dump().items()}


def _write(writer: DatasetWriter, items: ray.data.Dataset, count: int, chunks_per_task: int,
           embedding: tuple[str, int]) -> list[ic.ForkSession]:
    """Fill the partial last chunk in the driver, then whole chunks in forked write tasks
    (``embedding``: the rows' model and its dimension, for the arrays reserved for them)."""
    import ray

    if count == 0:
        return []
    head = min(count, (-writer.counts.items) % CHUNK_ROWS)
    group = CHUNK_ROWS * max(1, chunks_per_task)
    cuts = [head, *range(head + group, count, group)] if head < count else []
    pieces = items.split_at_indices(cuts) if cuts else [items]
    for row in items_of(list(ray.get(pieces[0].to_arrow_refs()))):
        writer.add_item(row)
    if head == count:
        return []
    start, fork = writer.reserve_items(count - head, model=embedding[0], dim=embedding[1])
    total_stop = start + count - head
    task = ray.remote(num_cpus=0.25, max_retries=3)(_write_task)
    refs = []
    offset = start
    for piece in pieces[1:]:
        n = piece.count()
        refs.append(task.remote(fork, offset, total_stop, *piece.to_arrow_refs()))
        offset += n
    if offset != total_stop:
        raise InternalError(f"write regions end at {offset}, expected {total_stop}", code=ErrorCode.RAY_REGION)
    return list(ray.get(refs))

"""The batch job on a Ray cluster (Ray Data): the same rows and guarantees as :func:`preprocess.job.run_job`.

1. The driver plans (spec, model), lists the sources, opens the branch (the store's writer lock on
   a local store) and reads the keys already stored.
2. Ray Data: the source paths are read as bytes by stateless tasks (local files or S3, per-file
   failure rows), then a pool of stateful actors, each building its :class:`~preprocess.process.Processor`
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
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from preprocess.distributed.sink import check_region, decode_failure, decode_item, encode_row, items_of, write_items
from preprocess.errors import ConfigError, InputError, InternalError, PreprocessError, device_fault
from preprocess.job import JobOptions, Progress, SilentProgress, Summary, Tally, commit_metadata, new_summary
from preprocess.process import BatchResult, Failed, Processor, plan
from preprocess.sources import SourceFile, list_sources, read_source, source_path
from preprocess.store import CHUNK_ROWS, DatasetWriter, item_key, open_repo
from preprocess.store.storage import is_remote

FAULTS_ENV = "PREPROCESS_FAULTS"  # tests only: a folder whose marker files inject failures in workers


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


def _fault(name: str) -> bool:
    """True once when the test marker ``name`` exists in $PREPROCESS_FAULTS (it is consumed)."""
    folder = os.environ.get(FAULTS_ENV)
    if not folder:
        return False
    marker = Path(folder) / name
    try:
        marker.unlink()
    except FileNotFoundError:
        return (Path(folder) / f"{name}.always").exists()
    return True


def read_batch(batch: dict[str, Any], *, max_bytes: int) -> Any:
    """Read and hash a batch of sources (a Ray Data task); an unreadable one carries its error."""
    paths, shas, datas, codes, messages = [], [], [], [], []
    for item in batch["path"]:
        loc = str(item)
        try:
            f = read_source(source_path(loc), max_bytes=max_bytes)
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


_reader: Any = read_batch  # Ray's map_batches type does not take keyword-only arguments


class ProcessActor:
    """A Ray actor: one Processor (engine + ONNX session) for its life; batches of read sources ->
    one output row per source: kind item | failure | skipped."""

    def __init__(self, *, spec_path: str | None, engine: str, device: str, job_id: str, fingerprint: str,
                 known: frozenset[str], seed: tuple[int, ...] = (), lanes: int = 1) -> None:
        p = plan(spec_path, engine, device)
        if p.fingerprint != fingerprint:
            raise ConfigError(f"the spec or model on this worker gives fingerprint {p.fingerprint}, the driver's "
                              f"is {fingerprint}", code="RAY_FINGERPRINT",
                              hint="run the same preprocess version, spec and models on every node")
        self.processor = Processor(p, job_id=job_id, lanes=lanes)  # as many lanes as the CPUs it was given
        self.processor.stats.seed(seed)  # the first batch's guess, as in a local job
        self.known = known
        self.engine = json.dumps({**self.processor.describe(), "engine": p.engine, "device": p.device},
                                 sort_keys=True)

    def __call__(self, batch: dict[str, Any]) -> pa.Table:
        if _fault("crash-actor"):
            os._exit(1)  # a worker killed mid-job
        fp = self.processor.plan.fingerprint
        files: list[SourceFile | Failed] = []
        skipped: list[tuple[str, str]] = []
        for path, sha, data, code, message in zip(batch["path"], batch["sha256"], batch["data"], batch["code"],
                                                  batch["message"], strict=True):
            if code:
                files.append(Failed(str(path), InputError(str(message), code=str(code), path=str(path))))
            elif item_key(str(sha), fp) in self.known:
                skipped.append((str(path), str(sha)))
            else:
                files.append(SourceFile(path=str(path), data=bytes(data), sha256=str(sha)))
        result = self.processor.process(files)
        names = ("path", "sha256", "kind", "key", "item", "summary", "failure")
        out: dict[str, list[Any]] = {k: [] for k in names}

        def add(*values: Any) -> None:
            for name, v in zip(names, values, strict=True):
                out[name].append(v)

        for row in result.items:
            light = replace(row, jpeg=b"", embedding=np.zeros(0, dtype=np.float32))
            add(row.source_path, row.source_sha256, "item", row.key, encode_row(row), encode_row(light), b"")
        for f in result.failures:
            add(f.source_path, f.source_sha256, "failure", "", b"", b"", encode_row(f))
        for path, sha in skipped:
            add(path, sha, "skipped", item_key(sha, fp), b"", b"", b"")
        n = len(out["path"])
        timings = json.dumps(result.timings)
        return pa.table({
            "path": pa.array(out["path"], pa.string()), "sha256": pa.array(out["sha256"], pa.string()),
            "kind": pa.array(out["kind"], pa.string()),
            "key": pa.array(out["key"], pa.string()), "item": pa.array(out["item"], pa.binary()),
            "summary": pa.array(out["summary"], pa.binary()), "failure": pa.array(out["failure"], pa.binary()),
            "engine": pa.array([self.engine] * n, pa.string()),
            "timings": pa.array([timings] + [""] * (n - 1) if n else [], pa.string()),
        })


def _write_task(fork: Any, start: int, total_stop: int, *tables: pa.Table) -> Any:
    rows = items_of(tables)
    check_region(start, len(rows), total_stop)
    if _fault("fail-write"):
        raise RuntimeError("injected write failure")
    return write_items(fork, start, rows)


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
        raise ConfigError(f"--ray {address!r} is not local, auto or a cluster address", code="RAY_ADDRESS",
                          hint="e.g. --ray local, --ray auto, --ray ray://head:10001")


@dataclass(frozen=True)
class Shape:
    nodes: int
    cpus: float
    gpus: float
    actors: int
    gpus_per_actor: float
    cpus_per_actor: float
    device: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def cluster_shape(ro: RayOptions, device: str) -> Shape:
    import ray

    res: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    cpus, gpus = float(res.get("CPU", 0.0)), float(res.get("GPU", 0.0))
    alive: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    nodes = len([n for n in alive if n.get("Alive")])
    if device == "gpu" and gpus <= 0:
        raise ConfigError("--device gpu, but the Ray cluster has no GPUs", code="RAY_NO_GPU",
                          hint="use --device auto (CPU actors) or add GPU workers")
    use_gpu = gpus > 0 and device != "cpu"
    if ro.gpus_per_worker <= 0 or ro.cpus_per_actor < 0:
        raise ConfigError("--gpus-per-worker must be > 0", code="RAY_RESOURCES", hint="e.g. 1, or 0.5")
    if use_gpu:
        actors = ro.actors or max(1, int(gpus / ro.gpus_per_worker))
        return Shape(nodes, cpus, gpus, actors, ro.gpus_per_worker, ro.cpus_per_actor, "gpu")
    actors = ro.actors or max(1, int((cpus - ro.read_cpus) // max(ro.cpus_per_actor, 1e-9)))
    return Shape(nodes, cpus, gpus, actors, 0.0, ro.cpus_per_actor, "cpu")


def run_ray_job(opts: JobOptions, ro: RayOptions | None = None, progress: Progress | None = None) -> Summary:
    """Run the job on Ray; ONE commit (or none on any failure). Same Summary as a local run."""
    import ray
    import ray.data

    ro = ro or RayOptions()
    progress = progress or SilentProgress()
    t_start = time.perf_counter()
    started_at = datetime.now(UTC).isoformat()
    p = plan(opts.spec_path, opts.engine, "cpu" if opts.device == "cpu" else "auto")
    paths = list_sources(opts.sources)
    writer = DatasetWriter(open_repo(opts.store, create=True), opts.branch, wait=opts.wait)
    try:
        connect(ro.address)
        shape = cluster_shape(ro, opts.device)
        if shape.nodes > 1 and not is_remote(opts.store):
            raise ConfigError(f"a local dataset path with a {shape.nodes}-node Ray cluster: write tasks on other "
                              "nodes would write to their own disks", code="RAY_LOCAL_STORE", path=opts.store,
                              hint="put the dataset on object storage (--store s3://bucket/prefix)")
        summary = new_summary(opts, p, device=shape.device, sources=len(paths))
        job_id = summary.job_id
        tally = Tally(summary)
        known = writer.existing_keys()
        known_failures = writer.existing_failures()
        batch_size = ro.batch_size or p.spec.batch.size
        progress.start(len(paths))
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = not isinstance(progress, SilentProgress)
        t0 = time.perf_counter()
        with warnings.catch_warnings():  # max_restarts is a "ray_remote_args" (deprecated, still the way)
            warnings.simplefilter("ignore", DeprecationWarning)
            seed = tuple(writer.recent_qualities(p.fingerprint))
            processed = _pipeline(paths, opts, ro, shape, batch_size, job_id, p.fingerprint,
                                  p.spec.limits.max_file_bytes, known, seed).materialize()
        tally.time("process", time.perf_counter() - t0)
        t0 = time.perf_counter()
        meta = processed.select_columns(["path", "sha256", "kind", "key", "summary", "failure", "engine",
                                         "timings"]).take_all()
        engines = sorted({m["engine"] for m in meta if m["engine"]})
        if engines:  # what the actors run (the driver may have no GPU)
            summary.engine = str(json.loads(engines[0]).get("engine", summary.engine))
        keep: set[str] = set()  # paths of the item rows to store (first copy of each content)
        keys: list[str] = []
        result = BatchResult()
        for m in meta:
            if m["timings"]:
                for stage, secs in json.loads(m["timings"]).items():
                    tally.time(stage, secs)
            if m["kind"] == "skipped" or (m["kind"] == "item" and m["key"] in known):
                summary.skipped += 1
            elif m["kind"] == "item":
                known.add(m["key"])
                keep.add(m["path"])
                keys.append(m["key"])
                result.items.append(decode_item(m["summary"]))
            elif m["kind"] == "failure":
                frow = decode_failure(m["failure"])
                result.failures.append(frow)
                fkey = (frow.source_sha256, frow.fingerprint, frow.code)
                if fkey not in known_failures:
                    known_failures.add(fkey)
                    writer.add_failure(frow)
        if len(meta) != len(paths):
            raise InternalError(f"{len(paths)} sources gave {len(meta)} rows", code="RAY_ROWS")
        bytes_in, bytes_out = tally.add(result)
        progress.advance(len(paths), bytes_in, bytes_out)
        with warnings.catch_warnings():  # a set of paths is no expression
            warnings.simplefilter("ignore", UserWarning)
            items = processed.filter(lambda r: r["kind"] == "item" and r["path"] in keep).select_columns(
                ["item"]).materialize()
        count = items.count()
        if count != len(keep):
            raise InternalError(f"{len(keep)} items to store, {count} found", code="RAY_ROWS")
        tally.time("collect", time.perf_counter() - t0)
        t0 = time.perf_counter()
        forks = _write(writer, items, count, ro.write_chunks, model=p.model, dim=p.built.manifest.output.dim)
        writer.merge_forks(forks, keys)
        tally.time("store", time.perf_counter() - t0)
        tally.close()
        t0 = time.perf_counter()
        cluster = {"ray": {"address": ro.address, "version": ray.__version__, **shape.to_dict(),
                           "batch_size": batch_size, "write_chunks": ro.write_chunks, "write_tasks": len(forks),
                           "engines": [json.loads(e) for e in engines]}}
        listed = [(str(m["path"]), str(m["sha256"])) for m in meta if m["sha256"]]
        metadata = commit_metadata("run", p, _Engines(engines), summary, roots=opts.sources, branch=opts.branch,
                                   listed=listed, parent=writer.base_snapshot, started_at=started_at,
                                   extra=cluster)
        message = opts.message or f"preprocess run (ray): {summary.stored} stored, {summary.failed} failed"
        summary.snapshot = writer.commit(message, metadata)
        tally.time("commit", time.perf_counter() - t0)
    except PreprocessError:
        raise
    except ray.exceptions.RayError as exc:
        fault = device_fault(exc)  # an actor's GPU failed: the same exit as a local job's (6), nothing committed
        if fault is not None:
            raise fault from exc
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
        raise InternalError(f"the Ray job failed, nothing was committed: {first}", code="RAY_JOB",
                            hint="see the Ray logs (/tmp/ray/session_latest/logs); rerun: nothing is redone "
                                 "twice") from exc
    finally:
        writer.close()
        progress.finish()
    tally.close()
    summary.seconds = round(time.perf_counter() - t_start, 3)
    return summary


def _pipeline(paths: Sequence[Path], opts: JobOptions, ro: RayOptions, shape: Shape, batch_size: int, job_id: str,
              fingerprint: str, max_bytes: int, known: set[str], seed: tuple[int, ...] = ()) -> Any:
    """The Ray Data pipeline: paths -> read tasks (bytes) -> processing actors (rows)."""
    import ray.data

    return ray.data.from_items(
        [{"path": str(x)} for x in paths], override_num_blocks=max(1, -(-len(paths) // batch_size)),
    ).map_batches(
        _reader, batch_size=batch_size, fn_kwargs={"max_bytes": max_bytes}, num_cpus=ro.read_cpus,
        batch_format="numpy",
    ).map_batches(
        ProcessActor, batch_size=batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=shape.actors),
        num_cpus=shape.cpus_per_actor, num_gpus=shape.gpus_per_actor or None,
        fn_constructor_kwargs={"spec_path": opts.spec_path, "engine": opts.engine, "device": shape.device,
                               "job_id": job_id, "fingerprint": fingerprint, "known": frozenset(known),
                               "seed": seed, "lanes": max(1, int(shape.cpus_per_actor))},
        max_restarts=ro.max_restarts, max_task_retries=ro.max_restarts,
    )


class _Engines:
    """What the actors said about their engine (the commit's ``engine`` section)."""

    def __init__(self, engines: Sequence[str]) -> None:
        self.engines = [json.loads(e) for e in engines]

    def describe(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.engines[0].items()} if self.engines else {}


def _write(writer: DatasetWriter, items: Any, count: int, chunks_per_task: int, *, model: str,
           dim: int) -> list[Any]:
    """Fill the partial last chunk in the driver, then whole chunks in forked write tasks."""
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
    start, fork = writer.reserve_items(count - head, model=model, dim=dim)
    total_stop = start + count - head
    task = ray.remote(num_cpus=0.25, max_retries=3)(_write_task)
    refs = []
    offset = start
    for piece in pieces[1:]:
        n = piece.count()
        refs.append(task.remote(fork, offset, total_stop, *piece.to_arrow_refs()))
        offset += n
    if offset != total_stop:
        raise InternalError(f"write regions end at {offset}, expected {total_stop}", code="RAY_REGION")
    return list(ray.get(refs))

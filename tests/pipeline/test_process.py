"""The Processor's lanes: cutting a batch into chunks run in parallel must not change a single row."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pytest

from preprocess.core.errors import ConfigError
from preprocess.pipeline.gate import Outcome
from preprocess.pipeline.process import LANE_CHUNK, Failed, PendingBatch, Processor, plan
from preprocess.sources.files import SourceFile


def _file(path: str, data: bytes) -> SourceFile:
    return SourceFile(path=path, data=data, sha256=hashlib.sha256(data).hexdigest())


def _files(photos: list[Path], bad: dict[str, tuple[bytes, str]]) -> list[SourceFile]:
    out = [_file(str(p), p.read_bytes()) for p in photos]
    out.insert(5, _file("bad/truncated.jpg", bad["truncated.jpg"][0]))  # fails in the engine
    out.insert(10, _file("bad/html.jpg", bad["html.jpg"][0]))  # fails at the header probe
    return out


def _rows(proc: Processor, files: list[SourceFile]) -> tuple[list[tuple[str, str, int, float, int, str]],
                                                             list[tuple[str, str]]]:
    """Rows of ``files`` processed as a job does: batch after batch of the processor's batch size, each
    starting from what the batches before it taught the search."""
    items, failures = [], []
    for start in range(0, len(files), proc.batch_size):
        res = proc.process(files[start:start + proc.batch_size])
        items += [(r.source_path, r.status, r.quality, round(r.similarity, 6), r.probes,
                   hashlib.sha256(r.jpeg).hexdigest()) for r in res.items]
        failures += [(f.source_path, f.code) for f in res.failures]
    return items, failures


@pytest.mark.parametrize("seed", [(), (31, 31, 35)], ids=["no-guess", "guess-q31"])
def test_lanes_do_not_change_the_rows(small_photos: list[Path], bad_images: dict[str, tuple[bytes, str]],
                                      seed: tuple[int, ...]) -> None:
    p = plan(None, "pillow", "cpu")
    files = _files(small_photos[:11], bad_images)
    assert len(files) > 2 * LANE_CHUNK  # several chunks, so the lanes really split the batch
    got = {}
    for lanes in (1, 3):
        proc = Processor(p, job_id="lanes", lanes=lanes)
        try:
            assert proc.lanes == lanes
            proc.stats.seed(seed)
            got[lanes] = _rows(proc, files)
        finally:
            proc.close()
    items, failures = got[1]
    assert got[3] == got[1]
    assert [i[0] for i in items] == [str(f) for f in small_photos[:11]]  # the sources' order
    assert failures == [("bad/truncated.jpg", bad_images["truncated.jpg"][1]),
                        ("bad/html.jpg", bad_images["html.jpg"][1])]


def test_dali_lanes_have_their_own_engines_and_do_not_change_the_rows(
        small_photos: list[Path], bad_images: dict[str, tuple[bytes, str]], tmp_path: Path) -> None:
    """The GPU design (several lanes, each with its own DALI pipelines, encoder and onnxruntime session,
    fixed-shape model calls), run with the DALI engine on the CPU."""
    pytest.importorskip("nvidia.dali")
    spec = tmp_path / "small-batches.toml"
    spec.write_text("[resize]\nmode = \"long-side\"\nsize = 320\n[batch]\nsize = 3\n")
    p = plan(str(spec), "dali", "cpu")
    files = _files(small_photos[:9], bad_images)
    got = {}
    for lanes in (1, 2):
        proc = Processor(p, job_id="lanes", lanes=lanes)
        try:
            assert (proc.lanes, proc.chunk, proc.batch_size) == (lanes, 3, 3)  # the batch never depends on lanes
            assert len({id(k.engine) for k in proc._kits}) == lanes
            assert len({id(k.extractor) for k in proc._kits}) == lanes
            proc.stats.seed((31,))
            got[lanes] = _rows(proc, files)
        finally:
            proc.close()
    assert got[2] == got[1]
    assert [f for f, _ in got[1][1]] == ["bad/truncated.jpg", "bad/html.jpg"]


def test_the_gpu_layout_batches_by_128_per_lane(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from dataclasses import replace

    from preprocess.pipeline.process import GPU_BATCH, GPU_LANES, layout

    p = replace(plan(None, "pillow", "cpu"), engine="dali", device="gpu")  # the rules only, no GPU needed
    monkeypatch.delenv("PREPROCESS_GPU_LANES", raising=False)
    assert p.spec.batch.size == 32  # the CPU default: the GPU takes its own
    assert layout(p) == layout(p, GPU_LANES)
    got = layout(p)
    assert (got.lanes, got.chunk, got.batch, got.shared) == (GPU_LANES, GPU_BATCH, GPU_LANES * GPU_BATCH, False)
    monkeypatch.setenv("PREPROCESS_GPU_LANES", "2")
    assert layout(p).lanes == 2 and layout(p, 1).lanes == 1
    monkeypatch.setenv("PREPROCESS_GPU_BATCH", "32")
    # lanes and their call size change how the work is cut, never the batches a job reads (nor its rows)
    assert (layout(p).chunk, layout(p).batch, layout(p, 1, 256).chunk) == (32, GPU_LANES * GPU_BATCH, 256)
    monkeypatch.setenv("PREPROCESS_GPU_BATCH", "many")
    with pytest.raises(ConfigError) as err:
        layout(p)
    assert err.value.code == "ENV_INVALID"
    monkeypatch.delenv("PREPROCESS_GPU_BATCH")
    spec = tmp_path / "b64.toml"
    spec.write_text("[batch]\nsize = 64\n")
    p64 = replace(plan(str(spec), "pillow", "cpu"), engine="dali", device="gpu")
    assert (layout(p64).chunk, layout(p64).batch) == (64, 64 * GPU_LANES)  # a size the spec sets is kept
    cpu = layout(plan(None, "pillow", "cpu"), 2)
    assert (cpu.lanes, cpu.chunk, cpu.batch, cpu.shared) == (2, LANE_CHUNK, 32, True)


def test_headers_are_probed_off_the_lanes(small_photos: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from preprocess.pipeline.images import probe as real

    threads: set[str] = set()

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]  # calls through; records the thread
        threads.add(threading.current_thread().name.split("_")[0])
        return real(*args, **kwargs)

    monkeypatch.setattr("preprocess.pipeline.process.probe", spy)
    proc = Processor(plan(None, "pillow", "cpu"), job_id="probe", lanes=2)
    try:
        res = proc.process([_file(str(x), x.read_bytes()) for x in small_photos[:3]])
    finally:
        proc.close()
    assert len(res.items) == 3
    assert threads == {"probe"}


def test_a_fresh_job_waits_for_its_first_guess_then_keeps_a_batch_queued(
        small_photos: list[Path], tmp_path: Path) -> None:
    from functools import partial

    from preprocess.core.progress import SilentProgress
    from preprocess.drivers.ingest import Ingest, JobInfo, read_files
    from preprocess.drivers.run import run_batches
    from preprocess.store import open_writer

    p = plan(None, "pillow", "cpu")
    proc = Processor(p, job_id="queue", lanes=2)
    store = str(tmp_path / "s.icechunk")
    ingest = Ingest(open_writer(store, create=True), p, JobInfo(kind="run", roots=["x"], store=store))
    # Spies (they call through to the real methods): what the guess was, and how many batches' results
    # had been taken (one chunk per 3-image batch, so one record() each), whenever a batch was submitted.
    seen: list[tuple[int | None, int]] = []
    taken = [0]
    submit, record = proc.submit, proc.stats.record

    def spy_submit(files: Sequence[SourceFile | Failed]) -> PendingBatch:
        seen.append((proc.stats.guess(), taken[0]))
        return submit(files)

    def spy_record(outcomes: Sequence[Outcome]) -> None:
        taken[0] += 1
        record(outcomes)

    proc.submit = spy_submit  # type: ignore[method-assign]
    proc.stats.record = spy_record  # type: ignore[method-assign]
    try:
        batches = [small_photos[i:i + 3] for i in range(0, 12, 3)]
        run_batches(proc, ingest, batches, read=partial(read_files, max_bytes=1 << 30), progress=SilentProgress())
        summary = ingest.summary()
    finally:
        proc.close()
        ingest.close()
    assert seen[0] == (None, 0)
    assert seen[1][0] is not None and seen[1][1] == 1  # waited for batch 1: batch 2 starts from its guess
    assert [t for _, t in seen[2:]] == [1, 2]  # then one batch stays queued while the older is stored
    assert (summary.sources, summary.stored) == (12, 12)


def test_lanes_follow_a_containers_cpu_quota(tmp_path: Path) -> None:
    import os

    from preprocess.core.cpus import cpu_lanes

    mine = len(os.sched_getaffinity(0))
    f = tmp_path / "cpu.max"
    assert cpu_lanes(tmp_path / "missing") == mine
    f.write_text("max 100000\n")
    assert cpu_lanes(f) == mine
    f.write_text("150000 100000\n")  # 1.5 CPUs: 2 lanes (never more than the affinity mask)
    assert cpu_lanes(f) == min(mine, 2)
    f.write_text("20000 100000\n")  # 0.2 CPUs: still one lane
    assert cpu_lanes(f) == 1
    f.write_text("garbage\n")
    assert cpu_lanes(f) == mine


class Recorded:
    """A :class:`preprocess.core.progress.Progress` that keeps every call (lanes call it from their threads)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int]] = []

    def start(self, total: int) -> None: ...
    def finish(self) -> None: ...

    def advance(self, steps: int, bytes_in: int = 0, bytes_out: int = 0) -> None:
        self.calls.append((steps, bytes_in, bytes_out))


def test_progress_moves_per_chunk_not_per_batch(small_photos: list[Path], tmp_path: Path) -> None:
    from functools import partial

    from preprocess.drivers.ingest import Ingest, JobInfo, read_files
    from preprocess.drivers.run import run_batches
    from preprocess.store import open_writer

    p = plan(None, "pillow", "cpu")
    batch = small_photos[:9]  # one batch, cut into several chunks on the lanes
    store = str(tmp_path / "s.icechunk")
    for rerun in (False, True):
        proc = Processor(p, job_id="progress", lanes=2)
        ingest = Ingest(open_writer(store, create=True), p, JobInfo(kind="run", roots=["x"], store=store))
        progress = Recorded()
        try:
            run_batches(proc, ingest, [batch], read=partial(read_files, max_bytes=1 << 30), progress=progress)
            ingest.commit("progress", engine=proc)
        finally:
            proc.close()
            ingest.close()
        steps = [s for s, _, _ in progress.calls if s]
        assert sum(steps) == 9 and proc.on_chunk is None  # the hook is the job's for its duration only
        if rerun:
            assert steps == [9]  # all already stored: done at once
        else:
            size = proc.chunk
            assert 1 < size < 9 and sorted(steps) == sorted([size] * (9 // size) + ([9 % size] if 9 % size else []))
            assert progress.calls[-1][0] == 0 and progress.calls[-1][2] > 0  # then the bytes, once stored

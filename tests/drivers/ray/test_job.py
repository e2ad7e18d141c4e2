"""The job on a local Ray cluster (2 CPUs, actor pool of 1) on real photos: into a local store and
into an S3 store (moto) with S3 sources; the rows equal a local run's; a killed worker, a failed
job and concurrent jobs keep the one-commit guarantees."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from preprocess.core.errors import ConflictError, InternalError  # noqa: E402
from preprocess.drivers.ray import job as ray_job  # noqa: E402
from preprocess.drivers.ray.job import RayOptions, _write, run_ray_job  # noqa: E402
from preprocess.drivers.ray.sink import encode_row  # noqa: E402
from preprocess.drivers.run import JobOptions, run_job  # noqa: E402
from preprocess.rows.provenance import RayInfo  # noqa: E402
from preprocess.rows.schema import ItemRow  # noqa: E402
from preprocess.store import DatasetWriter, open_dataset, open_repo  # noqa: E402
from preprocess.store.history import log  # noqa: E402
from tests.drivers.ray.faults import FAULTS_ENV, CrashingActor, failing_write_task  # noqa: E402
from tests.paths import ROOT  # noqa: E402
from tests.plain import shape  # noqa: E402
from tests.s3server import make_bucket, moto_server, s3_env  # noqa: E402
from tests.store.conftest import TINY  # noqa: E402

pytestmark = pytest.mark.slow

OPTS = RayOptions(address="local", actors=1, cpus_per_actor=0.5, read_cpus=0.25, batch_size=2)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def cluster(endpoint: str, faults: Path) -> Iterator[None]:
    # the workers import the test's fault injectors (tests/drivers/ray/faults.py) from the repository
    env = {**s3_env(endpoint), FAULTS_ENV: str(faults), "PYTHONPATH": str(ROOT)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield
    ray.shutdown()


@pytest.fixture
def s3(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(k, raising=False)
    for k, v in s3_env(endpoint).items():
        monkeypatch.setenv(k, v)
    return endpoint


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory, small_photos: list[Path], bad_images: Any) -> Path:
    """5 small real photos and one truncated JPEG (a failure row)."""
    d = tmp_path_factory.mktemp("ray_photos")
    for p in small_photos[:5]:
        shutil.copy(p, d / p.name)
    (d / "truncated.jpg").write_bytes(bad_images["truncated.jpg"][0])
    return d


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("spec") / "tiny.toml"
    path.write_text(TINY.format(name="tiny", quality=80))
    return str(path)


def rows(store: str) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]]]:
    """(source name, stored bytes) per item in order; (source name, code) per failure."""
    ds = open_dataset(store)
    t = ds.items_table(["source_path"])
    items = [(Path(str(p)).name, ds.jpeg(i)) for i, p in enumerate(t["source_path"])]
    f = ds.failures_table(["source_path", "code"])
    return items, [(Path(str(p)).name, str(c)) for p, c in zip(f["source_path"], f["code"], strict=True)]


def test_ray_rows_equal_a_local_runs_and_a_rerun_adds_nothing(cluster: None, photos: Path, spec: str,
                                                              tmp_path: Path) -> None:
    local, remote = str(tmp_path / "local.icechunk"), str(tmp_path / "ray.icechunk")
    run_job(JobOptions(sources=[str(photos)], store=local, spec_path=spec, engine="pillow"))
    s = run_ray_job(JobOptions(sources=[str(photos)], store=remote, spec_path=spec, engine="pillow"), OPTS)
    assert (s.sources, s.stored, s.failed, s.skipped) == (6, 5, 1, 0)
    assert rows(remote) == rows(local)
    assert rows(remote)[1] == [("truncated.jpg", "E_TRUNCATED")]
    again = run_ray_job(JobOptions(sources=[str(photos)], store=remote, spec_path=spec, engine="pillow"), OPTS)
    assert (again.stored, again.skipped, again.snapshot) == (0, 5, None)  # the same failure is not re-recorded
    (commit, *_) = log(open_repo(remote, create=False))
    assert commit.kind == "run" and commit.provenance is not None and commit.provenance.ray is not None
    assert (commit.provenance.ray.actors, commit.provenance.ray.device) == (1, "cpu")
    (local_commit,) = log(open_repo(local, create=False))  # the same provenance as a local run, plus its own section
    assert shape(commit.metadata) - shape(local_commit.metadata) == shape({"ray": RayInfo().model_dump(mode="json")})
    assert shape(local_commit.metadata) <= shape(commit.metadata)


def test_ray_job_on_s3_sources_into_an_s3_store(cluster: None, s3: str, photos: Path, spec: str,
                                                tmp_path: Path) -> None:
    make_bucket(s3, "cams", sorted(photos.iterdir()), prefix="raw/2026-11/")
    local = str(tmp_path / "local.icechunk")
    run_job(JobOptions(sources=[str(photos)], store=local, spec_path=spec, engine="pillow"))
    s = run_ray_job(JobOptions(sources=["s3://cams/raw/2026-11/"], store="s3://cams/datasets/front-door",
                               spec_path=spec, engine="pillow"), OPTS)
    assert (s.stored, s.failed) == (5, 1)
    assert rows("s3://cams/datasets/front-door") == rows(local)


def test_a_worker_killed_mid_job_still_gives_one_row_per_source(cluster: None, faults: Path, photos: Path,
                                                                spec: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_job, "ProcessActor", CrashingActor)
    (faults / "crash-actor").touch()  # the first batch kills its actor (os._exit); Ray restarts it and retries
    store = str(tmp_path / "ray.icechunk")
    s = run_ray_job(JobOptions(sources=[str(photos)], store=store, spec_path=spec, engine="pillow"), OPTS)
    assert not (faults / "crash-actor").exists()  # it did crash
    items, failures = rows(store)
    assert (s.stored, s.failed, len(items), len(failures)) == (5, 1, 5, 1)
    assert len({name for name, _ in items}) == 5


def test_a_failed_job_commits_nothing(cluster: None, faults: Path, photos: Path, spec: str, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_job, "_write_task", failing_write_task)
    store = str(tmp_path / "ray.icechunk")
    opts = JobOptions(sources=[str(photos)], store=store, spec_path=spec, engine="pillow")
    (faults / "fail-write.always").touch()
    try:
        with pytest.raises(InternalError, match="nothing was committed"):
            run_ray_job(opts, OPTS)
    finally:
        (faults / "fail-write.always").unlink()
    repo = open_repo(store, create=False)
    assert log(repo) == []  # not even an empty commit
    assert run_ray_job(opts, OPTS).stored == 5  # the lock was released; a rerun completes


def test_concurrent_ray_jobs_into_one_branch_never_lose_a_commit(cluster: None, s3: str, photos: Path, spec: str,
                                                                 tmp_path: Path) -> None:
    halves = [tmp_path / "a", tmp_path / "b"]
    for n, d in enumerate(halves):
        d.mkdir()
        for p in sorted(photos.iterdir())[n * 3:(n + 1) * 3]:
            shutil.copy(p, d / p.name)
    make_bucket(s3, "race")
    store = "s3://race/ds"
    open_repo(store, create=True)
    outcome: dict[int, Any] = {}

    def job(n: int) -> None:
        try:
            outcome[n] = run_ray_job(JobOptions(sources=[str(halves[n])], store=store, spec_path=spec,
                                                engine="pillow"), OPTS)
        except ConflictError as exc:
            outcome[n] = exc

    threads = [threading.Thread(target=job, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    landed = [n for n, o in outcome.items() if not isinstance(o, Exception)]
    assert landed, outcome
    for n, o in outcome.items():
        if isinstance(o, ConflictError):
            assert o.code == "COMMIT_CONFLICT"
            run_ray_job(JobOptions(sources=[str(halves[n])], store=store, spec_path=spec, engine="pillow"), OPTS)
    items, failures = rows(store)
    assert sorted(name for name, _ in items) == sorted(p.name for p in photos.iterdir() if p.name != "truncated.jpg")
    assert failures == [("truncated.jpg", "E_TRUNCATED")]
    assert len(log(open_repo(store, create=False))) == 2  # one commit per job, none lost


def test_forked_writes_fill_the_partial_chunk_then_whole_chunks(cluster: None, tmp_path: Path) -> None:
    """700 rows over a branch of 100: the driver fills rows 100-255, three write tasks (one chunk
    each) write 256-511, 512-767 (partial tail 512-699) into forks; one commit holds them in order."""
    store = str(tmp_path / "forks.icechunk")

    def row(i: int) -> ItemRow:
        return ItemRow(jpeg=f"jpeg{i}".encode(), format="jpeg", encoder="jpegli", chroma="420", status="ok",
                       width=1, height=1, bytes=5, quality=80,
                       similarity=1.0, probes=1, model="m", source_path=f"/s/{i}.jpg", source_sha256=f"{i:064x}",
                       source_bytes=9, source_width=1, source_height=1, source_format="jpeg", capture_time="",
                       camera_model="", fingerprint="fp", job_id="j", embedding=np.full(4, i, dtype=np.float32))

    with DatasetWriter(open_repo(store, create=True), "main") as w:
        for i in range(100):
            w.add_item(row(i))
        w.commit("first 100")
    with DatasetWriter(open_repo(store, create=False), "main") as w:
        assert all(w.claim(row(i).key) for i in range(100, 700))  # as the driver admits them first
        items = ray.data.from_items([{"item": encode_row(row(i))} for i in range(100, 700)],
                                    override_num_blocks=7).materialize()
        forks = _write(w, items, 600, 1, ("m", 4))
        assert len(forks) == 2  # rows 256-511 and 512-699; 100-255 by the driver
        w.merge_forks(forks)
        w.commit("600 more")
    ds = open_dataset(store)
    assert len(ds) == 700
    assert [ds.jpeg(i) for i in range(0, 700, 37)] == [f"jpeg{i}".encode() for i in range(0, 700, 37)]
    emb = ds.embedding("m")
    assert emb.shape == (700, 4) and np.array_equal(emb[:, 0], np.arange(700, dtype=np.float32))

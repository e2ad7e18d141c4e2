"""The versioned dataset on real icechunk repositories (tmp_path; no mocks)."""

from __future__ import annotations

import dataclasses
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import icechunk as ic
import numpy as np
import pytest
import zarr

from preprocess.core.errors import ConfigError, ConflictError, InternalError
from preprocess.rows.schema import CHUNK_ROWS, FAILURE_COLUMNS, FORMAT_ATTR, ITEM_COLUMNS, FailureRow, ItemRow
from preprocess.store import DatasetWriter, dataset_at, open_dataset, open_repo, open_storage

MODEL = "mobilenetv2-1280"
DIM = 16


def make_item(rng: np.random.Generator, i: int, *, model: str = MODEL, dim: int = DIM, job: str = "job") -> ItemRow:
    blob = rng.bytes(int(rng.integers(600, 1200)))
    return ItemRow(
        jpeg=blob, format="jpeg", encoder="jpegli", chroma="420", status=("ok", "flagged", "source")[i % 3],
        width=int(rng.integers(16, 4000)),
        height=int(rng.integers(16, 4000)), bytes=len(blob), quality=int(rng.integers(1, 101)),
        similarity=float(rng.random()), probes=int(rng.integers(1, 8)), model=model,
        source_path=f"/photos/img_{i:05d}_é.jpg", source_sha256=rng.bytes(32).hex(),
        source_bytes=int(rng.integers(1, 2**40)), source_width=int(rng.integers(16, 9000)),
        source_height=int(rng.integers(16, 9000)), source_format=("jpeg", "png", "tiff")[i % 3],
        capture_time=f"2024-01-{1 + i % 28:02d}T10:00:{i % 60:02d}", camera_model=f"Cam {i % 7}",
        fingerprint=f"fp{i % 2}", job_id=job, embedding=rng.standard_normal(dim).astype(np.float32),
        similarity_whole=float(rng.random()), similarity_crops=float(rng.random()),
        similarity_tiles=float(rng.random()), crop_box=f"0,0,{8 + i},{9 + i}",
        checks=f'{{"{model}": {{"whole": 0.99{i % 10}}}}}')


def make_failure(rng: np.random.Generator, i: int, job: str = "job") -> FailureRow:
    return FailureRow(source_path=f"/photos/bad_{i}.jpg", source_sha256=rng.bytes(32).hex(),
                      source_bytes=int(rng.integers(0, 10**6)), fingerprint="fp0", code="E_TRUNCATED",
                      message=f"file ends early ({i})", job_id=job)


def run_job(repo: ic.Repository, rows: Sequence[ItemRow], failures: Sequence[FailureRow] = (),
            branch: str = "main", **meta: Any) -> str | None:
    w = DatasetWriter(repo, branch)
    for r in rows:
        w.add_item(r)
    for f in failures:
        w.add_failure(f)
    return w.commit(f"{len(rows)} rows", {"job": meta})


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def repo_path(tmp_path: Path) -> Path:
    return tmp_path / "ds"


@pytest.fixture
def repo(repo_path: Path) -> ic.Repository:
    return open_repo(str(repo_path), create=True)


def assert_same_item(got: Mapping[str, object], row: ItemRow) -> None:
    for col in ITEM_COLUMNS:
        want = getattr(row, col.name)
        if col.dtype == "float32":
            assert got[col.name] == pytest.approx(np.float32(want)), col.name
        else:
            assert got[col.name] == want, col.name
        assert type(got[col.name]) is type(want), col.name
    np.testing.assert_array_equal(got["embedding"], row.embedding)


# -- locations and repositories -------------------------------------------------------------------


def test_create_then_open(repo_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        open_repo(str(repo_path), create=False)
    assert e.value.code == "STORE_MISSING"
    open_repo(str(repo_path), create=True)
    assert repo_path.is_dir()
    open_repo(str(repo_path), create=False)  # now it exists
    open_repo(f"file://{repo_path}", create=False)


def test_create_needs_parent(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        open_repo(str(tmp_path / "missing" / "ds"), create=True)
    assert e.value.code == "STORE_PATH"
    assert e.value.hint


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_create_needs_writable_parent(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    with pytest.raises(ConfigError) as e:
        open_repo(str(ro / "ds"), create=True)
    assert e.value.code == "STORE_PATH"


def test_empty_dir_is_created_into(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    open_repo(str(tmp_path / "empty"), create=True)
    open_repo(str(tmp_path / "empty"), create=False)


@pytest.mark.parametrize("create", [True, False])
def test_foreign_dir_and_file(tmp_path: Path, create: bool) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    (tmp_path / "file.txt").write_text("x")
    for p in ("photos", "file.txt"):
        with pytest.raises(ConfigError) as e:  # a usage error (exit 2): the wrong path was given
            open_repo(str(tmp_path / p), create=create)
        assert e.value.code == "STORE_FOREIGN" and e.value.exit_code == 2
        assert "not a dataset" in e.value.message
        assert ("new or empty directory" in e.value.hint) == create, e.value.hint
    assert os.listdir(tmp_path / "photos") == ["a.jpg"]  # untouched


@pytest.mark.parametrize("url", ["gs://b/ds", "https://host/ds", "s3://bucket-root-only"])
def test_other_object_stores_are_not_supported(url: str) -> None:
    with pytest.raises(ConfigError) as e:
        open_storage(url)
    assert e.value.code == "STORE_URL"  # s3://bucket/prefix is (tests/store/test_s3.py)


def test_icechunk_repo_not_made_by_preprocess(repo_path: Path) -> None:
    repo = ic.Repository.create(open_storage(str(repo_path)))
    s = repo.writable_session("main")
    zarr.group(store=s.store).create_array("other", shape=(3,), dtype="int8")
    s.commit("someone else's data")
    repo = open_repo(str(repo_path), create=False)
    with pytest.raises(ConfigError) as e:
        DatasetWriter(repo, "main")
    assert e.value.code == "STORE_FORMAT"
    with pytest.raises(ConfigError) as e:
        open_dataset(str(repo_path))
    assert e.value.code == "STORE_FORMAT"


def test_empty_icechunk_repo_is_fine(repo_path: Path, rng: np.random.Generator) -> None:
    repo = ic.Repository.create(open_storage(str(repo_path)))
    assert len(open_dataset(str(repo_path))) == 0
    assert run_job(repo, [make_item(rng, 0)]) is not None
    ds = open_dataset(str(repo_path))
    assert len(ds) == 1
    root = zarr.open_group(store=repo.readonly_session("main").store, mode="r")
    assert root.attrs[FORMAT_ATTR] == 1


def test_missing_branch(repo: ic.Repository) -> None:
    with pytest.raises(ConfigError) as e:
        DatasetWriter(repo, "experiment")
    assert e.value.code == "BRANCH_MISSING"
    assert e.value.hint


# -- writing and reading ----------------------------------------------------------------------------


def test_round_trip_exact(repo: ic.Repository, repo_path: Path, rng: np.random.Generator) -> None:
    rows = [make_item(rng, i) for i in range(10)]
    rows.append(make_item(rng, 10, model="dinov2-s14", dim=8))
    fails = [make_failure(rng, i) for i in range(3)]
    snap = run_job(repo, rows, fails)
    assert snap is not None
    ds = open_dataset(str(repo_path))
    assert len(ds) == 11
    assert ds.num_failures == 3
    assert ds.models == {MODEL: DIM, "dinov2-s14": 8}
    for i, row in enumerate(rows):
        assert_same_item(ds.item(i), row)
    assert_same_item(ds.item(-1), rows[-1])
    table = ds.items_table()
    assert "jpeg" not in table
    assert len(table) == len(ITEM_COLUMNS) - 1
    assert table["source_sha256"].tolist() == [r.source_sha256 for r in rows]
    assert table["quality"].dtype == np.int16
    assert table["bytes"].dtype == np.int64
    assert ds.items_table(["jpeg"])["jpeg"].tolist() == [r.jpeg for r in rows]
    emb = ds.embedding(MODEL)
    assert emb.shape == (11, DIM)
    assert emb.dtype == np.float32
    np.testing.assert_array_equal(emb[:10], np.stack([r.embedding for r in rows[:10]]))
    assert np.isnan(emb[10]).all()
    assert np.isnan(ds.embedding("dinov2-s14")[:10]).all()
    failures = ds.failures_table()
    for col in FAILURE_COLUMNS:
        assert failures[col.name].tolist() == [getattr(f, col.name) for f in fails]
    with pytest.raises(IndexError):
        ds.item(11)
    with pytest.raises(ConfigError):
        ds.embedding("nope")
    # the same snapshot by id and by tag
    repo.create_tag("v1", snap)
    assert len(dataset_at(repo, snap)) == 11
    assert open_dataset(str(repo_path), ref="v1").snapshot_id == snap
    with pytest.raises(ConfigError) as e:
        open_dataset(str(repo_path), ref="nope")
    assert e.value.code == "REF_MISSING"


def test_plain_zarr_reads_the_same(repo: ic.Repository, repo_path: Path, rng: np.random.Generator) -> None:
    rows = [make_item(rng, i) for i in range(300)]
    run_job(repo, rows)
    ds = open_dataset(str(repo_path))
    ours = ds.items_table([c.name for c in ITEM_COLUMNS])
    plain_repo = ic.Repository.open(ic.local_filesystem_storage(str(repo_path)))
    root = zarr.open_group(store=plain_repo.readonly_session(branch="main").store, mode="r")
    assert root.attrs["preprocess_format"] == 1
    for col in ITEM_COLUMNS:
        arr = root[f"items/{col.name}"]
        assert isinstance(arr, zarr.Array)
        assert (arr.shards or arr.chunks) == (CHUNK_ROWS,)  # jpeg: shards of 1-row chunks
        np.testing.assert_array_equal(np.asarray(arr[:]), ours[col.name])
    emb = root[f"items/embedding/{MODEL}"]
    assert isinstance(emb, zarr.Array)
    assert emb.chunks == (CHUNK_ROWS, DIM)
    np.testing.assert_array_equal(np.asarray(emb[:]), ds.embedding(MODEL))
    jpeg = root["items/jpeg"]
    assert isinstance(jpeg, zarr.Array)
    assert np.asarray(jpeg[299:300])[0] == rows[299].jpeg


def test_existing_keys_after_commit(repo: ic.Repository, rng: np.random.Generator) -> None:
    rows = [make_item(rng, i) for i in range(5)]
    fails = [make_failure(rng, i) for i in range(2)]
    w = DatasetWriter(repo, "main")
    assert w.existing_keys() == set()
    assert w.existing_failures() == set()
    w.add_item(rows[0])
    assert w.existing_keys() == {rows[0].key}  # includes rows added by this writer
    for r in rows[1:]:
        w.add_item(r)
    for f in fails:
        w.add_failure(f)
    assert w.commit("x", {}) is not None
    assert w.counts.items == 5
    assert w.counts.items_added == 0
    w2 = DatasetWriter(repo, "main")
    assert w2.existing_keys() == {f"{r.source_sha256}:{r.fingerprint}" for r in rows}
    assert w2.existing_failures() == {(f.source_sha256, f.fingerprint, f.code) for f in fails}
    assert w2.counts.items == 5
    assert w2.counts.failures == 2


def test_commit_nothing(repo: ic.Repository) -> None:
    w = DatasetWriter(repo, "main")
    before = repo.lookup_branch("main")
    assert w.commit("nothing", {}) is None
    assert repo.lookup_branch("main") == before
    snap = w.commit("layout only", {"why": "test"}, allow_empty=True)
    assert snap is not None
    assert repo.lookup_branch("main") == snap


def test_metadata_round_trips(repo: ic.Repository, rng: np.random.Generator) -> None:
    meta = {"preprocess": {"kind": "run", "job_id": "abc"}, "counts": {"stored": 3}, "spec": {"q": [30, 95]},
            "note": "ünïcode", "none": None}
    w = DatasetWriter(repo, "main")
    for i in range(3):
        w.add_item(make_item(rng, i))
    snap = w.commit("first job", meta)
    info = next(iter(repo.ancestry(branch="main")))
    assert info.id == snap
    assert info.message == "first job"
    assert info.metadata == {**meta, "rows_held": {"items": 3, "failures": 0}}  # the writer adds what the version holds


def test_dropped_writer_leaves_branch(repo: ic.Repository, repo_path: Path, rng: np.random.Generator) -> None:
    run_job(repo, [make_item(rng, i) for i in range(20)])
    before = repo.lookup_branch("main")
    w = DatasetWriter(repo, "main")
    for i in range(600):  # crosses chunk boundaries: whole chunks were written into the session
        w.add_item(make_item(rng, 100 + i))
    del w
    with DatasetWriter(repo, "main") as w2:  # and a with-block left without commit discards
        w2.add_item(make_item(rng, 5000))
    assert repo.lookup_branch("main") == before
    reopened = open_repo(str(repo_path), create=False)
    assert len(dataset_at(reopened, "main")) == 20
    assert DatasetWriter(reopened, "main").counts.items == 20


def test_embedding_dimension_mismatch(repo: ic.Repository, rng: np.random.Generator) -> None:
    run_job(repo, [make_item(rng, 0)])
    w = DatasetWriter(repo, "main")
    with pytest.raises(ConfigError) as e:
        w.add_item(make_item(rng, 1, dim=DIM + 1))
    assert e.value.code == "EMBEDDING_DIM"
    w.add_item(make_item(rng, 2))  # the writer is still usable
    assert w.counts.items_added == 1


def test_writer_is_not_picklable(repo: ic.Repository) -> None:
    with pytest.raises(TypeError, match="must not be pickled"):
        pickle.dumps(DatasetWriter(repo, "main"))


def test_commit_conflict(repo: ic.Repository, repo_path: Path, rng: np.random.Generator) -> None:
    run_job(repo, [make_item(rng, i) for i in range(3)])
    a = DatasetWriter(repo, "main")
    b = DatasetWriter(repo, "main")
    for i in range(4):
        a.add_item(make_item(rng, 10 + i, job="a"))
        b.add_item(make_item(rng, 20 + i, job="b"))
    assert a.commit("a", {}) is not None
    with pytest.raises(ConflictError) as e:
        b.commit("b", {})
    assert e.value.code == "COMMIT_CONFLICT"
    ds = open_dataset(str(repo_path))
    assert len(ds) == 7
    assert ds.items_table(["job_id"])["job_id"].tolist() == ["job"] * 3 + ["a"] * 4
    with pytest.raises(InternalError):  # a writer whose commit failed is closed
        b.add_item(make_item(rng, 30))


# -- chunk alignment ----------------------------------------------------------------------------


def _chunk_files(path: Path) -> int:
    d = path / "chunks"
    return len(os.listdir(d)) if d.exists() else 0


def test_chunk_aligned_appends(tmp_path: Path, rng: np.random.Generator) -> None:
    """Jobs of 300, 100, 300 rows: each chunk is written once per job, never more.

    With inlining off, icechunk writes one object per chunk write (even a rewrite of the same
    chunk in one session), so the objects under chunks/ count the chunk writes.
    Aligned: job 1 writes chunks 0, 1 (tail 44 rows); job 2 rewrites chunk 1 (144 rows);
    job 3 fills chunk 1 to 256 and writes chunk 2 (188 rows): 2 + 1 + 2 writes per array.
    """
    path = tmp_path / "ds"
    config = ic.RepositoryConfig.default()
    config.inline_chunk_threshold_bytes = 0  # every chunk is its own object
    repo = ic.Repository.create(open_storage(str(path)), config=config)
    arrays = len(ITEM_COLUMNS) + 1  # + the embedding array (all rows use one model)
    counts = []
    total = 0
    for job, n in enumerate((300, 100, 300)):
        rows = [make_item(rng, total + i, job=f"job{job}") for i in range(n)]
        total += n
        before = _chunk_files(path)
        snap = run_job(repo, rows)
        counts.append(_chunk_files(path) - before)
        assert snap is not None
        changed = repo.diff(from_snapshot_id=next(iter(repo.ancestry(snapshot_id=snap))).parent_id,
                            to_snapshot_id=snap).updated_chunks
        touched = {coords[0] for coords in changed["/items/jpeg"]}
        assert touched == [{0, 1}, {1}, {1, 2}][job]
    assert counts == [2 * arrays, 1 * arrays, 2 * arrays]
    ds = dataset_at(repo, "main")
    assert len(ds) == 700
    assert ds.items_table(["job_id"])["job_id"].tolist() == ["job0"] * 300 + ["job1"] * 100 + ["job2"] * 300


def test_unaligned_writes_would_show(tmp_path: Path, rng: np.random.Generator) -> None:
    """The counting method above does see rewrites (so the aligned test can fail)."""
    path = tmp_path / "ds"
    config = ic.RepositoryConfig.default()
    config.inline_chunk_threshold_bytes = 0
    repo = ic.Repository.create(open_storage(str(path)), config=config)
    s = repo.writable_session("main")
    arr = zarr.group(store=s.store).create_array("x", shape=(0,), chunks=(CHUNK_ROWS,), dtype="int64")
    for start in range(0, 300, 100):  # 3 appends of 100: chunk 0 is written twice, chunk 1 twice
        arr.resize((start + 100,))
        arr[start:start + 100] = rng.integers(1, 2**60, 100)
    s.commit("unaligned")
    assert _chunk_files(path) == 4


def test_failures_chunked_across_jobs(repo: ic.Repository, repo_path: Path, rng: np.random.Generator) -> None:
    fails = [make_failure(rng, i) for i in range(CHUNK_ROWS + 10)]
    run_job(repo, [], fails[:200])
    run_job(repo, [], fails[200:])
    ds = open_dataset(str(repo_path))
    assert len(ds) == 0
    assert ds.num_failures == len(fails)
    assert ds.failures_table(["message"])["message"].tolist() == [f.message for f in fails]


def test_models_across_jobs_read_nan(repo: ic.Repository, repo_path: Path, rng: np.random.Generator) -> None:
    """Rows of model B after a partial chunk of model A: A's tail rows read NaN, never stale data."""
    a_rows = [make_item(rng, i) for i in range(300)]
    b_rows = [make_item(rng, 300 + i, model="dinov2-s14", dim=8) for i in range(100)]
    run_job(repo, a_rows)
    run_job(repo, b_rows)
    ds = open_dataset(str(repo_path))
    a, b = ds.embedding(MODEL), ds.embedding("dinov2-s14")
    assert a.shape == (400, DIM)
    assert b.shape == (400, 8)
    np.testing.assert_array_equal(a[:300], np.stack([r.embedding for r in a_rows]))
    assert np.isnan(a[300:]).all()
    assert np.isnan(b[:300]).all()
    np.testing.assert_array_equal(b[300:], np.stack([r.embedding for r in b_rows]))
    assert_same_item(ds.item(350), b_rows[50])


def test_checkpoint_commits_continue(repo: ic.Repository, repo_path: Path, rng: np.random.Generator) -> None:
    rows = [make_item(rng, i) for i in range(CHUNK_ROWS + 50)]
    w = DatasetWriter(repo, "main")
    for r in rows[:CHUNK_ROWS + 10]:
        w.add_item(r)
    first = w.commit("checkpoint", {"n": 1})
    assert w.base_snapshot == first
    for r in rows[CHUNK_ROWS + 10:]:
        w.add_item(r)
    second = w.commit("end", {"n": 2})
    assert second is not None
    assert second != first
    assert [s.id for s in repo.ancestry(branch="main")][:2] == [second, first]
    ds = open_dataset(str(repo_path))
    assert ds.items_table(["source_sha256"])["source_sha256"].tolist() == [r.source_sha256 for r in rows]


def test_existing_empty_root_group(repo_path: Path, rng: np.random.Generator) -> None:
    repo = ic.Repository.create(open_storage(str(repo_path)))
    s = repo.writable_session("main")
    zarr.group(store=s.store)
    s.commit("an empty root group")
    run_job(repo, [make_item(rng, 0)])
    root = zarr.open_group(store=repo.readonly_session("main").store, mode="r")
    assert root.attrs[FORMAT_ATTR] == 1
    assert len(open_dataset(str(repo_path))) == 1


def test_bad_rows_are_caller_bugs(repo: ic.Repository, rng: np.random.Generator) -> None:
    w = DatasetWriter(repo, "main")
    good = make_item(rng, 0)
    bad_rows: list[ItemRow] = [
        dataclasses.replace(good, status="weird"),
        dataclasses.replace(good, quality=40000),
        dataclasses.replace(good, width="12"),  # type: ignore[arg-type]
        dataclasses.replace(good, embedding=np.zeros((2, 2), dtype=np.float32)),  # not 1-D
        dataclasses.replace(good, jpeg="not bytes"),  # type: ignore[arg-type]
    ]
    for bad in bad_rows:
        with pytest.raises(InternalError):
            w.add_item(bad)
    with pytest.raises(ConfigError) as e:
        w.add_item(dataclasses.replace(good, model="a/b"))
    assert e.value.code == "STORE_MODEL_NAME"
    assert w.counts.items_added == 0


# -- dedupe keys and forked writes ---------------------------------------------------------------------


def test_claims_and_failure_keys(repo: ic.Repository, rng: np.random.Generator) -> None:
    w = DatasetWriter(repo, "main")
    row, fail = make_item(rng, 0), make_failure(rng, 0)
    assert w.claim(row.key) and not w.claim(row.key)  # the first claim wins
    w.add_item(row)
    assert not w.has_failure(fail.key)
    w.add_failure(fail)
    assert w.has_failure(fail.key)
    w.commit("one")
    w.close()
    w2 = DatasetWriter(repo, "main")
    assert not w2.claim(row.key) and w2.has_failure(fail.key)  # what the branch has
    other = make_item(rng, 1)
    assert w2.claim(other.key)
    w2.close()  # never committed: the claim ends with the writer
    with DatasetWriter(repo, "main") as w3:
        assert w3.claim(other.key)


def test_forked_writes_get_the_writers_checks_and_embedding_fill(repo: ic.Repository,
                                                                 rng: np.random.Generator) -> None:
    from preprocess.store.forks import write_fork

    w = DatasetWriter(repo, "main")
    for i in range(CHUNK_ROWS):
        w.add_item(make_item(rng, i, model="a", dim=4))
    w.commit("a chunk of model a")
    start, fork = w.reserve_items(CHUNK_ROWS, model="b", dim=8)
    rows = [make_item(rng, i, model="b", dim=8) for i in range(CHUNK_ROWS)]
    bad: list[tuple[ItemRow, type[Exception], str]] = [
        (dataclasses.replace(rows[0], status="rejected"), InternalError, "STORE_ROW"),
        (dataclasses.replace(rows[0], quality=1 << 20), InternalError, "STORE_ROW"),
        (dataclasses.replace(rows[0], embedding=np.zeros(3, dtype=np.float32)), ConfigError, "EMBEDDING_DIM"),
        (dataclasses.replace(rows[0], model="c"), InternalError, "STORE_REGION"),  # no array reserved for it
    ]
    for row, error, code in bad:
        with pytest.raises(error) as e:
            write_fork(fork, start, [row])
        assert e.value.code == code  # type: ignore[attr-defined]
    with pytest.raises(InternalError) as e:
        write_fork(fork, start + CHUNK_ROWS, rows[:1])  # past the reserved rows
    assert e.value.code == "STORE_REGION"
    w.merge_forks([write_fork(fork, start, rows)])
    w.commit("a chunk of model b, written in a fork")
    w.close()
    ds = dataset_at(repo, "main")
    a, b = ds.embedding("a"), ds.embedding("b")
    assert a.shape == (2 * CHUNK_ROWS, 4) and b.shape == (2 * CHUNK_ROWS, 8)
    assert np.isnan(a[CHUNK_ROWS:]).all() and np.isnan(b[:CHUNK_ROWS]).all()
    np.testing.assert_array_equal(b[CHUNK_ROWS:], np.stack([r.embedding for r in rows]))
    assert_same_item(ds.item(CHUNK_ROWS + 7), rows[7])

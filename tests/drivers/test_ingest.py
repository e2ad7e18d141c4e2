"""The ingest rules, in one place for run, watch and Ray: dedupe, failures once, one commit per job or
window, the summary and the provenance. Real photos, the real model and engine, real icechunk stores."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from preprocess.drivers.ingest import Ingest, JobInfo, Summary, read_files
from preprocess.pipeline.process import Failed, Plan, Processor, plan
from preprocess.rows.provenance import Provenance, RowsHeld, WatchInfo
from preprocess.sources.files import SourceFile, list_digest
from preprocess.store import DatasetWriter, open_dataset, open_repo, open_writer
from preprocess.store.history import log
from tests.plain import STORED, shape
from tests.store.conftest import TINY


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Plan:
    spec = tmp_path_factory.mktemp("spec") / "tiny.toml"
    spec.write_text(TINY.format(name="tiny", quality=80))
    return plan(str(spec), "pillow", "cpu")


@pytest.fixture(scope="module")
def processor(tiny: Plan) -> Iterator[Processor]:
    proc = Processor(tiny, job_id="ingest-tests", lanes=1)
    yield proc
    proc.close()


@pytest.fixture
def folder(tmp_path: Path, small_photos: list[Path], bad_images: dict[str, tuple[bytes, str]]) -> Path:
    """Two photos, a copy of the first under another name, and a truncated JPEG."""
    d = tmp_path / "in"
    d.mkdir()
    a, b = small_photos[:2]
    shutil.copy(a, d / "a.jpg")
    shutil.copy(b, d / "b.jpg")
    shutil.copy(a, d / "copy-of-a.jpg")
    (d / "truncated.jpg").write_bytes(bad_images["truncated.jpg"][0])
    return d


def files_of(folder: Path, *names: str) -> list[SourceFile | Failed]:
    return read_files([folder / n for n in names], max_bytes=1 << 30)


def ingest_on(store: Path, p: Plan, kind: str = "run") -> Ingest:
    return Ingest(open_writer(str(store), create=True), p, JobInfo(kind=kind, roots=[str(store.parent / "in")],
                                                                  store=str(store)))


def test_dedupe_skips_second_copies_and_what_the_branch_has(tmp_path: Path, folder: Path, tiny: Plan,
                                                           processor: Processor) -> None:
    store = tmp_path / "s.icechunk"
    ingest = ingest_on(store, tiny)
    try:
        files = files_of(folder, "a.jpg", "b.jpg", "copy-of-a.jpg")
        first = ingest.admit(files[:2])
        second = ingest.admit(files[2:])  # a later batch of the same job
        assert [f.path for f in first.todo] == [str(folder / "a.jpg"), str(folder / "b.jpg")]
        assert second.todo == [] and [f.path for f in second.skipped] == [str(folder / "copy-of-a.jpg")]
        ingest.store(processor.process(first.todo))
        summary = ingest.commit(engine=processor)
    finally:
        ingest.close()
    assert (summary.sources, summary.stored, summary.skipped) == (3, 2, 1)
    again = ingest_on(store, tiny)  # the next job: the branch has both contents
    try:
        later = again.admit(files_of(folder, "copy-of-a.jpg", "b.jpg"))
        assert later.todo == [] and len(later.skipped) == 2
        assert again.commit(engine=processor).snapshot is None  # nothing new: no commit
    finally:
        again.close()
    assert len(log(open_repo(str(store), create=False))) == 1


def test_an_unreadable_source_is_never_deduped_and_every_read_source_is_listed(tmp_path: Path, folder: Path,
                                                                              tiny: Plan) -> None:
    ingest = ingest_on(tmp_path / "s.icechunk", tiny)
    try:
        missing = files_of(folder, "gone.jpg", "gone.jpg", "a.jpg", "copy-of-a.jpg")
        admitted = ingest.admit(missing)
        assert [type(f) for f in admitted.todo] == [Failed, Failed, SourceFile]
        p = ingest.provenance({"engine": "pillow", "device": "cpu"})
        sha = hashlib.sha256((folder / "a.jpg").read_bytes()).hexdigest()
        listed = [(str(folder / "a.jpg"), sha), (str(folder / "copy-of-a.jpg"), sha)]  # skipped ones too
        assert (p.inputs.count, p.inputs.list_sha256) == (2, list_digest(listed))
    finally:
        ingest.close()


def test_the_same_failure_is_recorded_once(tmp_path: Path, folder: Path, tiny: Plan, processor: Processor) -> None:
    store = tmp_path / "s.icechunk"
    for job in range(2):
        ingest = ingest_on(store, tiny)
        try:
            result = processor.process(ingest.admit(files_of(folder, "truncated.jpg")).todo)
            assert [f.code for f in result.failures] == ["E_TRUNCATED"]
            ingest.store(result)
            ingest.store(result)  # the same failure twice in one job
            assert ingest.pending_rows == (1 if job == 0 else 0)  # and again in the next job: never re-recorded
            summary = ingest.commit(engine=processor)
        finally:
            ingest.close()
        # the counts are the rows (issue 25 item 10: they said 2 failed, and again in the job that committed nothing)
        assert (summary.failed, summary.failed_known) == ((1, 1) if job == 0 else (0, 2))
        assert [f["code"] for f in summary.failures] == ["E_TRUNCATED"] * (1 - job)
        assert (summary.snapshot is None) == (job == 1)
    assert open_dataset(str(store)).num_failures == 1


def test_one_commit_per_window_with_the_same_job_id(tmp_path: Path, folder: Path, tiny: Plan,
                                                   processor: Processor) -> None:
    store = tmp_path / "s.icechunk"
    ingest = ingest_on(store, tiny, kind="watch")
    try:
        done: list[Summary] = []
        for name in ("a.jpg", "b.jpg"):
            ingest.store(processor.process(ingest.admit(files_of(folder, name)).todo))
            done.append(ingest.commit(engine=processor, watch=WatchInfo(reason="count", sequence=len(done) + 1)))
        assert ingest.commit(engine=processor).snapshot is None  # an empty window commits nothing
    finally:
        ingest.close()
    assert [(s.sources, s.stored) for s in done] == [(1, 1), (1, 1)]  # each window counts its own rows
    commits = log(open_repo(str(store), create=False))
    assert [c.id for c in commits] == [done[1].snapshot, done[0].snapshot]
    assert {c.job_id for c in commits} == {ingest.job_id} and [c.kind for c in commits] == ["watch", "watch"]
    provs = [c.provenance for c in commits]
    assert all(p is not None and p.watch is not None for p in provs)
    assert [p.watch.sequence for p in provs if p and p.watch] == [2, 1]
    assert provs[0] is not None and provs[0].inputs.parent_snapshot == done[0].snapshot


def test_the_commit_records_the_provenance_of_its_rows(tmp_path: Path, folder: Path, tiny: Plan,
                                                      processor: Processor) -> None:
    store = tmp_path / "s.icechunk"
    writer = DatasetWriter(open_repo(str(store), create=True), "main")
    base = writer.base_snapshot
    ingest = Ingest(writer, tiny, JobInfo(kind="run", roots=[str(folder)], store=str(store), title="my job"))
    try:
        ingest.store(processor.process(ingest.admit(files_of(folder, "a.jpg", "truncated.jpg")).todo))
        summary = ingest.commit(engine=processor)
    finally:
        ingest.close()
    (commit,) = log(open_repo(str(store), create=False))
    p = commit.provenance
    assert p is not None and commit.message == "my job: 1 stored, 1 failed"
    assert Provenance.from_metadata(commit.metadata) == p and p.to_metadata() == commit.metadata
    assert (p.kind, p.job_id, p.fingerprint, p.spec_path) == ("run", summary.job_id, tiny.fingerprint, tiny.spec_path)
    assert p.spec == tiny.spec.to_dict() and p.spec_sha256 == tiny.spec.digest()
    assert (p.model.name, p.model.dim) == (tiny.model, 1280) and len(p.model.onnx_sha256) == 64
    assert (p.engine.engine, p.engine.device) == ("pillow", "cpu") and p.machine.host and p.software["zarr"]
    assert p.inputs.roots == [str(folder.resolve())] and p.inputs.parent_snapshot == base
    assert (p.counts.sources, p.counts.stored, p.counts.failed) == (2, 1, 1)
    assert p.bytes_.in_ == summary.bytes_in > p.bytes_.out == summary.bytes_out > 0
    assert p.quality.similarity_min == summary.similarity_min is not None
    assert {"store", "probe", "decode_resize"} <= p.timings.keys() and "commit" not in p.timings
    assert "commit" in summary.timings  # the summary also times the commit itself
    assert p.watch is None and p.ray is None and "watch" not in commit.metadata and "ray" not in commit.metadata
    # every declared field, nothing else (rows_held: the writer adds it to every commit)
    assert shape(commit.metadata) == shape(Provenance(rows_held=RowsHeld(), quality=STORED).to_metadata())
    assert p.started_at < p.finished_at

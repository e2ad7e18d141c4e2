"""Version history against a simple model (Hypothesis stateful test).

Rules run real jobs (real photos, a tiny spec) on branches, tag, branch, reset and gc a real store;
after every step, log, diff, show --item and the readers must agree with the model: a dict of
snapshots (parent, rows) plus the branch and tag pointers.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import preprocess
from preprocess.core.errors import ConfigError
from preprocess.drivers.run import JobOptions, run_job
from preprocess.pipeline.process import plan
from preprocess.sources.files import list_sources
from preprocess.store import dataset_at, diff, lineage, open_repo, refs
from preprocess.store import history as hist

Row = tuple[str, str]  # (key, job_id)
Job = tuple[Path, str, list[str]]  # (folder, spec path, the keys a job over the folder stores)
JOBS = 4  # 2 folders x 2 specs


def expected_keys(folder: Path, fingerprint: str) -> list[str]:
    """The keys a job over ``folder`` stores, in its order (sorted paths)."""
    return [f"{hashlib.sha256(p.read_bytes()).hexdigest()}:{fingerprint}" for p in list_sources([folder])]


class History(RuleBasedStateMachine):
    """The model: snapshots (parent, rows), branch and tag pointers; ``jobs`` are set by the test."""

    jobs: ClassVar[list[Job]] = []

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="history-model-"))
        self.store = str(self.dir / "s.icechunk")
        self.repo = open_repo(self.store, create=True)
        root = refs.branch_tip(self.repo, "main")
        self.parent: dict[str, str | None] = {root: None}
        self.rows: dict[str, tuple[Row, ...]] = {root: ()}
        self.made_by: dict[str, str] = {}  # job id -> the snapshot that job committed
        self.branches: dict[str, str] = {"main": root}
        self.tags: dict[str, str] = {}
        self.used_tags: set[str] = set()
        self.collected: set[str] = set()

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- the model's view ---------------------------------------------------------------

    def chain(self, snap: str) -> list[str]:
        out: list[str] = []
        cur: str | None = snap
        while cur is not None:
            out.append(cur)
            cur = self.parent[cur]
        return out

    def reachable(self) -> set[str]:
        return {s for tip in [*self.branches.values(), *self.tags.values()] for s in self.chain(tip)}

    def live(self) -> list[str]:
        return sorted(set(self.rows) - self.collected)

    def spell(self, data: st.DataObject, snap: str) -> str:
        """A way to name ``snap``: its id, a prefix of it, or a branch or tag pointing at it."""
        names = [snap, snap[:8].lower()] + [b for b, s in self.branches.items() if s == snap] + [
            t for t, s in self.tags.items() if s == snap]
        return data.draw(st.sampled_from(names))

    # -- rules --------------------------------------------------------------------------

    def _run(self, branch: str, job: int) -> None:
        folder, spec, keys = self.jobs[job]
        tip = self.branches[branch]
        have = {k for k, _ in self.rows[tip]}
        new = [k for k in keys if k not in have]
        s = run_job(JobOptions(sources=[str(folder)], store=self.store, spec_path=spec, branch=branch,
                               engine="pillow", device="cpu"))
        assert (s.stored, s.skipped, s.failed) == (len(new), len(keys) - len(new), 0)
        if not new:
            assert s.snapshot is None
            return
        assert s.snapshot is not None and s.snapshot not in self.rows
        self.parent[s.snapshot] = tip
        self.rows[s.snapshot] = self.rows[tip] + tuple((k, s.job_id) for k in new)
        self.made_by[s.job_id] = s.snapshot
        self.branches[branch] = s.snapshot

    @initialize()
    def first_job(self) -> None:
        self._run("main", 0)

    @rule(data=st.data(), job=st.integers(0, JOBS - 1))
    def run(self, data: st.DataObject, job: int) -> None:
        self._run(data.draw(st.sampled_from(sorted(self.branches))), job)

    @rule(data=st.data(), tag=st.booleans(), n=st.integers(0, 2))
    def name(self, data: st.DataObject, tag: bool, n: int) -> None:
        """Tag a version, or start a branch at one (tags never move, and a name is never reused)."""
        name = f"t{n}" if tag else f"b{n}"
        snap = data.draw(st.sampled_from(self.live()))
        taken = name in self.used_tags or name in self.branches
        make = refs.create_tag if tag else refs.create_branch
        if taken:
            with pytest.raises(ConfigError):
                make(self.repo, name, self.spell(data, snap))
            return
        assert make(self.repo, name, self.spell(data, snap)).snapshot == snap
        if tag:
            self.tags[name] = snap
            self.used_tags.add(name)
        else:
            self.branches[name] = snap

    @rule(data=st.data())
    def reset(self, data: st.DataObject) -> None:
        branch = data.draw(st.sampled_from(sorted(self.branches)))
        back = self.chain(self.branches[branch])[1:]  # rolling back (orphaning commits) is the usual case
        rollback = data.draw(st.booleans())
        pool = back if back and rollback else self.live()
        snap = data.draw(st.sampled_from(pool))
        done = refs.reset_branch(self.repo, branch, self.spell(data, snap))
        assert (done.old, done.new) == (self.branches[branch], snap)
        self.branches[branch] = snap

    @precondition(lambda self: bool(set(self.rows) - self.collected - self.reachable()))
    @rule()
    def gc(self) -> None:
        unreachable = set(self.rows) - self.collected - self.reachable()
        done = refs.gc(self.repo, refs.parse_age("0s"))
        assert set(done.snapshots) == unreachable
        assert done.counts["snapshots_deleted"] == len(unreachable)
        self.collected |= unreachable

    @rule(data=st.data())
    def diff(self, data: st.DataObject) -> None:
        a, b = (data.draw(st.sampled_from(self.live())) for _ in range(2))
        d = diff.diff(self.repo, self.spell(data, a), self.spell(data, b))
        ka, kb = dict(self.rows[a]), dict(self.rows[b])
        assert {r.key for r in d.added} == kb.keys() - ka.keys()
        assert {r.key for r in d.removed} == ka.keys() - kb.keys()
        changed = {k for k in ka.keys() & kb.keys() if ka[k] != kb[k]}  # made twice, by two jobs
        assert {r.item.key for r in d.changed} == changed
        assert all("job_id" in r.fields for r in d.changed)
        assert d.unchanged == len(ka.keys() & kb.keys()) - len(changed)

    @precondition(lambda self: any(self.rows[s] for s in set(self.rows) - self.collected))
    @rule(data=st.data())
    def show_item(self, data: st.DataObject) -> None:
        snap = data.draw(st.sampled_from([s for s in self.live() if self.rows[s]]))
        key, job = data.draw(st.sampled_from(self.rows[snap]))
        found = lineage.lineage(self.repo, key.split(":")[0][:16], self.spell(data, snap)).items
        mine = [r for r in found if r.key == key]
        assert len(mine) == 1 and mine[0].made_by.commit is not None
        assert mine[0].made_by.commit.id == self.made_by[job]
        assert mine[0].row["job_id"] == job and mine[0].made_by.commit.spec.startswith("tiny-")

    # -- what every reader must agree on ---------------------------------------------------

    @invariant()
    def log_follows_each_branch(self) -> None:
        for branch, tip in self.branches.items():
            assert [c.id for c in hist.log(self.repo, branch)] == self.chain(tip)[:-1]

    @invariant()
    def every_version_holds_its_rows(self) -> None:
        for snap in self.live():
            ds = dataset_at(self.repo, snap)
            t = ds.items_table(["source_sha256", "fingerprint", "job_id"])
            got = tuple(zip((f"{s}:{f}" for s, f in zip(t["source_sha256"], t["fingerprint"], strict=True)),
                            t["job_id"].tolist(), strict=True))
            assert got == self.rows[snap]
        for snap in self.collected:
            with pytest.raises(ConfigError):
                refs.resolve_ref(self.repo, snap)
        tip = self.branches["main"]
        if self.rows[tip]:  # the bytes are there too: the last image of main decodes
            ds = preprocess.open_dataset(self.store, ref="main")
            assert ds[len(ds) - 1]["image"].size[0] > 0


def test_history_agrees_with_a_model(photo_sets: list[Path], tiny_specs: list[Path]) -> None:
    specs = [(str(s), plan(str(s), "pillow", "cpu").fingerprint) for s in tiny_specs]
    History.jobs = [(folder, spec, expected_keys(folder, fp)) for folder in photo_sets[:2] for spec, fp in specs]
    assert len(History.jobs) == JOBS
    run_state_machine_as_test(History, settings=settings(
        max_examples=8, stateful_step_count=10, deadline=None, derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))


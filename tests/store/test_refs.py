"""Refs like git (issue 14): REF~N everywhere a REF is taken, "did you mean", listing and deleting
branches and tags, and never deleting a branch a running job writes. On the store of real jobs
(``hist``, tests/store/conftest.py); what changes refs works on a copy (``scratch``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import icechunk as ic
import pytest

from preprocess.core.errors import ConfigError, ConflictError
from preprocess.store import DatasetWriter, dataset_at, diff, history, open_repo, refs
from preprocess.store.lock import local_root, lock_holder
from tests.store.conftest import Hist


def test_ref_tilde_n_is_the_nth_first_parent(hist: Hist) -> None:
    main, v1, root = hist.main2.snapshot, hist.v1.snapshot, hist.root
    assert refs.resolve_ref(hist.repo, "main~0").snapshot == main
    assert refs.resolve_ref(hist.repo, "main~1") == refs.Ref("main~1", "snapshot", v1 or "")
    assert refs.resolve_ref(hist.repo, "main~").snapshot == v1  # REF~ is REF~1
    assert refs.resolve_ref(hist.repo, "main~2").snapshot == root
    assert refs.resolve_ref(hist.repo, "main~~").snapshot == root  # steps add up
    assert refs.resolve_ref(hist.repo, "low-q~1").snapshot == v1
    assert refs.resolve_ref(hist.repo, f"{(main or '')[:8]}~1").snapshot == v1  # an id prefix, then steps
    assert refs.resolve_ref(hist.repo, "v1~1").snapshot == root
    with pytest.raises(ConfigError) as e:
        refs.resolve_ref(hist.repo, "main~3")
    assert e.value.code == "REF_MISSING" and "only 2 commits before it" in e.value.message
    with pytest.raises(ConfigError) as e:
        refs.resolve_ref(hist.repo, "mian~1")
    assert e.value.code == "REF_MISSING" and "did you mean 'main'?" in e.value.message
    # wherever a REF is taken
    assert history.show(hist.repo, "main~1").commit.id == v1
    assert [c.id for c in history.log(hist.repo, "main~1")] == [v1]
    d = diff.diff(hist.repo, "main~1", "main")
    assert len(d.added) == 2 and d.removed == [] and d.base == v1
    assert len(dataset_at(hist.repo, "main~1")) == 2


def test_a_misspelt_ref_or_field_says_what_was_meant(hist: Hist) -> None:
    for bad, meant in (("mian", "'main'"), ("low_q", "'low-q'"), ("v11", "'v1'")):
        with pytest.raises(ConfigError) as e:
            refs.resolve_ref(hist.repo, bad)
        assert f"did you mean {meant}" in e.value.message, e.value.message
    with pytest.raises(ConfigError) as e:
        refs.resolve_ref(hist.repo, "zzzzzz-unlike-anything")
    assert "did you mean" not in e.value.message
    with pytest.raises(ConfigError) as e:
        dataset_at(hist.repo, "main").items_table(["similarty"])
    assert e.value.code == "STORE_FIELD" and "did you mean 'similarity'" in e.value.message


def test_branches_and_tags_are_listed_with_their_tip(hist: Hist) -> None:
    listed = refs.list_refs(hist.repo, "branch")
    assert [b.name for b in listed] == ["again", "low-q", "main"]
    by = {b.name: b for b in listed}
    assert by["main"].snapshot == hist.main2.snapshot and by["main"].message == "second"
    assert by["low-q"].snapshot == hist.lowq.snapshot and by["low-q"].kind == "branch"
    assert by["main"].written_at == refs.snapshot_info(hist.repo, hist.main2.snapshot or "").written_at
    tags = refs.list_refs(hist.repo, "tag")
    assert [(t.name, t.kind, t.snapshot, t.message) for t in tags] == [("v1", "tag", hist.v1.snapshot, "first")]
    assert tags[0].to_dict()["written_at"] == tags[0].written_at.isoformat()


def test_delete_a_branch_and_a_tag(hist: Hist, scratch: ic.Repository) -> None:
    made = refs.create_tag(scratch, "v1-prev", "main~1")  # REF~N where a tag is made
    assert made.snapshot == hist.v1.snapshot
    gone = refs.delete_branch(scratch, "low-q")
    assert gone == refs.Ref("low-q", "branch", hist.lowq.snapshot or "")
    assert "low-q" not in refs.branches(scratch)
    assert len(dataset_at(scratch, hist.lowq.snapshot or "")) == 6  # still readable by id, until gc
    for name, code in (("main", "BRANCH_MAIN"), ("low-q", "BRANCH_MISSING")):
        with pytest.raises(ConfigError) as e:
            refs.delete_branch(scratch, name)
        assert e.value.code == code
    assert refs.delete_tag(scratch, "v1-prev").snapshot == hist.v1.snapshot
    assert refs.tags(scratch) == {"v1"}
    with pytest.raises(ConfigError) as e:
        refs.delete_tag(scratch, "v1-prev")
    assert e.value.code == "TAG_MISSING"
    with pytest.raises(ConfigError) as e:
        refs.create_tag(scratch, "v1-prev", "main")  # icechunk never reuses a deleted tag's name
    assert e.value.code == "REF_EXISTS" and "was deleted" in e.value.message and "`" not in e.value.message
    with pytest.raises(ConfigError) as e:
        refs.delete_branch(scratch, "agian")
    assert "did you mean 'again'" in e.value.message


def test_a_branch_a_writer_of_this_process_holds_is_not_deleted(scratch: ic.Repository) -> None:
    with DatasetWriter(scratch, "again"):
        holder = lock_holder(local_root(scratch) or Path())
        assert holder is not None and holder.branches == ("again",)
        with pytest.raises(ConflictError) as e:
            refs.delete_branch(scratch, "again")
        assert e.value.code == "BRANCH_BUSY" and e.value.exit_code == 4
        refs.delete_branch(scratch, "low-q")  # another branch: the writer does not write it
    assert lock_holder(local_root(scratch) or Path()) is None
    refs.delete_branch(scratch, "again")  # the job is over


WRITER = textwrap.dedent("""
    import sys
    from preprocess.store import open_writer
    w = open_writer(sys.argv[1], "again", create=False)
    print("ready", flush=True)
    sys.stdin.read()  # hold the writer (and its lock) until the test closes stdin
    w.close()
""")


def test_a_branch_a_running_job_writes_is_not_deleted(scratch: ic.Repository) -> None:
    root = local_root(scratch)
    assert root is not None
    job = subprocess.Popen([sys.executable, "-c", WRITER, str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           text=True)
    try:
        assert job.stdout is not None and job.stdout.readline().strip() == "ready"
        holder = lock_holder(root)
        assert holder is not None and holder.pid == job.pid and holder.writes("again")
        with pytest.raises(ConflictError) as e:
            refs.delete_branch(open_repo(str(root), create=False), "again")
        assert e.value.code == "BRANCH_BUSY" and f"pid {job.pid}" in e.value.message
        refs.delete_branch(scratch, "low-q")  # not the branch it writes
    finally:
        job.communicate("", timeout=60)
    assert job.returncode == 0
    assert lock_holder(root) is None
    refs.delete_branch(scratch, "again")


def test_a_name_that_is_the_start_of_a_snapshot_id_is_never_read_as_the_other(hist: Hist,
                                                                              scratch: ic.Repository) -> None:
    """A tag named with the first 4 characters of main's tip, made on main~1, was accepted; from then on that
    prefix, copied from `log --oneline`, read the tag's commit everywhere (ls, show, diff, export, the web UI),
    and a branch named after an older id's prefix read the tip (a hostile-input round, 2026-12-07). Such a
    name is refused; one that is already there (made before, or an id that came later) is REF_AMBIGUOUS,
    and `tag:NAME` / `branch:NAME` name the ref alone. A ref is read as given: "main\\n" is not main."""
    tip, old = hist.main2.snapshot or "", hist.v1.snapshot or ""
    for make in (refs.create_tag, refs.create_branch):
        with pytest.raises(ConfigError) as e:
            make(scratch, tip[:4], "main~1")
        assert e.value.code == "REF_NAME" and tip in e.value.message
        with pytest.raises(ConfigError) as e:
            make(scratch, old[:6].lower(), "main")
        assert e.value.code == "REF_NAME"
    scratch.create_tag(tip[:4], old)  # as a store made before the rule (or an id that came after the name) has it
    with pytest.raises(ConfigError) as e:
        refs.resolve_ref(scratch, tip[:4])
    assert e.value.code == "REF_AMBIGUOUS" and f"tag:{tip[:4]}" in (e.value.hint or "")
    assert refs.resolve_ref(scratch, f"tag:{tip[:4]}").snapshot == old
    assert refs.resolve_ref(scratch, tip[:5]).snapshot == tip  # more characters: the snapshot
    assert refs.resolve_ref(scratch, "branch:main").snapshot == tip
    assert refs.resolve_ref(scratch, "tag:v1~0").snapshot == old
    for bad in ("tag:main", "branch:nope", "main\n", " main", "main\t"):
        with pytest.raises(ConfigError) as e:
            refs.resolve_ref(scratch, bad)
        assert e.value.code == "REF_MISSING", bad


def test_a_commit_no_ref_reaches_says_so(hist: Hist, scratch: ic.Repository, tmp_path: Path) -> None:
    """After `reset low-q v1`, `show LOWQ_SNAPSHOT` printed "refs -" and "branch low-q" and the web commit page
    "added ... on low-q", as if low-q still held it (a web UI audit, 2026-12-07): both say no branch or tag
    reaches it, and that gc deletes it."""
    from starlette.testclient import TestClient
    from typer.testing import CliRunner

    from preprocess.cli import app
    from preprocess.serve import Catalog, create_app
    from preprocess.store.history import show

    left = hist.lowq.snapshot or ""
    assert show(scratch, left).reachable and show(scratch, "main").reachable
    refs.reset_branch(scratch, "low-q", "v1")
    assert not show(scratch, left).reachable and show(scratch, left).to_dict()["reachable"] is False
    store = str(tmp_path / "copy.icechunk")
    text = " ".join(CliRunner().invoke(app, ["show", store, left], env={"COLUMNS": "200"}).stdout.split())
    assert "no branch or tag now" in text and "gc" in text, text
    with TestClient(create_app(Catalog(store))) as c:
        assert 'id="unreachable"' in c.get(f"/commits/{left}").text
        assert 'id="unreachable"' not in c.get("/commits/main").text

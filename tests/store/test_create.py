"""Creating a store against kills and a second creator (issue 25 items 4 and 5): real processes, real
SIGKILLs at the moment icechunk has written part of the repository, real concurrent creators."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from preprocess.core.errors import ConfigError
from preprocess.store import creating, open_repo, storage
from preprocess.store.creating import CREATING_FILE, FIRST_SNAPSHOT
from tests.paths import ROOT

# A creator that says when its imports are done, waits for a byte on stdin, then creates the store.
CREATOR = ("import sys; from preprocess.store import open_repo; print('ready', flush=True); sys.stdin.read(1); "
           "open_repo(sys.argv[1], create=True); print('created', flush=True)")


def creator(store: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", CREATOR, str(store)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def ready(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"


def go(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None
    proc.stdin.write(b"x")
    proc.stdin.flush()


def kill_when(proc: subprocess.Popen[bytes], written: Path, limit: float = 20.0) -> None:
    """SIGKILL ``proc`` as soon as ``written`` exists. A create takes milliseconds, so the creator runs in
    steps of about 0.1 ms (SIGCONT, a short sleep, SIGSTOP) and is looked at between steps: the kill lands
    while it is stopped, right after the step that wrote ``written``."""
    ready(proc)
    go(proc)
    os.kill(proc.pid, signal.SIGSTOP)
    deadline = time.monotonic() + limit
    while not written.exists() and proc.poll() is None and time.monotonic() < deadline:
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.0001)
        os.kill(proc.pid, signal.SIGSTOP)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("moment", ["snapshots", "transactions"])
def test_a_create_killed_half_way_is_resumed(tmp_path: Path, moment: str) -> None:
    """Killed when icechunk had written its snapshots (or transactions) folder but not its ``repo``
    object, the folder was no repository and not empty: STORE_FOREIGN for every later command."""
    for attempt in range(5):  # a step of the creator can overshoot and write the repo object too: kill again
        store = tmp_path / f"s{attempt}.icechunk"
        kill_when(creator(store), store / moment)
        left = sorted(p.name for p in store.iterdir())
        if moment in left and "repo" not in left:  # killed half way, as the red team did
            break
    else:
        pytest.fail(f"no kill landed between {moment} and the repo object in 5 tries (last: {left})")
    repo = open_repo(str(store), create=True)  # the rerun resumes the create
    assert [s.id for s in repo.ancestry(branch="main")] and not (store / CREATING_FILE).exists()
    assert sorted(p.name for p in store.iterdir()) == ["repo", "snapshots", "transactions"]


def test_a_run_after_a_killed_create_commits(tmp_path: Path, small_photos: list[Path]) -> None:
    store = tmp_path / "s.icechunk"
    kill_when(creator(store), store / "snapshots")
    photos = tmp_path / "in"
    photos.mkdir()
    (photos / small_photos[0].name).write_bytes(small_photos[0].read_bytes())
    done = subprocess.run([sys.executable, "-m", "preprocess", "run", str(photos), "--store", str(store), "--engine",
                           "pillow"], cwd=ROOT, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr


def test_a_creator_that_loses_the_race_opens_the_winners_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The forced interleaving: this process checks that the store can be created, then another process
    creates it completely, then this one creates. Its create failed and its cleanup deleted the winner's
    folder, commits and lock included. A hook on the real check (it still runs) starts the winner."""
    store = tmp_path / "s.icechunk"
    real_check = storage._check_creatable

    def then_the_other_wins(path: Path) -> None:
        real_check(path)
        winner = creator(store)
        ready(winner)
        go(winner)
        out, err = winner.communicate(timeout=60)
        assert winner.returncode == 0 and out == b"created\n", err

    monkeypatch.setattr(storage, "_check_creatable", then_the_other_wins)
    repo = open_repo(str(store), create=True)
    monkeypatch.undo()
    assert (store / "repo").exists() and not (store / CREATING_FILE).exists()
    assert len(list(repo.ancestry(branch="main"))) == 1
    assert len(list(open_repo(str(store), create=False).ancestry(branch="main"))) == 1


def test_two_processes_creating_one_store_both_get_it(tmp_path: Path) -> None:
    for round_ in range(4):
        store = tmp_path / f"s{round_}.icechunk"
        racers = [creator(store), creator(store)]
        for proc in racers:
            ready(proc)
        for proc in racers:
            go(proc)
        for proc in racers:
            out, err = proc.communicate(timeout=90)
            assert proc.returncode == 0 and out == b"created\n", err
        assert len(list(open_repo(str(store), create=False).ancestry(branch="main"))) == 1
        assert sorted(os.listdir(store)) == ["repo", "snapshots", "transactions"]


def test_a_creator_that_finishes_between_our_look_and_our_open_is_waited_out(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """CI's race of two creators: the second saw the first's marker, the first then finished and removed it,
    and the second's open of the marker raised a raw "No such file or directory". The interleaving is forced
    here (the store and both creates are real; only their order is set): when the first create looks for
    the marker, a second create runs to its end, and the first then finds its marker gone. It looks again
    and opens the store the other made."""
    store = tmp_path / "s.icechunk"
    real = creating._make_dir
    looked: list[Path] = []

    def another_creator_finishes_meanwhile(path: Path) -> bool:
        if path.name == CREATING_FILE and not looked:
            looked.append(path)
            open_repo(str(store), create=True)  # the other creator, from its marker to its removal
            return False  # what the first saw: a marker there
        return real(path)

    monkeypatch.setattr(creating, "_make_dir", another_creator_finishes_meanwhile)
    repo = open_repo(str(store), create=True)
    assert looked and len(list(repo.ancestry(branch="main"))) == 1 and not (store / CREATING_FILE).exists()


def test_a_folder_that_only_looks_half_made_is_never_emptied(tmp_path: Path) -> None:
    """Only a create's own marker lets a later create remove what is there: a user's folder that happens
    to hold folders named ``repo`` and ``snapshots`` is refused as before, and left as it was."""
    store = tmp_path / "photos"
    (store / "snapshots").mkdir(parents=True)
    (store / "snapshots" / "cam1.jpg").write_bytes(b"a photo")
    (store / "repo").mkdir()
    (store / "repo" / "README").write_text("someone's own folder")
    with pytest.raises(ConfigError) as refused:
        open_repo(str(store), create=True)
    assert refused.value.code == "STORE_FOREIGN"
    assert sorted(p.name for p in store.iterdir()) == ["repo", "snapshots"]
    assert (store / "snapshots" / "cam1.jpg").read_bytes() == b"a photo"


def test_a_create_killed_while_writing_its_repo_object_is_resumed(tmp_path: Path) -> None:
    """icechunk's local storage writes ``repo#1`` and links it to ``repo``: a kill between the two left
    ``repo#1`` beside the marker, and the folder was refused as foreign (CI caught it once in the killed
    create test above). The folder is made here as that kill leaves it, from a real create's files."""
    made = tmp_path / "made.icechunk"
    open_repo(str(made), create=True)
    store = tmp_path / "s.icechunk"
    store.mkdir()
    (store / CREATING_FILE).mkdir()
    for name in ("snapshots", "transactions"):
        (store / name).mkdir()
        for f in (made / name).iterdir():
            (store / name / f.name).write_bytes(f.read_bytes())
    (store / "repo#1").write_bytes((made / "repo").read_bytes()[:10])  # half written
    repo = open_repo(str(store), create=True)
    assert [s.id for s in repo.ancestry(branch="main")] and not (store / CREATING_FILE).exists()
    assert sorted(p.name for p in store.iterdir()) == ["repo", "snapshots", "transactions"]


@pytest.mark.parametrize("marker", [False, True])
def test_a_failed_creates_stray_write_is_cleared_by_the_next_create(tmp_path: Path, marker: bool) -> None:
    """icechunk writes the first snapshot and its transaction log together and abandons the second when the
    first fails (a full disk); the abandoned write runs on and made ``transactions`` again after the failed
    create's cleanup. The next create (CI, a full-disk test) refused the folder as foreign. The folder is
    made here as that write leaves it: with a killed creator's marker beside it, or without one."""
    made = tmp_path / "made.icechunk"
    open_repo(str(made), create=True)
    store = tmp_path / "s.icechunk"
    (store / "transactions").mkdir(parents=True)
    (store / "snapshots").mkdir()
    (store / "transactions" / f"{FIRST_SNAPSHOT}#3").write_bytes((made / "transactions" / FIRST_SNAPSHOT).read_bytes())
    if marker:
        (store / CREATING_FILE).mkdir()
    assert storage.check_location(str(store)) is False  # creatable, not foreign
    repo = open_repo(str(store), create=True)
    assert [s.id for s in repo.ancestry(branch="main")] and not (store / CREATING_FILE).exists()
    assert sorted(p.name for p in store.iterdir()) == ["repo", "snapshots", "transactions"]


def test_a_folder_named_like_a_stray_but_holding_more_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "s.icechunk"
    (store / "transactions").mkdir(parents=True)
    (store / "transactions" / FIRST_SNAPSHOT).write_bytes(b"x")
    (store / "transactions" / "notes.txt").write_text("someone's own")
    with pytest.raises(ConfigError) as refused:
        open_repo(str(store), create=True)
    assert refused.value.code == "STORE_FOREIGN"
    assert sorted(p.name for p in (store / "transactions").iterdir()) == [FIRST_SNAPSHOT, "notes.txt"]

"""A daemon refused at start-up touches nothing (issue 16 item 9, issue 14 item 3): options, spec,
model, engine, the store's location and branch, and the metrics address are all checked before the
store is created or locked; a port in use is a usage error (exit 2), not a traceback. Real processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.drivers.watch.harness import Daemon
from tests.paths import ROOT


def watch(folder: Path, store: Path, *args: str) -> tuple[int, list[dict[str, object]], str]:
    proc = subprocess.run([sys.executable, "-m", "preprocess", "watch", str(folder), "--store", str(store),
                           "--engine", "pillow", "--log-format", "json", *args], cwd=ROOT, capture_output=True,
                          text=True, check=False, timeout=120)
    events = []
    for line in proc.stderr.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            events.append({"event": "raw", "line": line})
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, events, proc.stderr


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error[")]


def test_a_refused_start_creates_and_binds_nothing(tmp_path: Path) -> None:
    incoming, store = tmp_path / "incoming", tmp_path / "new.icechunk"
    incoming.mkdir()
    bad = tmp_path / "bad.toml"
    bad.write_text("[quality]\nmin = 0\n")

    code, events, err = watch(incoming, store, "--spec", str(bad), "--metrics", "127.0.0.1:0")
    assert code == 2 and len(errors(err)) == 1 and "quality.min" in err and str(bad) in err
    assert not store.exists() and not any(e.get("event") == "listening" for e in events)  # never bound

    code, events, err = watch(incoming, store, "--branch", "nope", "--metrics", "127.0.0.1:0")
    assert code == 2 and errors(err) == [f"error[BRANCH_MISSING]: branch 'nope' does not exist: {store} is a new "
                                         "dataset, whose only branch is 'main'"]
    assert not store.exists() and not any(e.get("event") == "listening" for e in events)


def test_a_metrics_port_in_use_is_a_usage_error(tmp_path: Path) -> None:
    incoming, store = tmp_path / "incoming", tmp_path / "new.icechunk"
    incoming.mkdir()
    with socket.socket() as busy:  # what a second daemon on the default port meets
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = watch(incoming, store, "--metrics", f"127.0.0.1:{port}")
    assert code == 2, err
    lines = errors(err)
    assert len(lines) == 1 and lines[0].startswith(f"error[METRICS_ADDRESS]: --metrics 127.0.0.1:{port} cannot be "
                                                   "used: Address already in use"), err
    assert "127.0.0.1:0 for any free port" in err
    assert not store.exists()


def test_a_signal_stops_a_daemon_that_waits_for_the_store_at_once(tmp_path: Path) -> None:
    """Issue 25 item 6: started with --wait 600 while a job held the store, the daemon ignored SIGTERM
    until it got the lock (10 minutes). During start-up a signal stops it at once: exit 0, nothing taken."""
    incoming, store = tmp_path / "incoming", tmp_path / "s.icechunk"
    incoming.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(store)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        daemon = subprocess.Popen([sys.executable, "-m", "preprocess", "watch", str(incoming), "--store", str(store),
                                   "--engine", "pillow", "--metrics", "off", "--log-format", "json", "--wait", "600"],
                                  cwd=ROOT, stderr=subprocess.PIPE, text=True)
        time.sleep(10)  # start-up done: it waits for the lock now
        assert daemon.poll() is None
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=20)
    finally:
        holder.kill()
        holder.wait()
    assert daemon.returncode == 0, err
    assert [json.loads(line)["event"] for line in err.splitlines()] == ["stopped"], err


HOLD = ("import sys, time; from preprocess.store import open_repo; from preprocess.store.lock import lock_repo; "
        "lock = lock_repo(open_repo(sys.argv[1], create=True), wait=0, purpose='a test'); print('locked', flush=True); "
        "time.sleep(300)")


def test_a_daemon_that_moves_files_is_the_only_one_on_its_folder(tmp_path: Path) -> None:
    """Issue 25 item 12: two daemons on one folder, one moving committed files away (--move-to), silently
    missed files (the mover took them before the other had read them). The second one is refused before it
    takes anything (exit 4, WATCH_FOLDER_BUSY), whichever of them moves; two that leave files may share."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    moved = ("--move-to", str(tmp_path / "moved"))
    for n, (first, second, who) in enumerate(((moved, (), "that daemon"), ((), moved, "this daemon"))):
        with Daemon(incoming, tmp_path / f"first{n}.icechunk", *first) as daemon:
            daemon.start()
            code, _, stderr = watch(incoming, tmp_path / f"second{n}.icechunk", "--metrics", "off", *second)
        assert code == 4, stderr
        assert errors(stderr) == [f"error[WATCH_FOLDER_BUSY]: {incoming}: another watch daemon takes files from "
                                  f"this folder, and {who} moves committed files away (--move-to), so "
                                  f"{'the other' if second else 'this one'} would miss them"], stderr
        assert not (tmp_path / f"second{n}.icechunk").exists()  # refused before its store was made
    with Daemon(incoming, tmp_path / "a.icechunk") as a, Daemon(incoming, tmp_path / "b.icechunk") as b:
        a.start()
        b.start()  # both watching


def test_a_move_to_that_cannot_take_files_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    """An operator's first deployment: ``--move-to`` naming a file, or a folder the daemon may not write
    (systemd's ProtectSystem=strict without ReadWritePaths=, a read-only mount), was accepted; every
    committed file then logged "cannot move a committed file" and stayed, while /readyz said ok. It is an
    option error (exit 2) before the store is created or the port bound, like the other options."""
    incoming, store = tmp_path / "incoming", tmp_path / "new.icechunk"
    incoming.mkdir()
    a_file = tmp_path / "archive.txt"
    a_file.write_text("not a folder\n")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    targets = [a_file, a_file / "under"] + ([locked / "archive"] if os.geteuid() != 0 else [])  # root writes anyway
    try:
        for target in targets:
            code, events, err = watch(incoming, store, "--move-to", str(target), "--metrics", "127.0.0.1:0")
            assert code == 2, err
            lines = errors(err)
            assert len(lines) == 1 and lines[0].startswith("error[WATCH_OPTION]: --move-to"), err
            assert "hint:" in err
            assert not store.exists() and not any(e.get("event") == "listening" for e in events)
    finally:
        locked.chmod(0o700)
    assert not (locked / "archive").exists()

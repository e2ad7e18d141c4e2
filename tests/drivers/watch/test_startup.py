"""A daemon refused at start-up touches nothing (issue 16 item 9, issue 14 item 3): options, spec,
model, engine, the store's location and branch, and the metrics address are all checked before the
store is created or locked; a port in use is a usage error (exit 2), not a traceback. Real processes.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

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

"""`preprocess serve` as a command: its errors, its help, and a real server process that answers
and stops cleanly on Ctrl-C and SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from preprocess.cli import app
from tests.serve.conftest import Served

CLI = [sys.executable, "-m", "preprocess"]


def test_a_missing_store_exits_2_with_one_line(tmp_path: Path) -> None:
    done = subprocess.run([*CLI, "serve", str(tmp_path / "nope")], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error[STORE_MISSING]: ") and lines[0].endswith(": there is no dataset")
    assert lines[1].startswith("  hint:")
    assert len(lines) == 2 and done.stdout == ""


def test_help_says_what_it_serves_and_how_it_exits() -> None:
    text = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200).output
    for words in ("read-only", "--host", "127.0.0.1", "--port", "8080", "0.0.0.0", "Exit codes", "Ctrl-C"):
        assert words in text


def test_a_port_in_use_exits_2(served: Served) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = subprocess.run([*CLI, "serve", str(served.store), "--port", str(port)], capture_output=True,
                              text=True, timeout=60, check=False)
    assert done.returncode == 2 and "error[SERVE_LISTEN]" in done.stderr and "choose another --port" in done.stderr


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_the_server_answers_and_stops_cleanly(served: Served, stop: signal.Signals) -> None:
    proc = subprocess.Popen([*CLI, "serve", str(served.store), "--port", "0"], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith(f"serving {served.store} (read-only) at http://127.0.0.1:"), line
        url = line.split(" at ")[1].split()[0]
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "healthz", timeout=5) as r:
                    assert r.read() == b"ok\n"
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        with urllib.request.urlopen(url + "items?ref=main&sort=similarity", timeout=30) as r:
            assert r.status == 200 and b"Items of" in r.read()
        proc.send_signal(stop)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert err.strip().endswith("stopped") and "Traceback" not in err

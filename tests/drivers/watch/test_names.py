"""The watch daemon and file names that are not text or would drive a terminal (issue 25 items 1 and 7):
a real `preprocess watch` with its text log. Before, the first commit of a name that is not UTF-8
crashed it (and a supervisor restarted it onto the same file), and a newline in a name forged a line
of its log."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from preprocess.core import names
from tests.drivers.watch.harness import read_store, wait_until
from tests.paths import ROOT

NAMES = (b"caf\xe9.jpg", b"e\x1b[2Jx\ncommit snapshot=FORGED.jpg", b"plain.jpg")
BAD = b"bad\xff\x1b[31m\nwarning failure path=secret.jpg"


def _rows(store: Path) -> tuple[int, int]:
    state = read_store(store)
    return (len(state.items), len(state.failures)) if state else (0, 0)


def test_the_daemon_stores_any_name_and_logs_it_escaped(tmp_path: Path, small_photos: list[Path]) -> None:
    incoming, store = tmp_path / "in", tmp_path / "s.icechunk"
    incoming.mkdir()
    err = tmp_path / "daemon.log"
    with open(err, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "preprocess", "watch", incoming, "--store", store, "--engine",
                                 "pillow", "--metrics", "127.0.0.1:0", "--log-format", "text", "--quiet", "0.3s",
                                 "--commit-interval", "0.3s"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        listening = wait_until(lambda: re.search(rb" listening host=\S+ port=(\d+)", err.read_bytes()), 90,
                               "the daemon listening")
        assert listening is not None
        port = int(listening[1])
        wait_until(lambda: b" watching " in err.read_bytes(), 90, "the daemon watching")
        for raw, photo in zip(NAMES, small_photos, strict=False):
            (incoming / os.fsdecode(raw)).write_bytes(photo.read_bytes())
        (incoming / os.fsdecode(BAD)).write_bytes(b"<html>not an image</html>")
        state = wait_until(lambda: read_store(store) if _rows(store) == (3, 1) else None, 120,
                           "three items and one failure committed")
        assert state is not None
        assert sorted(os.fsencode(names.real(p)) for _, p in state.items) == sorted(
            os.fsencode(incoming) + b"/" + raw for raw in NAMES)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200  # still running: it crash-looped at its first commit
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = err.read_bytes()
    assert b"\x1b" not in text and b"Traceback" not in text, text
    lines = text.decode("utf-8").splitlines()  # strict: every byte of the log is UTF-8
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (info|warning|error|debug) ", ln) for ln in lines), lines
    assert not [ln for ln in lines if "snapshot=FORGED" in ln and " commit " in ln.split("path=")[0]], lines
    failure = next(ln for ln in lines if " failure " in ln)
    assert 'path="' + str(incoming) + '/bad\\377\\033[31m\\nwarning failure path=secret.jpg"' in failure

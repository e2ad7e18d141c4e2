"""The daemon's log lines say what happened in words a person and a log pipeline read (issue 23, bug 6):
no Python ``None`` (a window that settled without a commit has no snapshot), and ``--log-level debug``
adds one line per file with what became of it (the real daemon's JSON log, ``daemon_store``)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from preprocess.drivers.watch.logs import configure
from tests.conftest import DaemonStore


def test_debug_logs_a_line_per_file_and_no_line_holds_none(daemon_store: DaemonStore) -> None:
    events = daemon_store.events
    files = [e for e in events if e.get("event") == "file"]
    assert all(e["level"] == "debug" for e in files)
    by_name = {Path(str(e["path"])).name: e for e in files}
    assert set(by_name) == {f"cam0-{i:04d}.jpg" for i in range(3)} | {"cam1-0003.jpg", "cam1-0004.jpg"} | \
        {f"cam2-{i:04d}.jpg" for i in range(5, 8)} | {"truncated.jpg", "copy-of-cam0-0000.jpg"}
    assert by_name["truncated.jpg"]["outcome"] == "failed" and by_name["truncated.jpg"]["code"] == "E_TRUNCATED"
    assert by_name["copy-of-cam0-0000.jpg"]["outcome"] == "duplicate"
    stored = by_name["cam0-0000.jpg"]
    assert stored["outcome"] == "ok" and int(str(stored["bytes"])) > 0 and 0 < float(str(stored["similarity"])) <= 1
    settled = [e for e in events if e.get("event") == "settled"]  # the duplicate, at shutdown: no commit
    assert len(settled) == 1 and "snapshot" not in settled[0] and settled[0]["duplicate"] == 1
    assert all(e.get("snapshot") for e in events if e.get("event") == "commit")
    assert not [e for e in events if None in e.values()], [e for e in events if None in e.values()]


def test_text_lines_leave_out_fields_without_a_value() -> None:
    stream = io.StringIO()
    log = configure("text", "info", stream)
    try:
        log.info("settled", extra={"fields": {"snapshot": None, "files": 1}})
        log.info("listening", extra={"fields": {"endpoints": ["/healthz", "/readyz"]}})
    finally:
        log.handlers[:] = []
        logging.getLogger("watchdog").handlers[:] = []
    line = stream.getvalue()
    assert "settled files=1" in line and "None" not in line and "snapshot" not in line
    assert "listening endpoints=/healthz,/readyz" in line  # not Python's ['/healthz', '/readyz']

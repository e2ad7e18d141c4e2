"""The daemon on a disk that fills up (issue 16, item 3): it does not exit; it stops taking files,
says why on /readyz and in its metrics, retries with a growing wait, and once space is back it goes
on by itself and stores every file exactly once. A real daemon process, a real tmpfs filled to its
last byte (tests/smallfs.py: needs root, skipped otherwise).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from tests.drivers.watch.harness import Daemon, read_store, sha, small_jpegs, spec_file, wait_until
from tests.smallfs import fill, small_tmpfs


def test_a_full_disk_is_retried_reported_and_recovered_from(tmp_path: Path, camera_photos: list[Path]) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    blobs = small_jpegs(camera_photos, 10)
    with small_tmpfs(tmp_path / "disk", "8m") as disk:
        store = disk / "cams.icechunk"
        with Daemon(incoming, store, "--spec", str(spec_file(tmp_path, batch=4)), quiet="0.3s") as d:
            d.start()
            for i, data in enumerate(blobs[:3]):
                (incoming / f"a{i}.jpg").write_bytes(data)
            wait_until(lambda: (s := read_store(store)) and len(s.items) == 3, 60, "the first files committed")
            before = read_store(store)
            assert before is not None

            filler = fill(disk)
            for i, data in enumerate(blobs[3:]):
                (incoming / f"b{i}.jpg").write_bytes(data)

            def unavailable() -> dict[str, Any]:
                code, body = d.get("/readyz")
                detail: dict[str, Any] = json.loads(body)
                return detail if code == 503 and detail["store"].get("code") == "STORE_FULL" else {}

            def failed_again() -> dict[str, float]:
                m = d.metrics()
                return m if m.get('preprocess_watch_store_errors_total{code="STORE_FULL"}', 0) >= 2 else {}

            detail = wait_until(unavailable, 60, "/readyz: not ready, the store full")
            assert detail["state"] == "store_unavailable" and detail["store"]["writable"] is False
            assert "no space left" in str(detail["store"]["error"])
            assert d.get("/healthz")[0] == 200  # alive: a restart would not help
            m = wait_until(failed_again, 30, "a retry that failed too")
            assert m["preprocess_watch_store_writable"] == 0 and m["preprocess_watch_ready"] == 0
            assert m["preprocess_watch_store_backoff_seconds"] >= 2  # the wait grows
            assert d.proc.poll() is None  # still running
            still = read_store(store)
            assert still is not None and (still.head, len(still.items)) == (before.head, 3)  # its last commit

            filler.unlink()  # space again: it goes on by itself
            wait_until(lambda: (s := read_store(store)) and len(s.items) >= len(blobs), 90, "every file stored")
            wait_until(lambda: d.get("/readyz")[0] == 200, 30, "ready again")
            m = d.metrics()
            assert m["preprocess_watch_store_writable"] == 1 and m["preprocess_watch_store_backoff_seconds"] == 0
            d.wait_event("store recovered", 10)  # the log line may come a moment after the commit it follows
            d.signal(signal.SIGTERM)
            assert d.wait(25) == 0, d.log()
        assert not any("Traceback" in e.get("line", "") for e in d.events), d.log()
        final = read_store(store)
        assert final is not None
        assert sorted(final.shas) == sorted(sha(b) for b in blobs)  # each once: nothing lost, nothing twice

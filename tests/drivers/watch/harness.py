"""A real ``preprocess watch`` process for tests: its JSON log events, endpoints and store."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import icechunk
import zarr
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from zarr.errors import GroupNotFoundError

from tests.paths import ROOT
from tests.plain import column

icechunk.set_logs_filter("error")  # no local-storage WARN lines in the test output


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait_until[T](probe: Callable[[], T], timeout: float, what: str, every: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {value!r})")
        time.sleep(every)


def spec_file(tmp: Path, *, batch: int = 32, fixed: int | None = None) -> Path:
    text = f"[batch]\nsize = {batch}\n[gate.views]\nwhole = 0.99\n"  # the daemon's tests: one check, fast
    if fixed is not None:
        text += f'[quality]\nmode = "fixed"\nvalue = {fixed}\n'
    path = tmp / f"spec-b{batch}-{fixed}.toml"
    path.write_text(text)
    return path


def small_jpegs(photos: list[Path], count: int, *, size: tuple[int, int] = (96, 64), shrink: int = 8) -> list[bytes]:
    """``count`` small distinct real-photo JPEGs: crops of the camera photos at different offsets."""
    bases = [Image.open(p).convert("RGB").reduce(shrink) for p in photos]
    out: list[bytes] = []
    for i in range(count):
        img = bases[i % len(bases)]
        step = i // len(bases)
        x = (step * 7) % (img.width - size[0])
        y = (step * 5) % (img.height - size[1])
        buf = io.BytesIO()
        img.crop((x, y, x + size[0], y + size[1])).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


@dataclass
class StoreState:
    head: str
    metadata: dict[str, Any]
    commits: int
    items: list[tuple[str, str]]  # (source_sha256, source_path)
    failures: list[tuple[str, str]]  # (code, source_path)

    @property
    def shas(self) -> list[str]:
        return [s for s, _ in self.items]


def read_store(store: Path) -> StoreState | None:
    """The branch ``main`` as plain icechunk + zarr see it (None before the first snapshot exists)."""
    if not (store / "repo").exists():
        return None
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(store)))
    ancestry = list(repo.ancestry(branch="main"))
    items: list[tuple[str, str]] = []
    failures: list[tuple[str, str]] = []
    try:
        root = zarr.open_group(repo.readonly_session("main").store, mode="r")
    except GroupNotFoundError:  # only the repository's initial snapshot so far
        return StoreState(ancestry[0].id, {}, len(ancestry), items, failures)
    if "items" in root:
        items = list(zip(map(str, column(root, "items/source_sha256")), map(str, column(root, "items/source_path")),
                         strict=True))
        failures = list(zip(map(str, column(root, "failures/code")), map(str, column(root, "failures/source_path")),
                            strict=True))
    return StoreState(ancestry[0].id, dict(ancestry[0].metadata or {}), len(ancestry), items, failures)


class Daemon:
    """``preprocess watch FOLDER --store STORE`` in a subprocess, with small test timings."""

    def __init__(self, folder: Path, store: Path, *args: str, quiet: str = "0.5s",
                 commit_interval: str = "0.5s") -> None:
        cmd = [sys.executable, "-m", "preprocess", "watch", str(folder), "--store", str(store), "--engine", "pillow",
               "--metrics", "127.0.0.1:0", "--log-format", "json", "--quiet", quiet,
               "--commit-interval", commit_interval, *args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.events: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = 0

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = {"event": "raw", "line": line.rstrip()}
            event["_t"] = time.monotonic()
            self.events.append(event)

    def event(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e.get("event") == name), None)

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == name]

    def wait_event(self, name: str, timeout: float = 60) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            if self.proc.poll() is not None and not self.event(name):
                raise AssertionError(f"daemon exited ({self.proc.returncode}) before {name!r}: {self.log()}")
            return self.event(name)
        found = wait_until(probe, timeout, f"log event {name!r}")
        assert found is not None
        return found

    def start(self, timeout: float = 90) -> Daemon:
        self.port = int(self.wait_event("listening", timeout)["port"])
        self.wait_event("watching", timeout)
        return self

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metrics(self) -> dict[str, float]:
        """Prometheus samples as ``name{label="v"}`` -> value (counters keep their ``_total``)."""
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(self.get("/metrics")[1]):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def log(self) -> str:
        return "\n".join(json.dumps({k: v for k, v in e.items() if k != "_t"}) for e in self.events[-40:])

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(timeout=5)
        return rc

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

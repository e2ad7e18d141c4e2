"""Close-to-commit latency of a real watch daemon, for ``scripts/bench``.

:func:`close_to_commit_latency` starts ``preprocess watch`` in a subprocess on a fresh folder and
store, drops the given images in one by one (each written and closed like a camera would), and
measures, per file, the time from its ``close()`` to the first moment a *new* read-only session
on the branch shows its row: what a reader of the dataset experiences (quiet period + batching +
processing + commit policy + commit). ``python -m preprocess.drivers.watch.bench IMAGE...`` prints it as JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import icechunk as ic
import numpy as np
import zarr
from zarr.errors import GroupNotFoundError


@dataclass(frozen=True)
class LatencyReport:
    samples: list[float]  # seconds per file, in the order the files were dropped
    median: float
    p95: float  # nearest rank
    mean: float
    max: float
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def close_to_commit_latency(images: Sequence[bytes | str | Path], *, workdir: str | Path | None = None,  # noqa: PLR0913 (the daemon's own flags, by keyword)
                            spec: str | None = None, engine: str = "auto", device: str = "auto",
                            quiet: float = 0.5, commit_interval: float = 1.0, commit_every: int = 500,
                            batch_wait: float = 0.2, gap: float = 0.25, poll: bool = False,
                            timeout: float = 300.0) -> LatencyReport:
    """Drop ``images`` (bytes or paths; distinct contents) into a watched folder, one every ``gap``
    seconds, and return the close-to-readable-commit latency of each (median and p95 too)."""
    if "ICECHUNK_LOG" not in os.environ:
        ic.set_logs_filter("error")  # no local-storage WARN line per read
    blobs = [b if isinstance(b, bytes) else Path(b).read_bytes() for b in images]
    shas = [hashlib.sha256(b).hexdigest() for b in blobs]
    if len(set(shas)) != len(shas):
        raise ValueError("the images must have distinct contents (the daemon stores each content once)")
    base = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="watch-bench-"))
    incoming, store = base / "incoming", base / "bench.icechunk"
    incoming.mkdir(parents=True, exist_ok=False)
    cmd = [sys.executable, "-m", "preprocess", "watch", str(incoming), "--store", str(store), "--engine", engine,
           "--device", device, "--quiet", f"{quiet}s", "--commit-interval", f"{commit_interval}s",
           "--commit-every", str(commit_every), "--batch-wait", f"{batch_wait}s", "--metrics", "off",
           "--log-format", "json", *(["--spec", spec] if spec else []), *(["--poll"] if poll else [])]
    settings = {"files": len(blobs), "engine": engine, "device": device, "quiet_s": quiet,
                "commit_interval_s": commit_interval, "commit_every": commit_every, "batch_wait_s": batch_wait,
                "gap_s": gap, "poll": poll, "spec": spec or "default"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    watching = threading.Event()
    threading.Thread(target=_follow, args=(proc, watching), daemon=True).start()
    try:
        deadline = time.monotonic() + timeout
        while not watching.wait(0.1):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the watch daemon did not start (exit code {proc.poll()})")
        closed: dict[str, float] = {}
        writer = threading.Thread(target=_drop, args=(incoming, blobs, shas, gap, closed), daemon=True)
        writer.start()
        visible = _await_rows(store, set(shas), deadline)
        writer.join()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    samples = [round(visible[s] - closed[s], 4) for s in shas]
    return LatencyReport(samples=samples, median=statistics.median(samples), p95=percentile(samples, 95),
                         mean=statistics.fmean(samples), max=max(samples), settings=settings)


def _follow(proc: subprocess.Popen[str], watching: threading.Event) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        if '"event": "watching"' in line:
            watching.set()


def _drop(folder: Path, blobs: list[bytes], shas: list[str], gap: float, closed: dict[str, float]) -> None:
    for i, (data, sha) in enumerate(zip(blobs, shas, strict=True)):
        with open(folder / f"cam-{i:05d}.jpg", "wb") as f:
            f.write(data)
        closed[sha] = time.time()
        time.sleep(gap)


def _await_rows(store: Path, wanted: set[str], deadline: float) -> dict[str, float]:
    """When each wanted source sha256 first shows up on ``main`` (Unix time)."""
    seen: dict[str, float] = {}
    repo: ic.Repository | None = None
    while len(seen) < len(wanted):
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(seen)} of {len(wanted)} files became readable in time")
        time.sleep(0.02)
        if repo is None:
            if not (store / "repo").exists():
                continue
            repo = ic.Repository.open(ic.local_filesystem_storage(str(store)))
        try:
            node = zarr.open_group(repo.readonly_session("main").store, mode="r")["items/source_sha256"]
        except (GroupNotFoundError, KeyError):
            continue
        if not isinstance(node, zarr.Array):
            continue
        column = np.asarray(node[:])
        now = time.time()
        for s in map(str, column):
            if s in wanted and s not in seen:
                seen[s] = now
    return seen


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m preprocess.drivers.watch.bench IMAGE... (distinct images)", file=sys.stderr)
        raise SystemExit(2)
    print(json.dumps(close_to_commit_latency(args, engine=os.environ.get("PREPROCESS_ENGINE", "auto")).to_dict(),
                     indent=2))


if __name__ == "__main__":
    main()

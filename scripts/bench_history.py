"""Which commit added each row, on a long history: the counts every commit records (``rows_held``, read with
the history) against reading every snapshot's arrays (the only way before, and still the way for commits an
older version wrote), on the same store in one run.

A store of N commits of one row each (a watch daemon commits every 30 s: 2,880 commits a day), its row bytes
a real bundled photo. Timed, cold (the process-wide count cache emptied before each): ``Origins.commits()``
both ways, in this process (median of repeats); then whole processes: ``preprocess export`` (its ``commit``
column) and the web UI's charts page (a fresh server each time, through starlette's test client).
Run by ``scripts/bench`` (section ``history``); alone: ``python scripts/bench_history.py [--commits 300]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PREPROCESS = str(ROOT / ".venv" / "bin" / "preprocess")


def make_store(path: Path, commits: int) -> None:
    import dataclasses

    import numpy as np

    from preprocess.store import DatasetWriter, open_repo
    from tests.store.test_store import make_item

    photo = sorted((ROOT / "photos" / "opencv").glob("*.jpg"))[0].read_bytes()
    rng = np.random.default_rng(0)
    w = DatasetWriter(open_repo(str(path), create=True), "main")
    for i in range(commits):
        row = dataclasses.replace(make_item(rng, i), jpeg=photo, bytes=len(photo), status="ok")
        w.add_item(row)
        w.commit(f"commit {i}", {})
    w.close()


def _origins_seconds(path: Path, *, recorded: bool) -> float:
    from preprocess.store import open_repo, origins
    from preprocess.store.reader import dataset_at

    repo = open_repo(str(path), create=False)
    tip = dataset_at(repo, "main").snapshot_id
    origins._COUNTS.clear()  # cold: no snapshot's counts known
    t = time.perf_counter()
    o = origins.origins(repo, tip)
    if not recorded:
        o._held = [None] * len(o.history)  # the path for commits without recorded counts: read each snapshot
    o.commits()
    return time.perf_counter() - t


def _process_seconds(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


def _charts(store: Path) -> list[str]:
    code = ("import sys; from starlette.testclient import TestClient; from preprocess.serve import Catalog; "
            "from preprocess.serve.app import create_app; "
            f"r = TestClient(create_app(Catalog({str(store)!r}))).get('/charts?ref=main'); "
            "sys.exit(r.status_code != 200)")
    return [sys.executable, "-c", code]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--commits", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-history-"))
    try:
        store = tmp / "store.icechunk"
        t = time.perf_counter()
        make_store(store, args.commits)
        made = time.perf_counter() - t
        read_all = statistics.median(_origins_seconds(store, recorded=False) for _ in range(args.repeats))
        recorded = statistics.median(_origins_seconds(store, recorded=True) for _ in range(args.repeats))
        export = statistics.median(_process_seconds([PREPROCESS, "export", str(store), str(tmp / f"out{k}")])
                                   for k in range(args.repeats))
        charts = statistics.median(_process_seconds(_charts(store)) for _ in range(args.repeats))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = {"commits": args.commits, "made_s": round(made, 2),
           "origins_every_snapshot_s": round(read_all, 4), "origins_recorded_s": round(recorded, 4),
           "ratio": round(read_all / max(recorded, 1e-9), 1),
           "ms_per_commit_every_snapshot": round(read_all / args.commits * 1e3, 2),
           "export_process_s": round(export, 2), "charts_process_s": round(charts, 2)}
    print(f"  history: {args.commits} commits: row-to-commit map {read_all:.3f} s reading every snapshot, "
          f"{recorded:.4f} s from the recorded counts ({out['ratio']}x); export {export:.2f} s, "
          f"charts page {charts:.2f} s (whole processes)", file=sys.stderr)
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))

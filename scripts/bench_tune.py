"""`preprocess tune` with its defaults against `preprocess run` on the same 19 real photos, whole processes.

The sample: the 12 camera photos (2560x1600 with EXIF), the 6 scikit-image ones and opencv's messi5.jpg
(19 files, 9.8 MB), copied into one folder. Each round, each in a fresh process with its stdout and
stderr piped (what a CI job or a log sees):

  run          ``preprocess run SAMPLE --store NEW`` (the default spec, pillow engine on this machine)
  tune         ``preprocess tune SAMPLE --report NEW``: the defaults (the spec's format, size and
               ladder, the whole view, the search)
  tune-from    ``preprocess tune --from REPORT --target 0.985``: a new target from the saved report
  tune-every   ``preprocess tune SAMPLE --report NEW --every-quality``: every rung of the same ladder (the
               sweep tune made before the search; first round only, it is the slow one)

Per contender: the median wall time; for tune the rungs it measured per image, the progress lines it
printed and its decision. Run by ``scripts/bench`` (section ``tune``); alone:
``python scripts/bench_tune.py [--rounds 2] [--no-every]``.
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
PREPROCESS = ROOT / ".venv" / "bin" / "preprocess"


BENCH_PHOTOS = "photos/camera (12), photos/skimage (6), photos/opencv/messi5.jpg"


def make_sample(dest: Path, folder: Path | None = None) -> list[Path]:
    """The bench's 19 photos (tuning data), or every file of ``folder`` (e.g. photos/held-out)."""
    photos = ROOT / "photos"
    chosen = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) if folder else (
        sorted((photos / "camera").glob("*.jpg")) + sorted((photos / "skimage").iterdir())
        + [photos / "opencv" / "messi5.jpg"])
    dest.mkdir(parents=True)
    for p in chosen:
        shutil.copy(p, dest / p.name)
    assert folder is not None or len(chosen) == 19, f"expected 19 photos, found {len(chosen)}: run scripts/fetch-photos"
    return chosen


def stored_bytes(proc: subprocess.CompletedProcess[str]) -> int:
    """The bytes a ``run --json`` stored."""
    return int(json.loads(proc.stdout)["bytes_out"])


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"bench_tune: {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds, proc


def _tune_facts(report: Path, proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    data = json.loads((report / "report.json").read_text())
    sims = data["models"][0]["similarity"]["whole"]  # [coding][size][quality][image], null: not measured
    measured = sum(v is not None for c in sims for s in c for q in s for v in q)
    per = measured / (len(data["images"]) * len(data["sizes"]) * len(data["codings"]))
    return {"rungs_measured_per_image": round(per, 2), "ladder_rungs": len(data["qualities"]),
            "progress_lines": sum(line.startswith("tune: measuring: ") for line in proc.stderr.splitlines()),
            "decision": data["decision"], "measure_seconds": data["seconds"]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-every", action="store_true", help="skip the --every-quality contender")
    ap.add_argument("--sample", type=Path, help="measure on this folder's photos instead of the bench's 19")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-tune-"))
    sample = work / "sample"
    photos = make_sample(sample, args.sample)
    times: dict[str, list[float]] = {"run": [], "tune": [], "tune-from": [], "tune-every": []}
    facts: dict[str, Any] = {}
    try:
        for r in range(args.rounds):
            t, ran = timed([str(PREPROCESS), "run", str(sample), "--store", str(work / f"s{r}.icechunk"), "--json"])
            times["run"].append(t)
            report = work / f"report{r}"
            t, proc = timed([str(PREPROCESS), "tune", str(sample), "--report", str(report)])
            times["tune"].append(t)
            facts["tune"] = _tune_facts(report, proc)
            if r == 0:  # what tune expects against what `run` stores, with the default and with its spec
                _, rec = timed([str(PREPROCESS), "run", str(sample), "--store", str(work / "rec.icechunk"), "--json",
                                "--spec", str(report / "recommended.toml")])
                expected = int(facts["tune"]["decision"]["total_bytes"])
                facts["bytes"] = {"tune_expects": expected, "run_default_spec": stored_bytes(ran),
                                  "run_recommended_spec": stored_bytes(rec),
                                  "recommended_vs_expected": round(stored_bytes(rec) / expected, 4)}
            t, _ = timed([str(PREPROCESS), "tune", "--from", str(report), "--target", "0.985"])
            times["tune-from"].append(t)
            if r == 0 and not args.no_every:
                every = work / "every"
                t, proc = timed([str(PREPROCESS), "tune", str(sample), "--report", str(every), "--every-quality"])
                times["tune-every"].append(t)
                facts["tune-every"] = _tune_facts(every, proc)
            print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()
                                                   if len(v) == r + 1), file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: round(statistics.median(v), 2) for k, v in times.items() if v}
    return {"photos": {"count": len(photos), "bytes": sum(p.stat().st_size for p in photos),
                       "source": str(args.sample) if args.sample else BENCH_PHOTOS},
            "rounds": args.rounds, "seconds": med, "seconds_every_round": times,
            "tune_vs_run": round(med["tune"] / med["run"], 2), **facts}


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))

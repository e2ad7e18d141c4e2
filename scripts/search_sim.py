"""The gate's quality search replayed on measured curves: what a search rule would store and what it costs.

Reads the oracle's curves of a ``scripts/bench_bytes.py --out`` result (every candidate of every image,
measured as the gate measures, with its stored bytes when it passes) and runs the gate's own
:class:`~preprocess.pipeline.gate.search.Search` over them, image after image in the order of the result,
each image's first probe at the median rung the earlier images of its set were stored at (the job's
priors, without the neighbour match), for each ``--dip`` asked. Prints, per set and dip: stored / oracle
bytes (pooled, worst image), probes per image, and the images stored above their oracle.

Usage: python scripts/search_sim.py RESULT.json [--spec camera.toml] [--dips 0,0.05,0.1,0.2] [--settles 0.001,0.002]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from preprocess.pipeline.gate.search import DEFICIT_SLOPE, SETTLE, Search  # noqa: E402


class Curve(TypedDict):
    """One image's candidates of one track (quality -> its gate score and stored bytes, 0: not a pass)."""

    path: str
    set: str
    score: dict[int, float]
    stored: dict[int, int]


def curves(result: dict[str, object], spec: str) -> list[Curve]:
    """The primary track's curve of every row of ``spec`` in a bench_bytes result."""
    specs = result["specs"]
    assert isinstance(specs, dict)
    out: list[Curve] = []
    for row in specs[spec]["rows"]:
        pts = row.get("curve") or []
        first = pts[0]["variant"] if pts else ""
        size = pts[0]["size"] if pts else None
        pts = [p for p in pts if p["variant"] == first and p["size"] == size]
        out.append(Curve(path=row["path"], set=row.get("set", ""), score={p["quality"]: p["score"] for p in pts},
                         stored={p["quality"]: p["stored"] for p in pts}))
    return out


def replay(curve: Curve, ladder: Sequence[int], threshold: float, guess: int | None,  # noqa: PLR0913 (the rules)
           dip: float, *, settle: float = SETTLE) -> tuple[int, int, int]:
    """(stored bytes, probes, the rung stored at) of the search on one curve (0 bytes: nothing passed)."""
    s = Search(lo=0, hi=len(ladder) - 1)
    probes = 0
    while (r := s.next_probe(guess if not s.tried else None, ladder, threshold, slope=DEFICIT_SLOPE, settle=settle,
                             dip=dip)) is not None:
        s.update(r, curve["score"][ladder[r]], threshold, ladder)
        probes += 1
    passed = [q for q in s.tried if s.tried[q] >= threshold]
    if not passed:
        return 0, probes, len(ladder) - 1
    q = min(passed, key=lambda x: curve["stored"][x])
    return curve["stored"][q], probes, ladder.index(q)


def simulate(cs: Sequence[Curve], ladder: Sequence[int], threshold: float, dip: float,
             settle: float = SETTLE) -> dict[str, float]:
    stored = oracle = 0
    probes: list[int] = []
    chosen: list[int] = []
    worst, above = 1.0, 0
    for c in cs:
        best = min((b for b in c["stored"].values() if b), default=0)
        guess = int(statistics.median(chosen)) if chosen else None
        got, n, rung = replay(c, ladder, threshold, guess, dip, settle=settle)
        probes.append(n)
        chosen.append(rung)
        if not best or not got:
            continue
        stored += got
        oracle += best
        worst = max(worst, got / best)
        above += got > best
    return {"x_oracle": round(stored / oracle, 4) if oracle else 0.0, "worst": round(worst, 3),
            "probes": round(statistics.mean(probes), 2) if probes else 0.0, "above": above, "images": len(cs)}


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("result", nargs="+")
    ap.add_argument("--spec", default="camera.toml")
    ap.add_argument("--dips", default="0,0.05,0.1,0.15,0.2,0.3")
    ap.add_argument("--settles", default=str(SETTLE))
    args = ap.parse_args(argv)
    from preprocess.pipeline.spec import load_spec

    spec = load_spec(ROOT / "pipelines" / args.spec if "/" not in args.spec else Path(args.spec))
    ladder, threshold = spec.quality.ladder(), spec.gate.threshold
    for f in args.result:
        result = json.loads(Path(f).read_text())
        cs = curves(result, Path(args.spec).name)
        for label in ["", *sorted({c["set"] for c in cs})]:
            subset = [c for c in cs if not label or c["set"] == label]
            for dip in (float(d) for d in args.dips.split(",")):
                for settle in (float(x) for x in args.settles.split(",")):
                    got = simulate(subset, ladder, threshold, dip, settle)
                    print(f"{Path(f).name:24} {label or 'all':12} dip {dip:<5} settle {settle:<6} {got}")


if __name__ == "__main__":
    main()

"""The tables of ``scripts/bench_views.py`` results: what an honest check costs per photo cut (the exhaustive
per-image oracle under given thresholds), what today's specs store and score under every view, and where a
quality curve is not monotone (a pass below a fail), per image.

Every number is computed here from the raw candidates a result holds, so thresholds can change without
measuring again: ``python scripts/bench_views.py --report FILE [FILE ...]`` (several files are merged).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

CUT_ORDER = ("tuning", "held-out", "cctv-tuning", "cctv-held-out")
BOX_NAMES = ("top-left", "top-right", "bottom-left", "bottom-right", "centre")
WHOLE = 0.99  # the whole-frame threshold of every oracle row (the gate's today)
CROPS = (0.95, 0.97, 0.98, 0.99)
DINO = 0.98  # issue 21's DINOv2 floor
FLOORS = {"whole": 0.985, "crops": 0.965, "dinov2": 0.98}  # issue 21's "Done when", independently measured


@dataclass(frozen=True)
class Pt:
    variant: str
    side: int
    quality: int
    bytes: int
    whole: float
    dinov2: float | None
    crops: tuple[float, ...]

    @property
    def worst(self) -> float:
        return min(self.crops) if self.crops else float("nan")


class GridJSON(TypedDict):
    path: str
    cut: str
    source_bytes: int
    size: list[int]
    points: list[list[str | int | float | None]]


class ViewsJSON(TypedDict):
    whole: float
    crops: list[float]
    dinov2: float | None


class StoredJSON(TypedDict):
    spec: str
    path: str
    cut: str
    source_bytes: int
    bytes: int
    quality: int
    status: str
    probes: int
    gate: float
    views: ViewsJSON
    size: list[int]


class ResultJSON(TypedDict, total=False):
    date: str
    settings: dict[str, object]
    today: list[StoredJSON]
    grids: list[GridJSON]
    seconds: int


def merge(results: Sequence[ResultJSON]) -> ResultJSON:
    """Several result files (e.g. one per cut) as one."""
    out = ResultJSON(date=results[0].get("date", ""), settings=results[0].get("settings", {}), today=[], grids=[])
    for r in results:
        out["today"] += r.get("today", [])
        out["grids"] += r.get("grids", [])
    return out


def _pt(row: Sequence[str | int | float | None]) -> Pt:
    variant, side, quality, nbytes, whole, dino, *crops = row
    return Pt(str(variant), int(side or 0), int(quality or 0), int(nbytes or 0), float(whole or 0.0),
              None if dino is None else float(dino), tuple(float(c or 0.0) for c in crops))


Rule = Callable[[Pt], bool]


def rule(whole: float = WHOLE, crops: float | None = None, dinov2: float | None = None) -> Rule:
    """A candidate passes: whole >= ``whole``, every crop >= ``crops``, DINOv2 >= ``dinov2`` (those given)."""
    def passes(p: Pt) -> bool:
        if p.whole < whole:
            return False
        if crops is not None and (not p.crops or p.worst < crops):
            return False
        return dinov2 is None or (p.dinov2 is not None and p.dinov2 >= dinov2)

    return passes


@dataclass(frozen=True)
class Image:
    path: str
    cut: str
    source_bytes: int
    side: int  # the stored size's long side (1280, or the source's when smaller)
    points: tuple[Pt, ...]

    @property
    def name(self) -> str:
        return Path(self.path).name

    def curve(self, variant: str) -> list[Pt]:
        """The variant's candidates at the stored size, by quality."""
        return sorted((p for p in self.points if p.variant == variant and p.side == self.points[0].side),
                      key=lambda p: p.quality)

    def best(self, variant: str, passes: Rule, *, any_side: bool = False) -> Pt | None:
        """The fewest bytes that pass (None: no candidate passes)."""
        pts = [p for p in self.points if p.variant == variant and (any_side or p.side == self.points[0].side)]
        ok = [p for p in pts if passes(p)]
        return min(ok, key=lambda p: p.bytes) if ok else None

    def monotone_best(self, variant: str, passes: Rule) -> Pt | None:
        """The fewest bytes among the qualities from which every higher quality passes: the best a search
        that trusts a monotone curve can safely store."""
        curve = self.curve(variant)
        tail: list[Pt] = []
        for p in reversed(curve):
            if not passes(p):
                break
            tail.append(p)
        return min(tail, key=lambda p: p.bytes) if tail else None

    def dips(self, variant: str, passes: Rule) -> tuple[list[int], list[int]]:
        """Qualities that pass below a failing one, and the failing qualities above a pass."""
        curve = self.curve(variant)
        verdict = [passes(p) for p in curve]
        low_passes = [p.quality for i, p in enumerate(curve) if verdict[i] and not all(verdict[i:])]
        first = verdict.index(True) if True in verdict else len(curve)
        high_fails = [p.quality for i, p in enumerate(curve) if i > first and not verdict[i]]
        return low_passes, high_fails


def images(result: ResultJSON) -> list[Image]:
    out = []
    for g in result.get("grids", []):
        pts = tuple(_pt(r) for r in g["points"])
        out.append(Image(g["path"], g["cut"], g["source_bytes"], max(g["size"]), pts))
    return out


def cuts_of(items: Sequence[Image] | Sequence[StoredJSON]) -> list[str]:
    present = {i.cut if isinstance(i, Image) else i["cut"] for i in items}
    return [c for c in CUT_ORDER if c in present] + sorted(present - set(CUT_ORDER))


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


@dataclass(frozen=True)
class Cost:
    pooled: float  # stored bytes / source bytes, all images of the cut together
    median: float  # median per image of the same share
    none: int  # images where no candidate passes (counted at the top quality's bytes)
    images: int

    def cell(self) -> str:
        flag = f" ({self.none} none)" if self.none else ""
        return f"{_pct(self.pooled)} / {_pct(self.median)}{flag}"


def cost(imgs: Sequence[Image], variant: str, passes: Rule, *, any_side: bool = False) -> Cost:
    stored, none = [], 0
    for im in imgs:
        p = im.best(variant, passes, any_side=any_side)
        if p is None:
            none += 1
            p = im.curve(variant)[-1]
        stored.append(p.bytes)
    src = [im.source_bytes for im in imgs]
    return Cost(sum(stored) / sum(src), statistics.median(s / b for s, b in zip(stored, src, strict=True)),
                none, len(imgs))


def oracle_rows() -> list[tuple[str, str, Rule, bool]]:
    """The rows of the cost table: (label, variant, rule, long side in the search)."""
    rows: list[tuple[str, str, Rule, bool]] = []
    for variant, label in (("jpegli", "jpegli"), ("avif", "AVIF")):
        rows.append((f"{label}: whole >= {WHOLE}", variant, rule(), False))
        rows += [(f"{label}: whole >= {WHOLE}, crops >= {t}", variant, rule(crops=t), False) for t in CROPS]
        rows.append((f"{label}: whole >= {WHOLE}, crops >= 0.97, DINOv2 >= {DINO}", variant,
                     rule(crops=0.97, dinov2=DINO), False))
    rows.append((f"jpegli: whole >= {WHOLE}, long side in the search", "jpegli", rule(), True))
    rows.append(("jpegli: whole >= 0.985, long side in the search", "jpegli", rule(whole=0.985), True))
    return rows


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")


def print_costs(imgs: Sequence[Image], today: Sequence[StoredJSON]) -> None:
    """What an honest check costs: stored / source bytes (pooled / median per image) per cut."""
    cuts = cuts_of(imgs)
    by_cut = {c: [im for im in imgs if im.cut == c] for c in cuts}
    head = ["oracle (exhaustive per image, independent check)", *[f"{c} ({len(by_cut[c])})" for c in cuts]]
    rows = [[label, *[cost(by_cut[c], v, passes, any_side=sized).cell() for c in cuts]]
            for label, v, passes, sized in oracle_rows()]
    for spec in sorted({s["spec"] for s in today}):
        cells = []
        for c in cuts:
            ss = [s for s in today if s["spec"] == spec and s["cut"] == c]
            cells.append(f"{_pct(sum(s['bytes'] for s in ss) / sum(s['source_bytes'] for s in ss))} / "
                         f"{_pct(statistics.median(s['bytes'] / s['source_bytes'] for s in ss))}" if ss else "-")
        rows.append([f"today: `{spec}` stores", *cells])
    print("\n### What an honest check costs (share of source bytes: pooled / median per image)\n")
    _table(head, rows)
    print("\nLong side chosen by the size search (jpegli, whole >= 0.99), images per side:")
    for c in cuts:
        sides = Counter(p.side for im in by_cut[c] if (p := im.best("jpegli", rule(), any_side=True)) is not None)
        print(f"  {c}: " + ", ".join(f"{s} px: {n}" for s, n in sorted(sides.items(), reverse=True)))


def _views(s: StoredJSON) -> tuple[float, float, str, float]:
    v = s["views"]
    crops = v["crops"]
    worst = min(crops)
    return v["whole"], worst, BOX_NAMES[crops.index(worst)], float(v["dinov2"] if v["dinov2"] is not None else "nan")


def print_today(imgs: Sequence[Image], today: Sequence[StoredJSON], *, per_image: bool) -> None:
    """What today's specs store and score under every view, and against the same encoder's oracle."""
    by_path = {(im.path, im.cut): im for im in imgs}
    variant = {"camera.toml": "jpegli", "avif.toml": "avif"}
    rows = []
    for spec in sorted({s["spec"] for s in today}):
        for c in cuts_of(today):
            ss = [s for s in today if s["spec"] == spec and s["cut"] == c]
            if not ss:
                continue
            vs = [_views(s) for s in ss]
            wholes, worst, dinos = [v[0] for v in vs], [v[1] for v in vs], [v[3] for v in vs]
            ratio = _vs_oracle(ss, by_path, variant.get(spec, "jpegli"))
            rows.append([f"`{spec}`", c, str(len(ss)), f"{min(wholes):.4f} / {statistics.median(wholes):.4f}",
                         f"{min(worst):.4f} / {statistics.median(worst):.4f}",
                         f"{sum(w < FLOORS['crops'] for w in worst)} / {sum(w < 0.97 for w in worst)}",
                         f"{min(dinos):.4f}", str(sum(d < FLOORS["dinov2"] for d in dinos)), ratio])
    print("\n### Today's specs under every view (independent check)\n")
    _table(["spec", "cut", "images", "whole min / median", "worst crop min / median", "crops < 0.965 / < 0.97",
            "DINOv2 min", "DINOv2 < 0.98", "stored / oracle: whole >= 0.99 ; >= 0.985 ; 0.99 + crops >= 0.97"], rows)
    boxes = Counter(_views(s)[2] for s in today)
    print("\nWorst crop's box, all stored images: " + ", ".join(f"{b}: {n}" for b, n in boxes.most_common()))
    if per_image:
        print("\nPer image: spec cut name | bytes q | whole | worst crop (box) | DINOv2 | gate's own")
        for s in today:
            w, worst_crop, box, d = _views(s)
            print(f"  {s['spec']:11} {s['cut']:13} {Path(s['path']).name[:34]:34} | {s['bytes']:7} q{s['quality']:<2} "
                  f"| {w:.4f} | {worst_crop:.4f} ({box}) | {d:.4f} | {s['gate']:.4f}")


def _vs_oracle(ss: Sequence[StoredJSON], by_path: Mapping[tuple[str, str], Image], variant: str) -> str:
    """Stored bytes over the same encoder's oracle (pooled): whole >= 0.99, whole >= 0.985 (issue 21's floor
    for this independent check), whole >= 0.99 with crops >= 0.97."""
    cells = []
    for passes in (rule(), rule(whole=FLOORS["whole"]), rule(crops=0.97)):
        got = [(s["bytes"], im.best(variant, passes)) for s in ss if (im := by_path.get((s["path"], s["cut"])))]
        pairs = [(b, p.bytes) for b, p in got if p is not None]
        cells.append(f"x{sum(b for b, _ in pairs) / sum(o for _, o in pairs):.3f}" if pairs else "-")
    return " ; ".join(cells)


def print_dips(imgs: Sequence[Image], *, per_image: bool) -> None:
    """Where the quality curve is not monotone: images with a pass below a fail, and what a search that
    trusts a monotone curve pays for it (its safe choice over the oracle, pooled)."""
    print("\n### Not monotone: a pass below a fail (at the stored size)\n")
    rows = []
    criteria = (("whole >= 0.99", rule()), ("whole >= 0.99, crops >= 0.97", rule(crops=0.97)))
    for c in cuts_of(imgs):
        ims = [im for im in imgs if im.cut == c]
        for variant in ("jpegli", "avif"):
            for label, passes in criteria:
                n = sum(bool(im.dips(variant, passes)[0]) for im in ims)
                pairs = [(m.bytes, b.bytes) for im in ims if (b := im.best(variant, passes)) is not None
                         and (m := im.monotone_best(variant, passes)) is not None]
                worst = max((m / b for m, b in pairs), default=1.0)
                ratio = sum(m for m, _ in pairs) / sum(b for _, b in pairs) if pairs else float("nan")
                rows.append([c, variant, label, f"{n} of {len(ims)}", f"x{ratio:.3f}", f"x{worst:.3f}"])
    _table(["cut", "variant", "rule", "images with a pass below a fail",
            "monotone-safe / oracle, pooled", "worst image"], rows)
    if per_image:
        print("\nPer image (jpegli, whole >= 0.99): passes below a fail -> failures above the lowest pass")
        for im in imgs:
            low, high = im.dips("jpegli", rule())
            if low:
                safe = im.monotone_best("jpegli", rule())
                print(f"  {im.cut:13} {im.name[:34]:34} passes q{','.join(map(str, low))}; fails "
                      f"q{','.join(map(str, high))}; every rung passes from q{safe.quality if safe else '-'}")


def print_report(result: ResultJSON, *, per_image: bool = True) -> None:
    imgs = images(result)
    today = result.get("today", [])
    s = result.get("settings", {})
    print(f"\nbench_views {result.get('date', '')}: {len(imgs)} images, jpegli step {s.get('step')}, "
          f"AVIF step {s.get('avif_step')}, sizes {s.get('sizes')} (step {s.get('size_step')})")
    if today:
        print_today(imgs, today, per_image=per_image)
    if imgs:
        print_dips(imgs, per_image=per_image)
        print_costs(imgs, today)

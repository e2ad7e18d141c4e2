"""The bytes benchmark: what a spec stores on real photos, against an exhaustive per-image search, with
every stored image checked again by an independent decode and model.

For each spec (default: pipelines/camera.toml and pipelines/avif.toml) over the photo sets:

1. ``run``: the real job (:func:`preprocess.drivers.run.run_job`, pillow engine) into a fresh store;
2. ``oracle``: per stored image, every quality of the spec's ladder with every variant the spec allows
   (its encoders x chroma subsamplings), each in its stored form (``Engine.finish``) and measured the
   way the gate measures; the smallest that passes. Optionally (``--oracle-jpeg``) also every JPEG
   variant this project has (jpegli, libjpeg 4:2:0 / 4:4:4): what the format allows;
3. ``check``: the stored bytes decoded by imagecodecs (not Pillow), the source by imagecodecs with its
   EXIF orientation applied, both resized to the model's input by torch (antialiased bilinear) and
   embedded by the PyTorch network the ONNX file was exported from: the cosine similarity, which must
   stay >= 0.985 (the gate's threshold is 0.99 in its own measurement).

Prints and returns, per spec and photo set: the share of the source bytes stored, the oracle's share,
stored / oracle, probes per image, and the independent similarity (min, mean).

Usage: python scripts/bench_bytes.py [--sets DIR ...] [--specs camera.toml,avif.toml] [--images N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from preprocess.pipeline.codecs import Candidate, Variant  # noqa: E402
from preprocess.pipeline.gate import Checks  # noqa: E402
from preprocess.pipeline.spec import Spec, load_spec  # noqa: E402

SUFFIXES = {".jpg", ".jpeg", ".png"}
INDEPENDENT_FLOOR = 0.985
HELD_OUT = ("more",)  # photo sets not bundled in the repository (scripts/fetch-photos --more)
JPEG_VARIANTS = [Variant("jpeg", "jpegli", "420"), Variant("jpeg", "libjpeg", "420"), Variant("jpeg", "libjpeg", "444")]


@dataclass
class Row:
    path: str
    source_bytes: int
    stored: int
    status: str
    quality: int
    probes: int
    similarity: float
    set: str = ""  # the photo set (--sets) it came from
    crops: float = float("nan")  # the gate's own worst crop (specs with the crops view)
    oracle: int = 0  # smallest passing candidate's stored bytes over the spec's variants (0: none passes)
    curve: list[Point] | None = None  # every candidate the oracle measured (--curves)
    oracle_jpeg: int = 0  # ... over every JPEG variant
    independent: float = float("nan")


class Independent:
    """The independent check: imagecodecs decodes, torch resizes, the PyTorch network embeds."""

    def __init__(self, model: str) -> None:
        import torch

        from preprocess.pipeline.extractor.build import load_torch
        from preprocess.pipeline.extractor.manifest import find_manifest

        self.torch = torch
        m = find_manifest(model)
        self.view = m.input
        self.net = load_torch(m)
        self.mean = torch.tensor(m.input.mean).view(3, 1, 1) * m.input.scale
        self.std = torch.tensor(m.input.std).view(3, 1, 1) * m.input.scale

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float()
        x = torch.nn.functional.interpolate(x[None], size=(self.view.height, self.view.width), mode="bilinear",
                                            antialias=True, align_corners=False)[0]
        x = (x - self.mean) / self.std
        with torch.no_grad():
            v = self.net(x[None]).reshape(-1).numpy()
        return np.asarray(v / np.linalg.norm(v), dtype=np.float32)

    def similarity(self, source: bytes, stored: bytes, stored_format: str) -> float:
        return float(self.embed(decode_source(source)) @ self.embed(decode_stored(stored, stored_format)))


def decode_stored(data: bytes, fmt: str) -> np.ndarray:
    import imagecodecs

    fn: Any = {"jpeg": imagecodecs.jpeg8_decode, "avif": imagecodecs.avif_decode, "webp": imagecodecs.webp_decode,
               "jxl": imagecodecs.jpegxl_decode, "png": imagecodecs.png_decode}[fmt]
    return _rgb(np.asarray(fn(data)))


def decode_source(data: bytes) -> np.ndarray:
    """A source's pixels by imagecodecs, oriented by its EXIF tag (read with Pillow: metadata only)."""
    import imagecodecs
    from PIL import ExifTags, Image

    img = _rgb(np.asarray(imagecodecs.imread(data)))
    import io

    with Image.open(io.BytesIO(data)) as meta:
        orientation = int(meta.getexif().get(ExifTags.Base.Orientation, 1) or 1)
    return _orient(img, orientation)


def _rgb(arr: np.ndarray) -> np.ndarray:
    if arr.dtype != np.uint8:
        arr = (arr.astype(np.float64) * 255.0 / np.iinfo(arr.dtype).max).round().astype(np.uint8)
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2)
    if arr.shape[2] == 4:  # alpha on white, as the pipeline does
        a = arr[..., 3:4].astype(np.float32) / 255.0
        return np.asarray((arr[..., :3] * a + 255.0 * (1 - a)).round(), dtype=np.uint8)
    return np.asarray(arr[..., :3])


def _orient(a: np.ndarray, o: int) -> np.ndarray:
    """EXIF orientation 1..8 applied (the transposes of ImageOps.exif_transpose)."""
    ops: dict[int, Any] = {2: lambda x: x[:, ::-1], 3: lambda x: x[::-1, ::-1], 4: lambda x: x[::-1],
           5: lambda x: np.transpose(x, (1, 0, 2)), 6: lambda x: np.rot90(x, -1),
           7: lambda x: np.rot90(x, 1)[::-1], 8: lambda x: np.rot90(x, 1)}
    return np.ascontiguousarray(ops[o](a)) if o in ops else a  # type: ignore[no-any-return]


@dataclass
class Point:
    """One candidate of the oracle: its track (variant, stored size), quality, bytes and the gate's verdict."""

    variant: str
    size: tuple[int, int]
    quality: int
    encoded: int  # the encoder's bytes
    score: float  # the gate score (>= the first threshold when every check passes)
    checks: Checks
    stored: int = 0  # the bytes in stored form (Engine.finish), for a pass


class Oracle:
    """Exhaustive per-image search with the gate's own measurement (every check of the spec: each model
    under each view, and every size of a size search; one engine + extractors per thread)."""

    def __init__(self, spec: Spec, variants: Sequence[Variant]) -> None:
        from preprocess.pipeline.engines import make_engine
        from preprocess.pipeline.extractor.build import build
        from preprocess.pipeline.extractor.manifest import find_manifest
        from preprocess.pipeline.extractor.session import Extractor
        from preprocess.pipeline.gate import Measure

        manifests = [find_manifest(m) for m in spec.gate.models]
        self.spec = spec
        self.variants = list(variants)
        self.engine = make_engine("pillow", "cpu", encode=spec.encode, view=manifests[0].input, threads=1)
        extractors = [Extractor(build(m), device="cpu", threads=1) for m in manifests]
        self.measure = Measure(self.engine, extractors[0], tuple(extractors[1:]))

    def curve(self, path: Path) -> list[Point]:
        """Every candidate of every track, measured as the gate measures (the stored form of each pass)."""
        from preprocess.core.timing import Laps
        from preprocess.pipeline.engines.base import SourceImage
        from preprocess.pipeline.gate.measure import Rounds
        from preprocess.pipeline.images import probe

        data = path.read_bytes()
        info = probe(data, max_pixels=self.spec.limits.max_pixels, path=str(path))
        points: list[Point] = []
        rounds = None
        for target in self.spec.resize.targets(info.width, info.height):
            loaded = self.engine.load([SourceImage(str(path), data, "", info, target)])
            if not loaded.prepared:
                return []
            rounds = rounds or Rounds(self.measure, loaded, self.spec, Laps(None))  # the largest size's references
            p = loaded.prepared[0]
            asks = [Candidate(v, q) for v in self.variants for q in self.spec.quality.ladder()]
            for start in range(0, len(asks), 8):
                enc = self.engine.encode([p] * len(asks[start:start + 8]), asks[start:start + 8])
                for e, m in zip(enc, rounds.score(enc, [0] * len(enc), [p] * len(enc), full=True), strict=True):
                    points.append(Point(e.candidate.variant.label, target, e.candidate.quality, len(e.data),
                                        round(m.similarity, 6), m.checks))
                    if m.similarity >= self.spec.gate.threshold:
                        points[-1].stored = len(self.engine.finish([p], [e])[0])
        return points

    def smallest(self, path: Path) -> int:
        """Fewest stored bytes of any candidate that passes (0 when none does)."""
        return min((pt.stored for pt in self.curve(path) if pt.stored), default=0)

    def close(self) -> None:
        self.engine.close()


def photos(dirs: Sequence[Path], limit: int) -> list[Path]:
    """The photos of ``dirs``; a folder named ``DIR:first`` or ``DIR:second`` gives the first or second half
    of its photos in name order (the fixed camera's frames: the first half for tuning, the second held out)."""
    out = []
    for d in dirs:
        folder, _, half = str(d).partition(":")
        ps = [p for p in sorted(Path(folder).iterdir()) if p.suffix.lower() in SUFFIXES and p.is_file()]
        out += {"first": ps[:len(ps) // 2], "second": ps[len(ps) // 2:]}.get(half, ps)
    return out[:limit] if limit else out


def run_spec(spec_path: Path, paths: list[Path], *, oracle_jpeg: bool, workers: int) -> list[Row]:
    """The job, the oracle and the independent check for one spec over ``paths`` (rows in their order)."""
    spec = load_spec(spec_path)
    with tempfile.TemporaryDirectory(prefix="bench-bytes-") as tmp:
        rows, stored = job(spec_path, paths, Path(tmp))
        _measure(spec, rows, stored, oracle_jpeg=oracle_jpeg, workers=workers)
    return rows


def job(spec_path: Path, paths: list[Path], tmp: Path) -> tuple[list[Row], dict[str, tuple[bytes, str]]]:
    """The real job (pillow engine) over copies of ``paths`` in ``tmp`` (named ``NNN-<name>``, NNN the
    position in ``paths``): its rows in the order of ``paths``, and each row's stored bytes and format by
    the row's (copied) source path."""
    from preprocess.drivers.run import JobOptions, run_job
    from preprocess.store import open_dataset

    links = tmp / "in"
    links.mkdir()
    for i, p in enumerate(paths):  # one folder: a run over exactly these files, names kept unique
        (links / f"{i:03d}-{p.name}").write_bytes(p.read_bytes())
    t0 = time.perf_counter()
    run_job(JobOptions(sources=[str(links)], store=str(tmp / "s.icechunk"), spec_path=str(spec_path),
                       engine="pillow", device="cpu"))
    seconds = time.perf_counter() - t0
    ds = open_dataset(str(tmp / "s.icechunk"))
    cols = ds.items_table()
    order = sorted(range(len(ds)), key=lambda i: str(cols["source_path"][i]))
    rows = [Row(path=str(cols["source_path"][i]), source_bytes=int(cols["source_bytes"][i]),
                stored=int(cols["bytes"][i]), status=str(cols["status"][i]), quality=int(cols["quality"][i]),
                probes=int(cols["probes"][i]), similarity=float(cols["similarity"][i]),
                crops=float(cols["similarity_crops"][i])) for i in order]
    stored = {r.path: (ds.jpeg(i), str(cols["format"][i])) for i, r in zip(order, rows, strict=True)}
    print(f"  {spec_path.name}: run {len(rows)} images in {seconds:.1f} s", file=sys.stderr)
    return rows, stored


def _measure(spec: Spec, rows: list[Row], stored: dict[str, tuple[bytes, str]], *, oracle_jpeg: bool,
             workers: int) -> None:
    """Per row (``stored``: its bytes and format by source path), the oracle and the independent check."""
    import threading

    local = threading.local()
    indep = Independent(spec.gate.model)
    lock = threading.Lock()

    def one(row: Row) -> None:
        if not hasattr(local, "oracle"):
            local.oracle = Oracle(spec, spec.encode.variants())
            local.jpeg = Oracle(spec.model_copy(update={"encode": spec.encode.model_copy(
                update={"format": "jpeg"})}), JPEG_VARIANTS) if oracle_jpeg else None
        path = Path(row.path)
        row.curve = local.oracle.curve(path)
        row.oracle = min((pt.stored for pt in row.curve if pt.stored), default=0)
        if local.jpeg is not None:
            row.oracle_jpeg = local.jpeg.smallest(path)
        with lock:  # torch runs its own threads: one independent check at a time
            row.independent = indep.similarity(path.read_bytes(), *stored[row.path])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, rows))
    print(f"    oracle + independent check in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


def summarize(rows: list[Row], label: str) -> dict[str, Any]:
    ok = [r for r in rows if r.status == "ok" and r.oracle]
    src = sum(r.source_bytes for r in rows)
    out: dict[str, Any] = {
        "set": label, "images": len(rows), "source_bytes": src, "stored_bytes": sum(r.stored for r in rows),
        "stored_share": round(sum(r.stored for r in rows) / src, 5) if src else None,
        "statuses": {s: sum(r.status == s for r in rows) for s in sorted({r.status for r in rows})},
        "probes_per_image": round(statistics.mean(r.probes for r in rows), 2) if rows else None,
        "stored_per_image": round(sum(r.stored for r in rows) / len(rows)) if rows else None,
    }
    if ok:
        out["oracle_share"] = round(sum(r.oracle for r in ok) / sum(r.source_bytes for r in ok), 5)
        out["stored_vs_oracle"] = round(sum(r.stored for r in ok) / sum(r.oracle for r in ok), 4)
        out["oracle_per_image"] = round(sum(r.oracle for r in ok) / len(ok))
        if all(r.oracle_jpeg for r in ok):
            out["jpeg_oracle_share"] = round(sum(r.oracle_jpeg for r in ok) / sum(r.source_bytes for r in ok), 5)
    sims = [r.independent for r in rows if r.status == "ok" and not np.isnan(r.independent)]
    if sims:
        out["independent_min"] = round(min(sims), 4)
        out["independent_mean"] = round(float(np.mean(sims)), 4)
        out["independent_below_floor"] = [r.path for r in rows
                                          if r.status == "ok" and r.independent < INDEPENDENT_FLOOR]
    return out


def cuts(rows: Sequence[dict[str, Any]], bundled: int) -> dict[str, float]:
    """The stored share on the cuts the README reports, from a result's rows (in the order run): all,
    without the two largest sources, the first ``bundled`` rows (the bundled photos), median per image."""
    def share(rs: Sequence[dict[str, Any]]) -> float:
        return round(float(sum(r["stored"] for r in rs)) / float(sum(r["source_bytes"] for r in rs)), 5)

    largest = sorted(range(len(rows)), key=lambda i: -rows[i]["source_bytes"])[:2]
    return {"all": share(rows), "without_two_largest": share([r for i, r in enumerate(rows) if i not in largest]),
            "bundled": share(rows[:bundled]),
            "median_per_image": round(float(statistics.median(r["stored"] / r["source_bytes"] for r in rows)), 5)}


def print_cuts(result: dict[str, Any]) -> None:
    """``--cuts FILE``: the README's cuts of a result file (this script's, or ``bytes`` in scripts/bench's)."""
    specs = result.get("bytes", result)["specs"]
    for spec, r in specs.items():
        bundled = sum(s["images"] for name, s in r["sets"].items() if name not in HELD_OUT)
        print(spec, " ".join(f"{k}={v * 100:.2f}%" for k, v in cuts(r["rows"], bundled).items()))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_sets = [ROOT / "photos" / d for d in ("camera", "opencv", "skimage", *HELD_OUT)]
    ap.add_argument("--sets", nargs="*", default=[str(d) for d in default_sets if d.is_dir()],
                    help="photo folders, each reported alone and in the total (default: the bundled photos, and "
                         "photos/more when `scripts/fetch-photos --more` fetched it)")
    ap.add_argument("--specs", default="camera.toml,avif.toml", help="specs under pipelines/ (or paths)")
    ap.add_argument("--images", type=int, default=0, help="at most N photos per set (0: all)")
    ap.add_argument("--oracle-jpeg", action="store_true", help="also the oracle over every JPEG variant")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="")
    ap.add_argument("--cuts", metavar="RESULT", help="print the README's cuts of a result file and exit")
    args = ap.parse_args(argv)
    if args.cuts:
        print_cuts(json.loads(Path(args.cuts).read_text()))
        return {}
    import icechunk

    icechunk.set_logs_filter("error")
    sets = {Path(d).name: photos([Path(d)], args.images) for d in args.sets}  # "cctv:first", ...
    result: dict[str, Any] = {"threshold_independent": INDEPENDENT_FLOOR, "specs": {}}
    for name in args.specs.split(","):
        spec_path = Path(name) if "/" in name else ROOT / "pipelines" / name
        labels = [label for label, ps in sets.items() for _ in ps]
        rows = run_spec(spec_path, [p for ps in sets.values() for p in ps], oracle_jpeg=args.oracle_jpeg,
                        workers=args.workers)  # rows come back in the order of the files given
        for r, label in zip(rows, labels, strict=True):
            r.set = label
        per_set = {label: summarize([r for r, lb in zip(rows, labels, strict=True) if lb == label], label)
                   for label in sets}
        result["specs"][spec_path.name] = {"all": summarize(rows, "all"), "sets": per_set,
                                           "rows": [asdict(r) for r in rows]}
    print_table(result)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


def print_table(result: dict[str, Any]) -> None:
    print(f"\n{'spec':12} {'set':10} {'images':>6} {'stored %':>8} {'oracle %':>8} {'x oracle':>8} {'probes':>6} "
          f"{'indep min':>9} {'indep mean':>10}")
    for spec, r in result["specs"].items():
        for s in [r["all"], *r["sets"].values()]:
            pct = f"{s['stored_share'] * 100:.2f}" if s.get("stored_share") else "-"
            opct = f"{s['oracle_share'] * 100:.2f}" if s.get("oracle_share") else "-"
            print(f"{spec:12} {s['set']:10} {s['images']:6} {pct:>8} {opct:>8} {s.get('stored_vs_oracle', '-'):>8} "
                  f"{s.get('probes_per_image', '-'):>6} {s.get('independent_min', '-'):>9} "
                  f"{s.get('independent_mean', '-'):>10}")


if __name__ == "__main__":
    main()

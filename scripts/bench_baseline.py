"""The benchmark's baseline: what a team writes first, with plain Pillow, numpy and onnxruntime.

One image at a time: open, EXIF transpose, full decode, Lanczos resize to the long side, then a
plain bisection over the quality ladder where every probe encodes (with the spec's JPEG encoder:
jpegli through pyjpegli, or libjpeg through Pillow), decodes the candidate and makes two
single-image onnxruntime calls (source and candidate) for the whole view, and with the crops view
(``--crops-threshold``, the spec's ``gate.views.crops``) one more per crop of the candidate (the four
quadrants and the centre half at the stored resolution, stretched to 224 px), against the same crops of
the resized source, embedded once per image; a probe passes when every view does. It keeps the chosen
candidate in the spec's stored form (mozjpeg's lossless optimization for progressive JPEG), so it stores
what the spec asks.
Deliberately standalone (it imports nothing from the project), so ``scripts/bench`` can run it in a
separate environment with stock Pillow (``baseline``) as well as in the project's, on pillow-simd
(``baseline-simd``).

Usage: python scripts/bench_baseline.py --dir PHOTOS --model MODEL.onnx --result OUT.json
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import time
from pathlib import Path

import mozjpeg_lossless_optimization
import numpy as np
import onnxruntime as ort
import PIL
import pyjpegli
from PIL import Image, ImageOps

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255


class Baseline:
    """The plain loop's state: the model session, the options and the time spent per stage."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ladder = [int(q) for q in args.ladder.split(",")]
        self.session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
        self.name = self.session.get_inputs()[0].name
        self.stages = {"decode": 0.0, "resize": 0.0, "encode": 0.0, "view": 0.0, "infer": 0.0, "finish": 0.0}

    def embed(self, img: Image.Image) -> np.ndarray:
        t = time.perf_counter()
        x = (np.asarray(img.resize((224, 224), Image.Resampling.BILINEAR), dtype=np.float32) - MEAN) / STD
        t2 = time.perf_counter()
        (y,) = self.session.run(None, {self.name: x.transpose(2, 0, 1)[None].copy()})
        self.stages["infer"] += time.perf_counter() - t2
        self.stages["view"] += t2 - t
        v = np.asarray(y, dtype=np.float32).reshape(-1)
        return v / np.linalg.norm(v)

    def encode(self, small: Image.Image, quality: int) -> bytes:
        t = time.perf_counter()
        if self.args.encoder == "jpegli":
            blob = bytes(pyjpegli.encode(small.tobytes(), small.width, small.height, quality))
        else:
            buf = io.BytesIO()
            small.save(buf, format="JPEG", quality=quality, subsampling=2)
            blob = buf.getvalue()
        self.stages["encode"] += time.perf_counter() - t
        return blob

    def resized(self, path: Path) -> Image.Image:
        t = time.perf_counter()
        opened = Image.open(path)
        img = (ImageOps.exif_transpose(opened) or opened).convert("RGB")
        t2 = time.perf_counter()
        self.stages["decode"] += t2 - t
        w, h = img.size
        scale = min(1.0, self.args.long_side / max(w, h))
        target = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = img.resize(target, Image.Resampling.LANCZOS) if target != img.size else img
        self.stages["resize"] += time.perf_counter() - t2
        return small

    @staticmethod
    def crops(img: Image.Image) -> list[Image.Image]:
        """The four quadrants and the centre half, at the image's own resolution."""
        w, h = img.size
        hw, hh = w // 2, h // 2
        boxes = [(0, 0, hw, hh), (hw, 0, w, hh), (0, hh, hw, h), (hw, hh, w, h),
                 (w // 4, h // 4, w // 4 + hw, h // 4 + hh)]
        return [img.crop(b) for b in boxes]

    def passes(self, small: Image.Image, cand: Image.Image, source_crops: list[np.ndarray]) -> bool:
        """Every view of the candidate against the source's (whole: two single-image calls)."""
        if float(self.embed(small) @ self.embed(cand)) < self.args.threshold:
            return False
        return all(float(self.embed(c) @ ref) >= self.args.crops_threshold
                   for c, ref in zip(self.crops(cand), source_crops, strict=True))

    def one(self, path: Path) -> tuple[int, int]:
        """(probes, bytes stored) for one image: plain bisection over the ladder."""
        small = self.resized(path)
        source_crops = [self.embed(c) for c in self.crops(small)] if self.args.crops_threshold else []
        lo, hi, best, probes = 0, len(self.ladder) - 1, None, 0
        while lo <= hi:
            mid = (lo + hi) // 2
            blob = self.encode(small, self.ladder[mid])
            t = time.perf_counter()
            cand = Image.open(io.BytesIO(blob)).convert("RGB")
            self.stages["decode"] += time.perf_counter() - t
            probes += 1
            if self.passes(small, cand, source_crops):
                best, hi = blob, mid - 1
            else:
                lo = mid + 1
        if best and self.args.stored_form == "mozjpeg":
            t = time.perf_counter()
            best = bytes(mozjpeg_lossless_optimization.optimize(best))
            self.stages["finish"] += time.perf_counter() - t
        return probes, len(best) if best else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="photos (*.jpg, *.jpeg, *.png)")
    ap.add_argument("--model", required=True, help="the ONNX feature extractor (224x224 RGB NCHW input)")
    ap.add_argument("--result", required=True, help="where to write the JSON result")
    ap.add_argument("--long-side", type=int, default=1280)
    ap.add_argument("--ladder", default=",".join(str(q) for q in range(30, 96, 5)))
    ap.add_argument("--threshold", type=float, default=0.99)
    ap.add_argument("--crops-threshold", type=float, default=0.0,
                    help="the crops view's threshold (the spec's gate.views.crops; 0: no crops view)")
    ap.add_argument("--encoder", choices=["jpegli", "libjpeg"], default="jpegli")
    ap.add_argument("--stored-form", choices=["mozjpeg", "as-encoded"], default="mozjpeg",
                    help="what is kept of the chosen candidate: mozjpeg's lossless optimization (the spec's "
                         "progressive = true) or the encoder's bytes")
    ap.add_argument("--warm", type=int, default=4, help="images run once before the clock")
    args = ap.parse_args()
    paths = sorted(p for p in Path(args.dir).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    base = Baseline(args)
    for p in paths[: args.warm]:
        base.one(p)
    for k in base.stages:
        base.stages[k] = 0.0
    t0 = time.perf_counter()
    probes = out = 0
    for p in paths:
        n, b = base.one(p)
        probes += n
        out += b
    seconds = time.perf_counter() - t0
    Path(args.result).write_text(json.dumps({
        "seconds": seconds, "probes": probes / len(paths), "bytes_out": out, "stages": base.stages,
        "pillow": PIL.__version__, "onnxruntime": ort.__version__,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()

"""Everything the GPU path must show on a lent GPU, in one run (scripts/gpu-check runs this).

Each check is timed, isolated (one that fails records its error and the others go on) and skipped
when the run's time budget (--budget) is spent, so the run always ends with the table. Full results go
to OUT/gpu-check.json (device, driver, versions, date: ready for bench/results/), the short table is
printed last. ``--cpu`` rehearses the same checks on a machine without CUDA: every check that has a
CPU form runs it (DALI's CPU graphs, nvImageCodec's CPU backend, onnxruntime on the CPU), the rest
say "needs CUDA".

Checks: which decoder/encoder backends work (and which ran), nvJPEG's quantization tables and sizes
against libjpeg-turbo's per quality, embeddings (GPU vs CPU, TF32 off, batch 1 vs 32), the bad-image
path, tiny and extreme shapes through nvJPEG, ``pytest -m gpu``, the gate on the GPU against the pillow
engine (qualities chosen, encoders in the rows), images/s at lane batches 32 and 128 with 1 and 3
lanes (pipelines/gpu.toml) and the default spec (jpegli on the CPU), the CPU path on the same
machine, GPU memory, and the decode-only ceiling (hardware + CUDA decoder, and CUDA alone).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUALITIES = (5, 10, 20, 30, 50, 70, 85, 95)
if TYPE_CHECKING:
    from preprocess.pipeline.devices import DeviceName, EngineName

GPU_SPEC = ROOT / "pipelines" / "gpu.toml"
DEFAULT_SPEC = ROOT / "pipelines" / "camera.toml"


class Run:
    """The run's state: where results go, the device, the clock."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device: DeviceName = "cpu" if args.cpu else "gpu"
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.deadline: float = time.monotonic() + float(args.budget)
        self.images = args.images
        self.results: dict[str, Any] = {}
        self.work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu-check-"))
        self.work.mkdir(parents=True, exist_ok=True)

    @property
    def gpu(self) -> bool:
        return self.device == "gpu"

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def check(self, name: str, *, needs: float, cap: float) -> None:
        """Run one check in its own process (a crash in CUDA code loses that check only) if ``needs``
        seconds are left, for at most ``cap`` seconds; record its result, or its error, and its time."""
        if self.left() < needs:
            self.results[name] = {"skipped": f"out of time ({self.left():.0f} s left, needs ~{needs:.0f} s)"}
            log(f"[{name}] skipped: out of time")
            return
        log(f"[{name}] ...")
        t0 = time.monotonic()
        result = self.work / f"result-{name.replace(' ', '_')}.json"
        timeout = max(5.0, min(cap, self.left()))
        cmd = [sys.executable, __file__, "--worker", name, "--result", str(result), "--out", str(self.out),
               "--work", str(self.work), "--budget", str(timeout - 3), "--images", str(self.images)]
        try:
            proc = subprocess.run(cmd + (["--cpu"] if not self.gpu else []), timeout=timeout, check=False)
            res = (json.loads(result.read_text()) if result.exists()
                   else {"error": f"the check's process died (exit {proc.returncode}); see the log"})
        except subprocess.TimeoutExpired:
            res = {"error": f"timed out after {timeout:.0f} s"}
        if "error" in res:
            log(f"[{name}] FAILED: {str(res['error'])[:300]}")
        res["seconds"] = round(time.monotonic() - t0, 2)
        self.results[name] = res
        log(f"[{name}] done in {res['seconds']} s")
        self.save()

    def save(self) -> None:
        (self.out / "gpu-check.json").write_text(json.dumps(self.results, indent=2, default=str) + "\n")


def run_worker(run: Run, fn: Callable[[Run], dict[str, Any]], result: Path) -> None:
    """One check, in this process: its result, or the error it raised, as JSON."""
    try:
        res = fn(run)
    except Exception as exc:
        res = {"error": f"{type(exc).__name__}: {exc}"[:2000], "traceback": traceback.format_exc()[-4000:]}
    result.write_text(json.dumps(res, default=str))


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _photos(sub: str) -> list[Path]:
    return sorted(p for p in (ROOT / "photos" / sub).glob("*") if p.suffix.lower() in (".jpg", ".png"))


def _jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _distinct(data: bytes, tag: int) -> bytes:
    """The same JPEG with a COM segment naming the copy: identical pixels and work, distinct content."""
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF and 0xE0 <= data[i + 1] <= 0xEF:
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    text = f"preprocess gpu-check copy {tag}".encode()
    return data[:i] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + data[i:]


def _camera_set(run: Run, n: int) -> list[Path]:
    """``n`` distinct 2560x1600 camera JPEGs (4 MP, real EXIF), replicated from photos/camera."""
    dest = run.work / f"camera-{n}"
    if not dest.exists():
        dest.mkdir()
        src = _photos("camera")
        for i in range(n):
            (dest / f"{i:05d}.jpg").write_bytes(_distinct(src[i % len(src)].read_bytes(), i))
    return sorted(dest.iterdir())


def _nvidia_smi(query: str) -> str:
    try:
        return subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=20, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


# --- the checks ----------------------------------------------------------------------------------


def check_env(run: Run) -> dict[str, Any]:
    from preprocess.core.cpus import cpu_lanes
    from preprocess.pipeline.engines import gpu_count
    from preprocess.rows.provenance import software_versions

    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "device": run.device,
            "gpu": _nvidia_smi("name,driver_version,memory.total,compute_cap") or "none",
            "cuda_devices": gpu_count(), "cpu_cores": os.cpu_count(), "cpu_lanes": cpu_lanes(),
            "platform": platform.platform(), "versions": software_versions()}


def check_backends(run: Run) -> dict[str, Any]:
    from preprocess.pipeline.engines.dali import codec_backends

    img = Image.open(_photos("camera")[0]).convert("RGB").resize((640, 400))
    return codec_backends(_jpeg(img), np.asarray(img), device=run.device)


def _engine(run: Run) -> Any:
    """The DALI engine on this device with the libjpeg encoder (nvJPEG on the GPU), baseline JPEG."""
    from preprocess.pipeline.engines.dali import DaliEngine
    from preprocess.pipeline.extractor.manifest import find_manifest
    from preprocess.pipeline.spec import Encode

    return DaliEngine(Encode(encoders=("libjpeg",), progressive=False), find_manifest("mobilenetv2-imagenet").input,
                      device=run.device, max_batch=16)


def _sources(named: dict[str, bytes], resize: Any = None) -> list[Any]:
    from preprocess.pipeline.engines.base import SourceImage
    from preprocess.pipeline.images import probe
    from preprocess.pipeline.spec import Resize

    resize = resize or Resize()
    out = []
    for name, data in named.items():
        info = probe(data, max_pixels=10**9, path=name)
        out.append(SourceImage(name, data, name, info, resize.target(info.width, info.height)))
    return out


def _tables(jpeg: bytes) -> dict[int, list[int]]:
    """A JPEG's quantization tables (Pillow reads them from the DQT segments)."""
    tables: dict[int, list[int]] = getattr(Image.open(io.BytesIO(jpeg)), "quantization", {})
    return {k: list(v) for k, v in tables.items()}


def check_quant(run: Run) -> dict[str, Any]:
    """The engine's JPEG encoder (nvJPEG on the GPU; nvImageCodec's CPU backend in the rehearsal) against
    libjpeg-turbo (Pillow) at the same quality: quantization tables and bytes, on real photos at 1280 px."""
    from preprocess.pipeline.codecs import Candidate, Variant, encode_pillow_jpeg

    eng = _engine(run)
    try:
        prepared = eng.load(_sources({p.name: p.read_bytes() for p in _photos("camera")[:3]})).prepared
        host = [eng.pixels(im) for im in prepared]
        rows = []
        for q in QUALITIES:
            asks = [Candidate(Variant("jpeg", "libjpeg", "420"), q)] * len(prepared)
            nv = eng.encode(prepared, asks)
            nv_opt = eng.finish(prepared, nv)  # optimized Huffman tables, the same coefficients
            lj = [encode_pillow_jpeg(px, q, "420") for px in host]
            t_nv = _tables(nv[0].data)
            t_lj = _tables(lj[0])
            diff = max(abs(a - b) for k in t_lj for a, b in zip(t_nv.get(k, []), t_lj[k], strict=False))
            rows.append({"quality": q, "tables_equal": t_nv == t_lj, "max_table_diff": diff,
                         "luma_table": list(t_nv.get(0, []))[:8], "libjpeg_luma_table": list(t_lj[0])[:8],
                         "bytes_nvjpeg": sum(len(e.data) for e in nv), "bytes_nvjpeg_optimized": sum(map(len, nv_opt)),
                         "bytes_libjpeg": sum(map(len, lj)), "fallbacks": sum(bool(e.library) for e in nv)})
    finally:
        eng.close()
    return {"encoder": "nvJPEG (GPU)" if run.gpu else "nvImageCodec CPU backend", "per_quality": rows,
            "tables_equal_at": sum(r["tables_equal"] for r in rows), "of": len(rows)}


def check_embeddings(run: Run) -> dict[str, Any]:
    """GPU vs CPU embeddings of the same model views, and how far batch size moves them: through the
    Extractor (fixed-shape calls, TF32 off) and through the bare session (what the fix prevents)."""
    from preprocess.pipeline.batches import ModelBatch, similarity
    from preprocess.pipeline.extractor.build import build
    from preprocess.pipeline.extractor.manifest import find_manifest
    from preprocess.pipeline.extractor.session import Extractor
    from preprocess.pipeline.extractor.view import model_view

    built = build(find_manifest("mobilenetv2-imagenet"))
    view = built.manifest.input
    imgs = [Image.open(p).convert("RGB") for p in (_photos("camera") + _photos("opencv"))[:32]]
    batch = model_view(imgs, view)
    cpu = Extractor(built, threads=min(8, os.cpu_count() or 1)).embed(batch)
    out: dict[str, Any] = {"images": len(imgs)}
    if run.gpu:
        import torch

        ex = Extractor(built, device="gpu")
        dev = torch.from_numpy(batch.host()).cuda()
        whole = ex.embed(ModelBatch(dev, batch.layout))
        alone = np.stack([ex.embed(ModelBatch(dev[i:i + 1], batch.layout))[0] for i in range(len(batch))])
        bare = _bare_batch_drift(ex, dev)
        out |= {"gpu_vs_cpu_max_abs": float(np.abs(whole - cpu).max()),
                "gpu_vs_cpu_min_cosine": float(similarity(whole, cpu).min()),
                "batch1_vs_32_max_abs": float(np.abs(whole - alone).max()), "unpadded_batch1_vs_32_max_abs": bare,
                "tf32_on_vs_off_max_abs": _tf32_drift(built, dev, whole)}
    else:
        ex = Extractor(built, threads=2, fixed_batch=8)
        whole = ex.embed(batch)
        alone = np.stack([ex.embed(batch[i:i + 1])[0] for i in range(len(batch))])
        out |= {"cpu_batch1_vs_32_max_abs": float(np.abs(whole - alone).max()),
                "cpu_fixed_vs_free_max_abs": float(np.abs(whole - cpu).max()), "gpu": "needs CUDA"}
    return out


def _bare_batch_drift(ex: Any, dev: Any) -> float:
    """Batch 1 vs 32 through the CUDA session without the fixed shape (one call each)."""
    import onnxruntime as ort

    def call(rows: Any) -> np.ndarray:
        binding = ex.session.io_binding()
        binding.bind_ortvalue_input(ex.input_name, ort.OrtValue.from_dlpack(rows.contiguous()))
        binding.bind_output(ex.output_name, "cpu")
        ex.session.run_with_iobinding(binding)
        out: np.ndarray = binding.copy_outputs_to_cpu()[0]
        return out.reshape(out.shape[0], -1)

    whole = call(dev)
    alone = np.concatenate([call(dev[i:i + 1]) for i in range(dev.shape[0])])
    return float(np.abs(whole - alone).max() / max(float(np.abs(whole).max()), 1e-12))


def _tf32_drift(built: Any, dev: Any, off: np.ndarray) -> float:
    """How far TF32 (the CUDA provider's default) would move the embeddings."""
    import onnxruntime as ort

    from preprocess.pipeline.extractor import session

    opts = session.cuda_options(0) | {"use_tf32": 1}
    sess = ort.InferenceSession(str(built.path), providers=[("CUDAExecutionProvider", opts)])
    feats = sess.run(None, {sess.get_inputs()[0].name: dev.cpu().numpy()})[0].reshape(len(off), -1)
    feats = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    return float(np.abs(feats - off).max())


def check_bad_images(run: Run) -> dict[str, Any]:
    """Bad and odd sources through the DALI engine on this device, against the pillow engine's verdicts."""
    from preprocess.core.errors import InputError
    from preprocess.pipeline.engines import make_engine
    from preprocess.pipeline.extractor.manifest import find_manifest
    from preprocess.pipeline.spec import Encode

    base = Image.open(_photos("opencv")[0]).convert("RGB")
    png, gif = io.BytesIO(), io.BytesIO()
    base.save(png, format="PNG")
    base.convert("P").save(gif, format="GIF")
    good = _jpeg(base)
    flipped = bytearray(good)
    for pos in np.random.default_rng(7).integers(len(good) // 3, len(good) - 2, size=400):
        flipped[int(pos)] ^= 0xFF
    cases = {"good.jpg": good, "good.png": png.getvalue(), "truncated.png": png.getvalue()[: len(png.getvalue()) // 2],
             "frame.gif": gif.getvalue(), "truncated.jpg": good[: len(good) // 2], "bitflip.jpg": bytes(flipped),
             "cmyk.jpg": _jpeg(base.convert("CMYK"))}
    verdicts: dict[str, dict[str, str]] = {}
    engines: tuple[tuple[EngineName, DeviceName], ...] = (("pillow", "cpu"), ("dali", run.device))
    for name, device in engines:
        eng = make_engine(name, device, encode=Encode(), view=find_manifest("mobilenetv2-imagenet").input, max_batch=8)
        got: dict[str, str] = {}
        srcs = []
        for fname, data in cases.items():
            try:
                srcs += _sources({fname: data})
            except InputError as exc:
                got[fname] = f"probe {exc.code}"
        loaded = eng.load(srcs)
        got |= {srcs[i].path: err.code for i, err in loaded.failures}
        got |= {srcs[p.index].path: "ok" for p in loaded.prepared}
        eng.close()
        verdicts[f"{name}-{device}"] = dict(sorted(got.items()))
    a, b = verdicts.values()
    return {"verdicts": verdicts, "agree": a == b, "differ": {k: (a[k], b.get(k)) for k in a if a[k] != b.get(k)}}


def check_shapes(run: Run) -> dict[str, Any]:
    """Tiny and extreme shapes (kept at their size) through the engine: load, its JPEG encoder (nvJPEG on
    the GPU), a decode of the bytes and the model view."""
    from preprocess.pipeline.codecs import Candidate, Variant
    from preprocess.pipeline.spec import Resize

    shapes = [(1, 1), (2, 2), (3, 7), (1, 4000), (4000, 1), (8191, 3), (15, 16), (17, 9)]
    rng = np.random.default_rng(0)
    named = {}
    for w, h in shapes:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
        named[f"{w}x{h}"] = buf.getvalue()
    eng = _engine(run)
    rows = []
    try:
        loaded = eng.load(_sources(named, Resize(mode="none")))
        failed = {i: f"{e.code}: {e.message}" for i, e in loaded.failures}
        for p in loaded.prepared:
            row: dict[str, Any] = {"shape": f"{p.width}x{p.height}"}
            try:
                (enc,) = eng.encode([p], [Candidate(Variant("jpeg", "libjpeg", "420"), 75)])
                row |= {"bytes": len(enc.data), "size_ok": Image.open(io.BytesIO(enc.data)).size == (p.width, p.height),
                        "encoder": f"fallback {enc.library}" if enc.library else "nvimgcodec",
                        "view_ok": tuple(_host(eng.view([enc])).shape[1:]) == (3, 224, 224)}
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            rows.append(row)
        rows += [{"shape": list(named)[i], "error": msg} for i, msg in failed.items()]
    finally:
        eng.close()
    return {"shapes": rows, "all_ok": len(rows) == len(shapes) and all(
        r.get("size_ok") and r.get("view_ok") and r.get("encoder") == "nvimgcodec" for r in rows)}


def _host(batch: Any) -> np.ndarray:
    if isinstance(batch, np.ndarray):
        return batch
    return np.asarray(batch.cpu().numpy())


def check_pytest(run: Run) -> dict[str, Any]:
    timeout = max(30, int(run.left() - 5))  # this check's process has what the run could spare for it
    # Only the files that hold GPU tests: the others may import dev-only packages (playwright, moto ...)
    # that are not staged, and one collection error would stop the whole run.
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py") if "mark.gpu" in p.read_text())
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rfEs", *files]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
        text, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        text, rc = f"{partial}\nTIMED OUT after {timeout} s", -1
    (run.out / "pytest-gpu.txt").write_text(text)
    lines = [ln for ln in str(text).splitlines() if ln.strip()]
    summary = next((ln for ln in reversed(lines) if " in " in ln and ("passed" in ln or "failed" in ln
                                                                      or "skipped" in ln or "error" in ln)), "")
    return {"returncode": rc, "summary": summary.strip("= "), "files": files,
            "failed": [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]}


def _gate_files(n: int) -> list[Path]:
    return [p for p in _photos("camera") + _photos("opencv") if p.suffix == ".jpg"][:n]


def check_gate(run: Run) -> dict[str, Any]:
    """The gate with the DALI engine on this device against the pillow engine (the CPU path), per spec:
    the quality chosen per image, the similarity, the bytes, and which encoders made the rows."""
    from preprocess.pipeline.process import Processor, plan
    from preprocess.sources.files import read_source

    files = _gate_files(48 if run.gpu else 8)
    out: dict[str, Any] = {"images": len(files)}
    for label, spec in (("gpu.toml (libjpeg/nvJPEG, baseline)", GPU_SPEC), ("camera.toml (jpegli, progressive)",
                                                                             DEFAULT_SPEC)):
        rows: dict[str, dict[str, Any]] = {}
        encoders: dict[str, dict[str, int]] = {}
        engines: tuple[tuple[EngineName, DeviceName], ...] = (("pillow", "cpu"), ("dali", run.device))
        for engine, device in engines:
            proc = Processor(plan(str(spec), engine, device), job_id="gpu-check")
            try:
                res = proc.process([read_source(f, max_bytes=1 << 30) for f in files])
            finally:
                proc.close()
            rows[engine] = {r.source_path: r for r in res.items}
            encoders[engine] = dict(Counter(r.encoder for r in res.items))
        a, b = rows["pillow"], rows["dali"]
        dq = [b[k].quality - a[k].quality for k in a if k in b]
        out[label] = {"same_quality": sum(d == 0 for d in dq), "of": len(dq),
                      "quality_diff_mean": round(float(np.mean(dq)), 2) if dq else None,
                      "quality_diff_max": int(max(map(abs, dq))) if dq else None,
                      "pillow_quality_mean": round(float(np.mean([r.quality for r in a.values()])), 2),
                      "dali_quality_mean": round(float(np.mean([r.quality for r in b.values()])), 2),
                      "pillow_bytes": sum(r.bytes for r in a.values()), "dali_bytes": sum(r.bytes for r in b.values()),
                      "dali_similarity_min": round(min((r.similarity for r in b.values()), default=0.0), 5),
                      "encoders": encoders}
    return out


class MemorySampler:
    """Device memory in use (whole device: DALI, nvImageCodec, onnxruntime and torch alike), sampled."""

    def __init__(self, gpu: bool) -> None:
        self.gpu, self.peak, self._stop = gpu, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> MemorySampler:
        if self.gpu:
            self._thread.start()
        return self

    def _sample(self) -> None:
        import torch

        while not self._stop.is_set():
            free, total = torch.cuda.mem_get_info()
            self.peak = max(self.peak, total - free)
            self._stop.wait(0.2)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.gpu:
            self._thread.join()


@dataclass(frozen=True)
class Config:
    """One throughput measurement: a spec on an engine, with lanes and lane batch (None: the defaults)."""

    label: str
    spec: Path
    engine: EngineName = "dali"
    lanes: int | None = None
    batch: int | None = None


def job_rate(run: Run, paths: list[Path], cfg: Config, device: DeviceName) -> dict[str, Any]:
    """The job's path (reader thread, probe thread, lanes, dataset write) and its commit, as
    `preprocess run` runs them; plan, engines, model and a warm-up batch before the clock."""
    from functools import partial

    from preprocess.core.progress import SilentProgress
    from preprocess.drivers.ingest import Ingest, JobInfo, read_files
    from preprocess.drivers.run import run_batches
    from preprocess.pipeline.process import Processor, plan
    from preprocess.sources.files import batched, read_source
    from preprocess.store import DatasetWriter, open_repo

    p = plan(str(cfg.spec), cfg.engine, device)
    proc = Processor(p, job_id=uuid.uuid4().hex, lanes=cfg.lanes, lane_batch=cfg.batch)
    store = run.work / f"store-{uuid.uuid4().hex[:8]}.icechunk"
    ingest = Ingest(DatasetWriter(open_repo(str(store), create=True), "main"), p,
                    JobInfo(kind="run", roots=[str(paths[0].parent)], store=str(store)))
    try:
        warm = paths[: proc.batch_size]
        proc.process([read_source(f, max_bytes=1 << 30) for f in warm])  # pipelines, cuDNN, arenas; the first guess
        with MemorySampler(device == "gpu") as mem:
            t0 = time.perf_counter()
            run_batches(proc, ingest, list(batched(paths, proc.batch_size)),
                        read=partial(read_files, max_bytes=1 << 30), progress=SilentProgress())
            s = ingest.commit("gpu-check", engine=proc)
            seconds = time.perf_counter() - t0
        return {"images_per_s": round(len(paths) / seconds, 1), "seconds": round(seconds, 2), "images": len(paths),
                "lanes": proc.lanes, "lane_batch": proc.chunk, "stored": s.stored, "failed": s.failed,
                "probes_per_image": round(s.probes_mean or 0.0, 2), "quality_mean": round(s.quality_mean or 0, 1),
                "bytes_out": s.bytes_out, "peak_device_memory_gib": round(mem.peak / 2**30, 2),
                "ms_per_image_by_stage": {k: round(v / len(paths) * 1000, 3) for k, v in sorted(s.timings.items())},
                "encode_fallbacks": proc.describe().get("encode_fallbacks", "")}
    finally:
        proc.close()
        ingest.close()
        shutil.rmtree(store, ignore_errors=True)


def check_throughput(run: Run) -> dict[str, Any]:
    """images/s end to end: pipelines/gpu.toml at lane batch 32 and 128 with 1 and 3 lanes, the default
    spec (jpegli + mozjpeg on the CPU) at 128 x 3, and the CPU path (pillow engine) on this machine."""
    n = run.images
    paths = _camera_set(run, n)
    out: dict[str, Any] = {"images": n, "source": "photos/camera 2560x1600 JPEG (4 MP, EXIF), distinct copies"}
    # The target first, then the CPU path (for the >= 25x), then the rest, so a short budget keeps those.
    configs = [Config("gpu.toml b128 x3", GPU_SPEC, lanes=3, batch=128),
               Config("cpu pillow (all cores)", GPU_SPEC, engine="pillow"),
               Config("gpu.toml b128 x1", GPU_SPEC, lanes=1, batch=128),
               Config("gpu.toml b32 x3", GPU_SPEC, lanes=3, batch=32),
               Config("gpu.toml b32 x1", GPU_SPEC, lanes=1, batch=32),
               Config("camera.toml b128 x3", DEFAULT_SPEC, lanes=3, batch=128)]
    if not run.gpu:  # the rehearsal: the same configurations, scaled to two cores
        configs = [Config(c.label.replace("128", "8").replace("32", "4"), c.spec, c.engine, c.lanes,
                          c.batch and (8 if c.batch == 128 else 4)) for c in configs[:4]]
    for cfg in configs:
        if run.left() < 25:
            out[cfg.label] = {"skipped": "out of time"}
            continue
        log(f"  throughput {cfg.label} ...")
        cpu = cfg.engine == "pillow"  # the CPU path: fewer images (it is 25x slower, the target says)
        some = paths[: min(n, 256 if run.gpu else 16)] if cpu else paths
        out[cfg.label] = job_rate(run, some, cfg, "cpu" if cpu else run.device)
        log(f"  throughput {cfg.label}: {out[cfg.label]['images_per_s']} img/s")
    return out


def check_ceiling(run: Run) -> dict[str, Any]:
    from preprocess.pipeline.engines.dali import decode_throughput

    blobs = [p.read_bytes() for p in _camera_set(run, run.images)]
    out: dict[str, Any] = {"images": len(blobs)}
    for label, load in (("hardware+cuda (hw_decoder_load 0.65)", 0.65), ("cuda only (hw_decoder_load 0)", 0.0)):
        rates = [decode_throughput(blobs, device=run.device, batch=128 if run.gpu else 8, hw_decoder_load=load)
                 for _ in range(2)]
        out[label] = round(statistics.median(rates), 1)
        if not run.gpu:
            break
    return out


# --- the table -----------------------------------------------------------------------------------


def _get(d: Any, *keys: str, default: Any = "-") -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _status(res: Any) -> str | None:
    if not isinstance(res, dict):
        return "not run"
    if "error" in res:
        return "ERROR " + str(res["error"])[:150]
    if "skipped" in res:
        return "skipped: " + str(res["skipped"])
    return None


def _backends(b: dict[str, Any]) -> str:
    def side(d: dict[str, str]) -> str:
        return ", ".join(f"{k} {v.split(' ')[0]}" for k, v in d.items())

    return f"decode: {side(b['decode'])}; encode: {side(b['encode'])}"


def _quant(q: dict[str, Any]) -> str:
    sizes = " ".join(f"q{x['quality']}:{x['bytes_nvjpeg'] // 1000}/{x['bytes_nvjpeg_optimized'] // 1000}/"
                     f"{x['bytes_libjpeg'] // 1000}k" for x in q["per_quality"][::2])
    return (f"{q['encoder']} vs libjpeg-turbo: tables equal at {q['tables_equal_at']}/{q['of']} qualities; "
            f"KB nvjpeg/optimized/libjpeg {sizes}")


def _embeddings(e: dict[str, Any]) -> str:
    if "gpu_vs_cpu_max_abs" not in e:
        return f"CPU only: batch 1 vs 32 max {e['cpu_batch1_vs_32_max_abs']:.1e}; GPU needs CUDA"
    return (f"gpu vs cpu max {e['gpu_vs_cpu_max_abs']:.1e} (min cos {e['gpu_vs_cpu_min_cosine']:.6f}); "
            f"batch 1 vs 32 max {e['batch1_vs_32_max_abs']:.1e} (unpadded {e['unpadded_batch1_vs_32_max_abs']:.1e}); "
            f"TF32 would move {e['tf32_on_vs_off_max_abs']:.1e}")


def _bad(b: dict[str, Any]) -> str:
    mine = list(b["verdicts"].values())[1]
    head = "same verdicts as pillow: " if b["agree"] else f"DIFFER from pillow {b['differ']}: "
    return head + ", ".join(f"{k}={v}" for k, v in mine.items())


def _shapes(s: dict[str, Any]) -> str:
    def one(x: dict[str, Any]) -> str:
        ok = x.get("size_ok") and x.get("view_ok")
        return str(x["shape"]) + ("" if ok else "!") + (" (fallback)" if "fallback" in str(x.get("encoder")) else "")

    return ("all ok: " if s["all_ok"] else "PROBLEMS: ") + ", ".join(one(x) for x in s["shapes"])


def _gate(label: str, g: dict[str, Any]) -> str:
    ratio = g["dali_bytes"] / max(g["pillow_bytes"], 1)
    return (f"{label}: same quality {g['same_quality']}/{g['of']}, mean q pillow {g['pillow_quality_mean']} "
            f"dali {g['dali_quality_mean']} (max |dq| {g['quality_diff_max']}), bytes dali/pillow {ratio:.3f}, "
            f"rows by {g['encoders']['dali']}")


def _rate(label: str, res: dict[str, Any]) -> str:
    if "images_per_s" not in res:
        return f"{label:22} {_status(res) or res}"
    extra = f", device memory {res['peak_device_memory_gib']} GiB" if res.get("peak_device_memory_gib") else ""
    extra += f", {res['encode_fallbacks']}" if res.get("encode_fallbacks") else ""
    return f"{label:22} {res['images_per_s']:8.1f}  (probes/image {res['probes_per_image']}{extra})"


def _targets(r: dict[str, Any]) -> str | None:
    t = r.get("throughput", {})
    rate = _get(t, "gpu.toml b128 x3", "images_per_s", default=None)
    if not isinstance(rate, float):
        return None
    parts = [f"gpu.toml b128 x3: {rate:.0f} img/s (target >= 2000)"]
    ceiling = _get(r, "ceiling", "hardware+cuda (hw_decoder_load 0.65)", default=None)
    if isinstance(ceiling, float) and ceiling > 0:
        parts.append(f"{rate / ceiling:.0%} of the decode ceiling (>= 60%)")
    cpu = _get(t, "cpu pillow (all cores)", "images_per_s", default=None)
    if isinstance(cpu, float) and cpu > 0:
        parts.append(f"{rate / cpu:.1f}x the CPU path (>= 25x)")
    return ", ".join(parts)


def table(run: Run) -> str:
    """The short table printed last: one line per check (more for the gate and throughput)."""
    r = run.results
    lines = [f"gpu-check on {_get(r, 'env', 'gpu')} ({run.device}), {_get(r, 'env', 'date')}, "
             f"{_get(r, 'env', 'cpu_cores')} cores"]

    def row(name: str, text: Callable[[dict[str, Any]], str | list[str]], label: str = "") -> None:
        res = r.get(name)
        try:
            shown = _status(res) or text(res)  # type: ignore[arg-type]
        except Exception as exc:  # a missing key must not lose the rest of the table
            shown = f"(unreadable: {type(exc).__name__} {exc})"
        for k, line in enumerate([shown] if isinstance(shown, str) else shown):
            lines.append(f"{(label or name) if k == 0 else '':13} {line}")

    row("backends", _backends)
    row("quant", _quant, "quant tables")
    row("embeddings", _embeddings)
    row("bad images", _bad)
    row("shapes", _shapes)
    row("pytest -m gpu", lambda t: f"{t['summary']} (exit {t['returncode']})")
    row("gate", lambda g: [_gate(k, v) for k, v in g.items() if isinstance(v, dict)])
    row("throughput", lambda t: [_rate(k, v) for k, v in t.items() if isinstance(v, dict)], "images/s")
    row("ceiling", lambda c: ", ".join(f"{k}: {v} img/s" for k, v in c.items() if k not in ("images", "seconds")))
    targets = _targets(r)
    if targets:
        lines.append(f"{'targets':13} {targets}")
    return "\n".join(lines)


# name -> (function, seconds it needs to be worth starting, the most it may take)
CHECKS: dict[str, tuple[Callable[[Run], dict[str, Any]], float, float]] = {
    "backends": (check_backends, 5, 40), "quant": (check_quant, 10, 60), "embeddings": (check_embeddings, 15, 90),
    "bad images": (check_bad_images, 10, 60), "shapes": (check_shapes, 10, 60),
    "pytest -m gpu": (check_pytest, 60, 260), "gate": (check_gate, 30, 100), "throughput": (check_throughput, 40, 400),
    "ceiling": (check_ceiling, 10, 60)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="rehearse on a machine without CUDA (CPU forms only)")
    ap.add_argument("--budget", type=float, default=270.0,
                    help="seconds for every check together (the device call also stages and unpacks: 8 min in all)")
    ap.add_argument("--images", type=int, default=0, help="images per throughput run (default: 1024, --cpu 24)")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "out" / "gpu-check"))
    ap.add_argument("--only", default="", help="comma-separated checks to run (default: all)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--work", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.images = args.images or (24 if args.cpu else 1024)
    run = Run(args)
    if args.worker:
        import icechunk

        icechunk.set_logs_filter("error")  # its local-storage WARN on every open, not news here
        run_worker(run, CHECKS[args.worker][0], Path(args.result))
        return
    if not run.gpu:
        log("rehearsal on the CPU: CUDA-only parts are skipped or replaced by their CPU forms")
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    try:
        run.results["env"] = check_env(run)
        run.save()
        todo = [name for name in CHECKS if not only or name in only]
        for k, name in enumerate(todo):
            _, needs, cap = CHECKS[name]
            later = 1.5 * sum(CHECKS[n][1] for n in todo[k + 1:])  # keep time for the checks after this one
            run.check(name, needs=needs, cap=min(cap, max(needs, run.left() - later)))
    finally:
        shutil.rmtree(run.work, ignore_errors=True)
        text = table(run)
        (run.out / "gpu-check-table.txt").write_text(text + "\n")
        run.save()
        print("\n" + text, flush=True)


if __name__ == "__main__":
    main()

"""The benchmark: the project against a plain Pillow baseline, on the same real photos, in ONE run.

Contenders run interleaved (round-robin, each in a fresh subprocess so peak RSS is its own) on the
same files, doing the same work: resize to the default spec, adaptive quality with the feature gate,
the chosen candidate in the spec's stored form. The files: the 12 camera photos and more frames of
their scenes (:func:`_make_set`).

  baseline     a straightforward per-image loop (scripts/bench_baseline.py): open, EXIF transpose, full
               decode, Lanczos resize, and per probe encode + decode + single-image onnxruntime calls for
               the spec's views (two for the whole image, one per crop: the same views as the project),
               plain bisection over the spec's ladder, mozjpeg's rewrite of the chosen one; on
               stock Pillow from PyPI, in its own environment (.bench/baseline, set up by scripts/bench
               from bench/baseline-requirements.txt).
  baseline-simd  the same script in the project's environment, on pillow-simd: how much of the
               gain is pillow-simd's and how much the pipeline's.
  pillow       the project's pillow engine through the shared Processor, + dataset write and commit.
  dali-cpu     the project's DALI engine on the CPU (same graph as the GPU one).
  dali-gpu     the DALI GPU engine (GPU machines only).
  decode-only  DALI decode alone on the same files: the ceiling (GPU machines only).
  ray-local    the Ray path on this machine (`run --ray local`, pillow engine): the whole job (actor
               start + model load, read tasks, actors, forked chunk writes, merge, commit); Ray itself is
               started before the clock. Only when ray is importable (preprocess[ray]).

Then, once: the watch daemon's close-to-commit latency (median, p95): files dropped one by one
into a watched folder, timed from each file's close() until a new reader sees its committed row.
And the bytes (scripts/bench_bytes.py): what the default and the AVIF spec store on the bundled photos
and photos/more (distinct photos, not the frames), against an exhaustive per-image search (every quality of the
ladder, every allowed encoder) and an independent decode + model check of every stored image.

Then the faces (issue 22): the training reader against a plain PIL + DataLoader loop over the same version
exported to files (scripts/bench_reader.py), `tune` with its defaults against `run` on the same 19 photos
and `tune --from` (scripts/bench_tune.py), and how fast the command line answers, with and without bytecode
(scripts/bench_cli.py); and on a history of 300 commits, which commit added each row from the counts
every commit records against reading every snapshot (scripts/bench_history.py).

Usage: scripts/bench [--quick] [--images N] [--rounds R] [--contenders a,b,...] [--out FILE]
                     [--sections throughput,watch,bytes,reader,tune,cli,history]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from preprocess.pipeline.devices import DeviceName, EngineName


# --- workers (run in a subprocess each) ----------------------------------------------------------


def _files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def _megapixels(paths: list[Path]) -> float:
    from PIL import Image

    total = 0
    for p in paths:
        with Image.open(p) as img:
            total += img.size[0] * img.size[1]
    return total / 1e6


def worker_project(paths: list[Path], warm: list[Path], engine: EngineName, device: DeviceName) -> dict[str, Any]:
    """The project's path, as `preprocess run` runs it after set-up (job.run_batches: reader thread,
    Processor lanes, dataset write) and its one commit; plan, model load and store open before the clock."""
    import uuid
    from functools import partial

    from preprocess.core.progress import SilentProgress
    from preprocess.drivers.ingest import Ingest, JobInfo, read_files
    from preprocess.drivers.run import run_batches
    from preprocess.pipeline.process import Processor, plan
    from preprocess.sources.files import batched, read_source
    from preprocess.store import DatasetWriter, open_repo

    p = plan(None, engine, device)
    proc = Processor(p, job_id=uuid.uuid4().hex)
    size = proc.batch_size  # what a job reads at once (lanes x device batch on the GPU)
    for batch in batched(warm, size):
        proc.process([read_source(f, max_bytes=1 << 30) for f in batch])
    # The warm-up (yesterday's frames of the same scenes) seeds the first guesses, as a branch's recent rows
    # seed a job's: the steady state of a fleet's daily jobs. A fresh store's first batch starts blind.
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-"))
    store = str(tmp / "s.icechunk")
    ingest = Ingest(DatasetWriter(open_repo(store, create=True), "main"), p,
                    JobInfo(kind="run", roots=[str(paths[0].parent)], store=store))
    t0 = time.perf_counter()
    read = partial(read_files, max_bytes=p.spec.limits.max_file_bytes)
    run_batches(proc, ingest, list(batched(paths, size)), read=read, progress=SilentProgress())
    s = ingest.commit("bench", engine=proc)
    seconds = time.perf_counter() - t0
    proc.close()
    ingest.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return {"seconds": seconds, "probes": s.probes_mean or 0.0, "bytes_out": s.bytes_out, "stages": s.timings,
            "stored": s.stored}


def worker_ray(paths: list[Path]) -> dict[str, Any]:
    """The Ray path (`--ray local`): run_ray_job end to end; ray.init before the clock."""
    import ray

    from preprocess.drivers.ray.job import RayOptions, run_ray_job
    from preprocess.drivers.run import JobOptions

    ray.init(include_dashboard=False, log_to_driver=False)
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-"))
    t0 = time.perf_counter()
    s = run_ray_job(JobOptions(sources=[str(p) for p in paths], store=str(tmp / "s.icechunk"), engine="pillow",
                               device="cpu"), RayOptions(address="local"))
    seconds = time.perf_counter() - t0
    shutil.rmtree(tmp, ignore_errors=True)
    return {"seconds": seconds, "probes": s.probes_mean or 0.0, "bytes_out": s.bytes_out, "stages": s.timings,
            "stored": s.stored}


def worker_decode_only(paths: list[Path], device: DeviceName) -> dict[str, Any]:
    from preprocess.pipeline.engines.dali import decode_throughput

    blobs = [f.read_bytes() for f in paths]
    rate = decode_throughput(blobs, device=device, batch=64)
    return {"seconds": len(paths) / rate, "probes": 0.0, "bytes_out": 0, "stages": {}}


def run_worker(args: argparse.Namespace) -> None:
    import icechunk

    icechunk.set_logs_filter("error")
    paths = _files(Path(args.dir))
    warm = _files(Path(args.dir).parent / "warm")
    name = args.worker
    if name == "decode-only":
        res = worker_decode_only(paths, "gpu")
    elif name == "ray-local":
        res = worker_ray(paths)
    else:
        engines: dict[str, tuple[EngineName, DeviceName]] = {"pillow": ("pillow", "cpu"), "dali-cpu": ("dali", "cpu"),
                                                             "dali-gpu": ("dali", "gpu")}
        engine, device = engines[name]
        res = worker_project(paths, warm, engine, device)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(args.result).write_text(json.dumps(res))


# --- driver --------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    from preprocess.rows.provenance import software_versions

    return software_versions()


BASELINE_PYTHON = ROOT / ".bench" / "baseline" / "bin" / "python"
SECTIONS = ("throughput", "watch", "bytes", "reader", "tune", "cli", "history")


def _command(contender: str, baseline_python: str) -> list[str]:
    """How to start a contender's subprocess (``--dir`` and ``--result`` are appended)."""
    if not contender.startswith("baseline"):
        return [sys.executable, __file__, "--worker", contender]
    from preprocess.pipeline.extractor.build import build
    from preprocess.pipeline.extractor.manifest import find_manifest
    from preprocess.pipeline.spec import default_spec_path, load_spec

    spec = load_spec(default_spec_path())
    primary = spec.encode.variants()[0]
    assert spec.resize.mode == "long-side" and primary.format == "jpeg" and primary.chroma == "420", \
        "the baseline script's spec"
    assert spec.gate.views.whole is not None and spec.gate.views.tiles is None and spec.gate.crops.grids == (2,) \
        and len(spec.gate.models) == 1, "the baseline script's views: whole, and the quadrants + centre crops"
    prefix = [sys.executable]
    if contender == "baseline":
        if not Path(baseline_python).exists():
            sys.exit(f"no stock-Pillow Python at {baseline_python}: run scripts/bench, which sets up "
                     f"{BASELINE_PYTHON.parent.parent}, or pass --baseline-python")
        # Nothing of the project's environment may leak in (PYTHONPATH could put pillow-simd first).
        prefix = ["env", "-u", "PYTHONPATH", baseline_python]
    return [*prefix, str(ROOT / "scripts" / "bench_baseline.py"),
            "--model", str(build(find_manifest(spec.gate.model)).path), "--long-side", str(spec.resize.size),
            "--ladder", ",".join(map(str, spec.quality.ladder())), "--threshold", str(spec.gate.views.whole),
            "--crops-threshold", str(spec.gate.views.crops or 0.0), "--encoder", primary.encoder,
            "--stored-form", "mozjpeg" if primary.format == "jpeg" and spec.encode.progressive else "as-encoded"]


def _gpu_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False)
        return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _frame(data: bytes, k: int) -> bytes:
    """Frame ``k`` of a fixed camera looking at the photo's scene: the scene shifted by ``8k`` px at the
    camera's resolution (the strip uncovered at the right and bottom mirrors the edge), JPEG q92 with the
    photo's EXIF: other pixels, the same scene, the same size as every frame the camera sends."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        s = 8 * k
        shifted = np.asarray(img.convert("RGB"))[s:, s:]
        frame = Image.fromarray(np.pad(shifted, ((0, s), (0, s), (0, 0)), mode="symmetric"))
        assert frame.size == img.size
        buf = io.BytesIO()
        frame.save(buf, format="JPEG", quality=92, exif=img.info.get("exif", b""))
    return buf.getvalue()


def _make_set(n: int, dest: Path) -> list[Path]:
    """``n`` camera photos (2560x1600 with EXIF): the 12 of photos/camera, then more frames of their
    scenes (:func:`_frame`), round-robin: what a fleet of fixed cameras sends. Beside them, ``warm/``:
    one more frame of each scene, which the project's contenders process before the clock (as a job
    starts from its branch's recent rows); the baseline runs its first images once before the clock."""
    src = _files(ROOT / "photos" / "camera")
    if not src:
        sys.exit("no photos: run scripts/fetch-photos")
    dest.mkdir(parents=True, exist_ok=True)
    (dest.parent / "warm").mkdir(exist_ok=True)
    for i in range(n):
        p = src[i % len(src)]
        data = p.read_bytes()
        (dest / f"{i:04d}-{p.name}").write_bytes(data if i < len(src) else _frame(data, i // len(src)))
    for p in src:
        (dest.parent / "warm" / p.name).write_bytes(_frame(p.read_bytes(), n // len(src) + 1))
    return _files(dest)


def _rounds(commands: dict[str, list[str]], work: Path, rounds: int, n: int) -> dict[str, list[dict[str, Any]]]:
    """Every contender once per round, interleaved, each in a fresh process; their result files."""
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in commands}
    for r in range(rounds):
        for c, command in commands.items():
            res_file = work / f"{c}-{r}.json"
            t = time.perf_counter()
            proc = subprocess.run([*command, "--dir", str(work / "photos"), "--result", str(res_file)], cwd=ROOT,
                                  check=False)
            if proc.returncode != 0:
                print(f"  round {r + 1}: {c} FAILED (exit {proc.returncode})", file=sys.stderr)
                continue
            res = json.loads(res_file.read_text())
            runs[c].append(res)
            print(f"  round {r + 1}: {c:12} {n / res['seconds']:8.2f} img/s "
                  f"(wall {time.perf_counter() - t:.1f} s)", file=sys.stderr)
    return runs


def _summarize(runs: dict[str, list[dict[str, Any]]], n: int, mp: float, bytes_in: int) -> dict[str, Any]:
    """Per contender: medians over its rounds (rate, stage times per image), probes, bytes, memory."""
    summary: dict[str, Any] = {}
    for c, rs in runs.items():
        if not rs:
            continue
        secs = statistics.median(r["seconds"] for r in rs)
        stages: dict[str, float] = {}
        for k in {k for r in rs for k in r["stages"]}:
            stages[k] = round(statistics.median(r["stages"].get(k, 0.0) for r in rs) / n * 1000, 3)
        summary[c] = {"images_per_s": round(n / secs, 3), "megapixels_per_s": round(mp / secs, 2),
                      "seconds": round(secs, 3), "probes_per_image": round(rs[0]["probes"], 2),
                      "bytes_in": bytes_in, "bytes_out": rs[0]["bytes_out"],
                      "peak_rss_mb": round(max(r["peak_rss_mb"] for r in rs), 1),
                      "ms_per_image_by_stage": dict(sorted(stages.items()))}
        if "pillow" in rs[0]:  # the baselines say which Pillow they ran on
            summary[c]["pillow"] = rs[0]["pillow"]
    return summary


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="12 images, 1 round, no ray-local unless named (under a minute on 2 cores)")
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--contenders", default="")
    ap.add_argument("--out", default="")
    ap.add_argument("--watch-files", type=int, default=24, help="files for the watch latency (0: skip)")
    ap.add_argument("--no-bytes", action="store_true", help="skip the bytes benchmark (scripts/bench_bytes.py)")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"what to run, of {','.join(SECTIONS)} (default: all); a subset writes "
                         "<date>-<cpu|gpu>-<sections>.json")
    ap.add_argument("--baseline-python", default=str(BASELINE_PYTHON),
                    help="a Python with stock Pillow, numpy and onnxruntime for the baseline (default: the "
                         "environment scripts/bench sets up)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    return ap.parse_args()


def _stored_bytes(quick: bool) -> dict[str, Any]:
    """The bytes benchmark (scripts/bench_bytes.py) on the bundled photos."""
    import bench_bytes  # scripts/, beside this file

    print("  bytes: the default and AVIF specs on the bundled photos, against the exhaustive search",
          file=sys.stderr)
    return bench_bytes.main(["--images", "3", "--specs", "camera.toml"] if quick else ["--oracle-jpeg"])


def _faces(sections: list[str], quick: bool) -> dict[str, Any]:
    """The reader, tune, the command line and a long history (scripts/bench_reader.py, bench_tune.py, bench_cli.py,
    bench_history.py)."""
    import bench_cli
    import bench_history
    import bench_reader
    import bench_tune

    out: dict[str, Any] = {}
    if "reader" in sections:
        print("  reader: loader() vs a plain PIL + DataLoader loop over the same version as files", file=sys.stderr)
        out["reader"] = bench_reader.main(["--rounds", "1" if quick else "3"])
    if "tune" in sections:
        print("  tune: defaults vs run on 19 photos, whole processes", file=sys.stderr)
        out["tune"] = bench_tune.main(["--rounds", "1", "--no-every"] if quick else ["--rounds", "2"])
    if "cli" in sections:
        print("  cli: --version, log, show, branch; with and without bytecode", file=sys.stderr)
        out["cli"] = bench_cli.main(["--repeats", "3" if quick else "5"])
    if "history" in sections:
        print("  history: which commit added each row, recorded counts vs every snapshot read", file=sys.stderr)
        out["history"] = bench_history.main(["--commits", "60" if quick else "300"])
    return out


def _throughput(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]]:
    """The contenders' rounds and the watch latency: (summary, watch, the photo set's facts)."""
    sys.path.insert(0, str(ROOT))
    from preprocess.pipeline.engines import gpu_count

    has_gpu = gpu_count() > 0
    contenders = [c for c in args.contenders.split(",") if c] or (
        ["baseline", "baseline-simd", "pillow", "dali-cpu"] + (["dali-gpu", "decode-only"] if has_gpu else [])
        + (["ray-local"] if importlib.util.find_spec("ray") and not args.quick else []))
    commands = {c: _command(c, args.baseline_python) for c in contenders} if "throughput" in args.sections else {}
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    paths = _make_set(args.images, work / "photos")
    mp = _megapixels(paths)
    bytes_in = sum(p.stat().st_size for p in paths)
    print(f"bench: {len(paths)} images ({mp:.0f} MP, {bytes_in / 1e6:.1f} MB), {args.rounds} round(s), "
          f"contenders: {', '.join(commands) or 'none'}", file=sys.stderr)
    runs = _rounds(commands, work, args.rounds, len(paths))
    watch = (_watch_latency(args.watch_files, work, "dali" if has_gpu else "pillow")
             if args.watch_files and "watch" in args.sections else None)
    shutil.rmtree(work, ignore_errors=True)
    summary = _summarize(runs, len(paths), mp, bytes_in)
    base = summary.get("baseline", {}).get("images_per_s")
    simd = summary.get("baseline-simd", {}).get("images_per_s")
    for s in summary.values():
        s["vs_baseline"] = round(s["images_per_s"] / base, 2) if base else None
        s["vs_baseline_simd"] = round(s["images_per_s"] / simd, 2) if simd else None
    if "decode-only" in summary and "dali-gpu" in summary:
        summary["dali-gpu"]["of_decode_ceiling"] = round(
            summary["dali-gpu"]["images_per_s"] / summary["decode-only"]["images_per_s"], 3)
    if "pillow" in summary and "dali-gpu" in summary:  # the GPU target: >= 20x this machine's CPU engine
        summary["dali-gpu"]["vs_cpu_engine"] = round(
            summary["dali-gpu"]["images_per_s"] / summary["pillow"]["images_per_s"], 2)
    photos = {"count": len(paths), "megapixels": round(mp, 1), "bytes": bytes_in,
              "source": "photos/camera (2560x1600 JPEG with EXIF), then frames of the same scenes (shifted 8 px "
                        "per frame, JPEG q92)"}
    return summary, watch, photos


def main() -> None:
    args = _args()
    if args.worker:
        run_worker(args)
        return
    if args.quick:
        args.images, args.rounds, args.watch_files = 12, 1, 6
    args.sections = [x for x in args.sections.split(",") if x]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        sys.exit(f"bench: unknown sections {sorted(unknown)}; choose among {','.join(SECTIONS)}")
    gpu = _gpu_name()
    summary, watch, photos = (_throughput(args) if {"throughput", "watch"} & set(args.sections)
                              else ({}, None, {}))
    stored_bytes = None if args.no_bytes or "bytes" not in args.sections else _stored_bytes(args.quick)
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpu_cores": os.cpu_count(), "platform": platform.platform(), "gpu": gpu or "none",
                    "processor": platform.processor(), "cpu": _cpu(), "load_average_at_start": os.getloadavg()},
        "versions": _versions(), "sections": args.sections, "photos": photos, "rounds": args.rounds,
        "spec": "pipelines/camera.toml", "results": summary,
        "stage_times": "ms per image of busy time per stage, summed over threads: the pillow engine's lanes "
                       "work in parallel, so its stages add up to more than its wall time per image",
        "watch_close_to_commit_s": watch, "bytes": stored_bytes, **_faces(args.sections, args.quick),
    }
    _print(result)
    subset = "" if set(args.sections) == set(SECTIONS) else "-" + "-".join(args.sections)
    out = Path(args.out) if args.out else (
        ROOT / "bench" / "results" / f"{datetime.now(UTC):%Y-%m-%d}-{'gpu' if gpu else 'cpu'}"
        f"{'-quick' if args.quick else ''}{subset}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}", file=sys.stderr)


def _watch_latency(n: int, work: Path, engine: str) -> dict[str, Any] | None:
    """The daemon's close-to-commit latency on ``n`` distinct camera crops (quiet 0.5 s, commit every 1 s)."""
    from PIL import Image

    from preprocess.drivers.watch.bench import close_to_commit_latency

    src = _files(ROOT / "photos" / "camera")
    blobs = []
    for i in range(n):
        img = Image.open(src[i % len(src)]).convert("RGB")
        off = 16 * (i // len(src))
        buf = io.BytesIO()
        img.crop((off, off, off + 2400, off + 1500)).save(buf, format="JPEG", quality=90)
        blobs.append(buf.getvalue())
    print(f"  watch: close-to-commit latency over {n} files ({engine})", file=sys.stderr)
    try:
        rep = close_to_commit_latency(blobs, workdir=work / "watch", engine=engine, quiet=0.5,
                                      commit_interval=1.0)
    except Exception as exc:  # the throughput results still stand
        print(f"  watch latency FAILED: {exc}", file=sys.stderr)
        return None
    return {"median": round(rep.median, 3), "p95": round(rep.p95, 3), "max": round(rep.max, 3),
            "files": n, "settings": rep.settings}


def _cpu() -> str:
    """The CPU as /proc/cpuinfo names it, with its family/model and widest vector unit: the ratios move with
    it (a model row costs 7 ms on a Zen 4 core with AVX-512, 9.7 on a Zen 2 core; bench/NOTES.md)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    info: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
        if not line.strip():
            break  # the first CPU says it for all
    flags = set(info.get("flags", "").split())
    vector = next((f for f in ("avx512f", "avx2", "avx", "sse4_2") if f in flags), "none")
    name, family, model = info.get("model name", "unknown"), info.get("cpu family", "?"), info.get("model", "?")
    return f"{name} (family {family}, model {model}, {vector})"


def _print(result: dict[str, Any]) -> None:
    rows = result["results"]
    print(f"\n{result['photos'].get('count', 0)} photos, {result['machine']['cpu_cores']} cores "
          f"({result['machine'].get('cpu', '?')}), GPU: "
          f"{result['machine']['gpu']}, {result['date']}, load {result['machine']['load_average_at_start'][0]:.1f}")
    print(f"{'contender':12} {'img/s':>8} {'MP/s':>8} {'x base':>7} {'probes':>6} {'out MB':>7} {'RSS MB':>7}  "
          "ms/image by stage")
    for c, s in rows.items():
        stages = " ".join(f"{k}={v:.1f}" for k, v in s["ms_per_image_by_stage"].items())
        ratio = f"{s['vs_baseline']:.2f}" if s["vs_baseline"] else "-"
        print(f"{c:12} {s['images_per_s']:8.2f} {s['megapixels_per_s']:8.1f} {ratio:>7} "
              f"{s['probes_per_image']:6.2f} {s['bytes_out'] / 1e6:7.2f} {s['peak_rss_mb']:7.0f}  {stages}")
    print("(stage times are busy time summed over threads: the project's lanes overlap, so they add up to more "
          "than the wall time per image)")
    gpu = rows.get("dali-gpu", {})
    if "of_decode_ceiling" in gpu or "vs_cpu_engine" in gpu:
        print(f"dali-gpu: {gpu.get('of_decode_ceiling', '-')} of the decode-only ceiling (target >= 0.6), "
              f"{gpu.get('vs_cpu_engine', '-')}x the pillow engine on this machine's CPUs (target >= 20), "
              f"{gpu['images_per_s']:.0f} img/s (target >= 1500)")
    w = result.get("watch_close_to_commit_s")
    if w:
        print(f"watch daemon close-to-commit latency: median {w['median']:.2f} s, p95 {w['p95']:.2f} s "
              f"({w['files']} files)")
    _print_faces(result)


def _print_faces(result: dict[str, Any]) -> None:
    r, t, c = result.get("reader"), result.get("tune"), result.get("cli")
    if r:
        print(f"reader: steady {r['reader']['steady_images_per_s']:.0f} img/s vs baseline "
              f"{r['baseline']['steady_images_per_s']:.0f} ({r['steady_vs_baseline']:.2f}x); first batch "
              f"{r['reader']['first_batch_s']:.2f} s (baseline {r['baseline']['first_batch_s']:.2f} s); draft=True "
              f"{r['draft']['steady_images_per_s']:.0f} img/s ({r['draft_vs_baseline']:.2f}x)")
    if t:
        s = t["seconds"]
        print(f"tune: {s['tune']:.1f} s vs run {s['run']:.1f} s ({t['tune_vs_run']:.1f}x); --from "
              f"{s['tune-from']:.1f} s" + (f"; --every-quality {s['tune-every']:.1f} s" if "tune-every" in s else ""))
    if c:
        for mode, cmds in c["seconds"].items():
            print(f"cli ({mode}): " + ", ".join(f"{k} {v:.2f} s" for k, v in cmds.items()))


if __name__ == "__main__":
    main()

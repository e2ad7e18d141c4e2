"""The training reader against a plain PIL + DataLoader loop over the same version exported to files.

One version of 59 rows (the 12 camera photos and frames of their scenes, stored by the default spec at
1280 px), read to 224x224 (scale to cover, centre crop, bilinear: the same geometry and filter in
both) in batches of 16 by 2 workers kept across epochs (``persistent_workers=True``), in rounds, each
contender in a fresh process:

  reader    ``loader(VersionDataset(store, size=(224, 224), decode="cpu"), num_workers=2,
            persistent_workers=True)``: what the README shows.
  draft     the same with ``draft=True``: each stored JPEG decoded at the smallest fast DCT scale (1/2,
            1/4, 1/8) that is at least 1.5 times the resize (pixels within about a level of the full decode's).
  baseline  the version exported to files (``preprocess export``), a ``Dataset`` that opens each file
            with PIL, the same resize and crop, ``DataLoader(num_workers=2, persistent_workers=True)``
            with the platform's default start method (fork on Linux), default collate.

Per contender: the first batch of a cold loader (from the loader being made, in a process that has
imported torch and made its dataset), and images/s over the steady-state epochs (every epoch after the
first). Run by ``scripts/bench`` (section ``reader``); ``python scripts/bench_reader.py`` alone prints it.

Usage: python scripts/bench_reader.py [--rounds 3] [--epochs 5] [--rows 59]
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
SIZE = (224, 224)
BATCH = 16
WORKERS = 2


def _fit(img: Any, size: tuple[int, int]) -> Any:
    """Scale to cover ``size``, crop the centre (bilinear): the reader's fit="crop", written out plainly."""
    from PIL import Image

    w_out, h_out = size
    scale = max(w_out / img.width, h_out / img.height)
    rw, rh = max(w_out, round(img.width * scale)), max(h_out, round(img.height * scale))
    if (rw, rh) != img.size:
        img = img.resize((rw, rh), Image.Resampling.BILINEAR)
    x0, y0 = (rw - w_out) // 2, (rh - h_out) // 2
    return img.crop((x0, y0, x0 + w_out, y0 + h_out))


class Files:
    """The baseline's dataset: image files, PIL, the same fit, a CHW uint8 tensor."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import numpy as np
        import torch
        from PIL import Image

        with Image.open(self.paths[i]) as img:
            rgb = _fit(img.convert("RGB"), SIZE)
        return {"index": i, "image": torch.from_numpy(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy())}


def _epochs(make: Any, epochs: int) -> dict[str, Any]:
    """Make the loader, then time its first batch and every epoch (images/s)."""
    t0 = time.perf_counter()
    loader = make()
    first, rates, n = None, [], 0
    for _ in range(epochs):
        t, n = time.perf_counter(), 0
        for batch in loader:
            if first is None:
                first = time.perf_counter() - t0
            n += len(batch["index"])
        rates.append(n / (time.perf_counter() - t))
    return {"first_batch_s": first, "epoch_images_per_s": rates, "images": n}


def worker(kind: str, store: str, files: str, epochs: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    import torch  # noqa: F401  (both pay it; timed apart)

    imported = time.perf_counter() - t0
    if kind in ("reader", "draft"):
        from preprocess.torchdata import VersionDataset, loader

        t1 = time.perf_counter()
        ds = VersionDataset(store, size=SIZE, decode="cpu", draft=kind == "draft")
        made = time.perf_counter() - t1
        res = _epochs(lambda: loader(ds, batch_size=BATCH, num_workers=WORKERS, persistent_workers=True), epochs)
    else:
        from torch.utils.data import DataLoader

        t1 = time.perf_counter()
        fds = Files(sorted(p for p in Path(files).iterdir() if p.is_file()))
        made = time.perf_counter() - t1
        res = _epochs(lambda: DataLoader(fds, batch_size=BATCH, num_workers=WORKERS,  # type: ignore[arg-type]
                                         persistent_workers=True), epochs)  # a plain map-style dataset
    return {**res, "import_torch_s": imported, "dataset_s": made, "process_s": time.perf_counter() - t0}


def make_version(work: Path, rows: int) -> tuple[Path, Path]:
    """A store with one version of ``rows`` camera frames (the default spec), and that version exported."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench

    photos = bench._make_set(rows, work / "photos")
    store, exported = work / "r.icechunk", work / "exported"
    for cmd in (["run", str(work / "photos"), "--store", str(store), "-m", "reader bench", "--engine", "pillow"],
                ["export", str(store), str(exported)]):
        subprocess.run([str(ROOT / ".venv" / "bin" / "preprocess"), *cmd], check=True, capture_output=True)
    assert len(list((exported / "images").iterdir())) == len(photos)
    return store, exported / "images"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--rows", type=int, default=59)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--files", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.store, args.files, args.epochs)))
        return {}
    work = Path(tempfile.mkdtemp(prefix="bench-reader-"))
    try:
        store, files = make_version(work, args.rows)
        runs: dict[str, list[dict[str, Any]]] = {"reader": [], "draft": [], "baseline": []}
        for r in range(args.rounds):
            for kind, done in runs.items():
                out = subprocess.run([sys.executable, __file__, "--worker", kind, "--store", str(store), "--files",
                                      str(files), "--epochs", str(args.epochs)], check=True, capture_output=True,
                                     text=True, cwd=ROOT)
                res = json.loads(out.stdout.strip().splitlines()[-1])
                done.append(res)
                steady = statistics.median(res["epoch_images_per_s"][1:])
                print(f"  round {r + 1}: {kind:8} first batch {res['first_batch_s']:.2f} s, steady {steady:.0f} "
                      f"img/s", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summarize(runs, args)


def summarize(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": args.rows, "size": list(SIZE), "batch": BATCH, "workers": WORKERS,
                           "epochs": args.epochs, "rounds": args.rounds, "persistent_workers": True}
    for kind, rs in runs.items():
        steady = [statistics.median(r["epoch_images_per_s"][1:]) for r in rs]
        out[kind] = {"first_batch_s": round(statistics.median(r["first_batch_s"] for r in rs), 3),
                     "steady_images_per_s": round(statistics.median(steady), 1),
                     "first_epoch_images_per_s": round(statistics.median(r["epoch_images_per_s"][0] for r in rs), 1),
                     "dataset_s": round(statistics.median(r["dataset_s"] for r in rs), 3),
                     "import_torch_s": round(statistics.median(r["import_torch_s"] for r in rs), 3),
                     "process_s": round(statistics.median(r["process_s"] for r in rs), 3)}
    base = out["baseline"]["steady_images_per_s"]
    out["steady_vs_baseline"] = round(out["reader"]["steady_images_per_s"] / base, 3)
    out["draft_vs_baseline"] = round(out["draft"]["steady_images_per_s"] / base, 3)
    return out


if __name__ == "__main__":
    result = main()
    if result:
        print(json.dumps(result, indent=2))

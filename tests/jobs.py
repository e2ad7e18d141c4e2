"""Making real stores for fixtures: one `run` job on the CPU's pillow engine."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

from preprocess.drivers.run import JobOptions, Summary, run_job


def run_pillow(sources: list[Path], store: Path, spec: Path, **kw: Any) -> Summary:
    """``preprocess run SOURCES --store STORE --spec SPEC --engine pillow --device cpu`` (``kw``: more options)."""
    return run_job(JobOptions(sources=[str(s) for s in sources], store=str(store), spec_path=str(spec),
                              engine="pillow", device="cpu", **kw))


def tiny_store(base: Path, photos: list[Path]) -> Path:
    """A store made by a real `run` of ``photos`` at 256 px, fixed q80, the whole view checked (fast), in ``base``:
    ``base/s.icechunk``."""
    (base / "src").mkdir()
    for p in photos:
        shutil.copy(p, base / "src" / p.name)
    spec = base / "tiny.toml"
    spec.write_text('[resize]\nsize = 256\n[quality]\nmode = "fixed"\nvalue = 80\n[gate.views]\nwhole = 0.99\n')
    run_pillow([base / "src"], base / "s.icechunk", spec)
    return base / "s.icechunk"


def flip_image_bits(store: Path, bits: int = 4, seed: int = 4) -> None:
    """Flip ``bits`` bits inside the stored images of ``store`` (its largest chunk file, the images' shard; not
    its index at the end), as bit rot or a bad disk would."""
    chunk = max((store / "chunks").iterdir(), key=lambda p: p.stat().st_size)
    data = bytearray(chunk.read_bytes())
    rng = random.Random(seed)
    for at in rng.sample(range(len(data) // 8, len(data) * 6 // 8), bits):
        data[at] ^= 1 << rng.randrange(8)
    chunk.write_bytes(bytes(data))

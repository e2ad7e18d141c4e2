"""Making real stores for fixtures: one `run` job on the CPU's pillow engine."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from preprocess.drivers.run import JobOptions, Summary, run_job


def run_pillow(sources: list[Path], store: Path, spec: Path, **kw: Any) -> Summary:
    """``preprocess run SOURCES --store STORE --spec SPEC --engine pillow --device cpu`` (``kw``: more options)."""
    return run_job(JobOptions(sources=[str(s) for s in sources], store=str(store), spec_path=str(spec),
                              engine="pillow", device="cpu", **kw))


def tiny_store(base: Path, photos: list[Path]) -> Path:
    """A store made by a real `run` of ``photos`` at 256 px, fixed q80 (fast), in ``base``: ``base/s.icechunk``."""
    (base / "src").mkdir()
    for p in photos:
        shutil.copy(p, base / "src" / p.name)
    spec = base / "tiny.toml"
    spec.write_text('[resize]\nsize = 256\n[quality]\nmode = "fixed"\nvalue = 80\n')
    run_pillow([base / "src"], base / "s.icechunk", spec)
    return base / "s.icechunk"

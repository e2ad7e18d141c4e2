"""Making real stores for fixtures: one `run` job on the CPU's pillow engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from preprocess.drivers.run import JobOptions, Summary, run_job


def run_pillow(sources: list[Path], store: Path, spec: Path, **kw: Any) -> Summary:
    """``preprocess run SOURCES --store STORE --spec SPEC --engine pillow --device cpu`` (``kw``: more options)."""
    return run_job(JobOptions(sources=[str(s) for s in sources], store=str(store), spec_path=str(spec),
                              engine="pillow", device="cpu", **kw))

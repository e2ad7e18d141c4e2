"""How fast the command line answers: whole processes, median of repeats, with and without bytecode.

Commands on a small real store (3 camera photos, two commits): ``preprocess --version``, ``log
STORE``, ``log STORE --oneline``, ``show STORE HEAD``, ``branch STORE``, and ``python -c "import
icechunk"`` (the floor every store command pays). Each command runs twice over, through a
``PYTHONPYCACHEPREFIX`` filled by one warm run of every command first (so the environment's own
``__pycache__`` folders do not count): with the standard library's bytecode only (``no bytecode``: every
installed package and the project compiled from source in every process, as in an environment installed
without ``--compile-bytecode`` and run with ``PYTHONDONTWRITEBYTECODE``, like this project's machines
before) and with every module's (``bytecode``: what ``scripts/_setup`` and the Docker images install).
Run by ``scripts/bench`` (section ``cli``); alone: ``python scripts/bench_cli.py [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PREPROCESS = str(ROOT / ".venv" / "bin" / "preprocess")


def commands(store: str) -> dict[str, list[str]]:
    return {"--version": [PREPROCESS, "--version"], "log": [PREPROCESS, "log", store],
            "log --oneline": [PREPROCESS, "log", store, "--oneline"], "show HEAD": [PREPROCESS, "show", store, "HEAD"],
            "branch": [PREPROCESS, "branch", store], "import icechunk": [sys.executable, "-c", "import icechunk"]}


def _seconds(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    try:
        photos = work / "photos"
        photos.mkdir()
        for p in sorted((ROOT / "photos" / "camera").glob("*.jpg"))[:3]:
            shutil.copy(p, photos / p.name)
        store = str(work / "s.icechunk")
        for k in (1, 2):
            subprocess.run([PREPROCESS, "run", str(photos), "--store", store, "-m", f"job {k}", "--spec",
                            str(ROOT / "pipelines" / ("camera.toml" if k == 1 else "archive.toml"))],
                           check=True, capture_output=True)
        base = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        envs = {"no bytecode": {**base, "PYTHONPYCACHEPREFIX": str(work / "stdlib")},
                "bytecode": {**base, "PYTHONPYCACHEPREFIX": str(work / "pyc")}}
        warm = {**envs["bytecode"], "PYTHONDONTWRITEBYTECODE": ""}
        for cmd in commands(store).values():  # fill the bytecode prefix (and the file cache)
            subprocess.run(cmd, env=warm, check=True, capture_output=True, cwd=ROOT)
        stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve().relative_to("/")
        shutil.copytree(work / "pyc" / stdlib, work / "stdlib" / stdlib)
        out: dict[str, Any] = {}
        for mode, env in envs.items():
            out[mode] = {name: round(statistics.median(_seconds(cmd, env) for _ in range(args.repeats)), 3)
                         for name, cmd in commands(store).items()}
            print(f"  {mode}: " + ", ".join(f"{k} {v:.2f} s" for k, v in out[mode].items()), file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"repeats": args.repeats, "seconds": out}


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))

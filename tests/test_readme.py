"""The README's code runs as written (issue 14).

- Every ```bash line runs, in a fresh folder holding a few of the bundled photos and the pipelines,
  except the few in :data:`SKIP`, each with the reason it cannot run here. Today that leaves the daily
  loop of "Versions, history and provenance", which makes ``cams.icechunk`` with a tag ``v1`` by `run`.
- Every ```python block then runs as a script file in that folder, against that store: with
  ``python FILE`` (spawned DataLoader workers import the file, so a missing ``__main__`` guard fails),
  and, where it uses preprocess, with no icechunk warning on stderr (a library's own warnings, such as
  torch's about more DataLoader workers than CPUs, may remain).
- Every option a ```text synopsis line (``preprocess CMD ...``) names exists on that command.
- Every ```toml block is a spec that parses.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from preprocess.cli import app
from tests.paths import ROOT

README = ROOT / "README.md"
BIN = Path(sys.executable).parent

# Shell lines of the README that cannot run in a test on this machine, and why. Each must still be in
# the README (test_every_shell_line_runs_or_is_skipped_for_a_reason), so the list stays short and true.
SKIP = {
    "scripts/demo": "sets a fresh machine up and runs the main job (minutes); the suite covers the job",
    "scripts/test": "runs this test suite (recursion)",
    "scripts/test -k gate -x": "runs the test suite (recursion)",
    "scripts/check": "lint and types: CI (.ci/run) runs it before the tests",
    "scripts/fetch-photos": "downloads Debian packages the first time; the suite's set-up already ran it",
    "scripts/screenshots": "drives headless Chromium for a minute; tests/serve/test_browser.py takes the same pages",
    "pip install 'preprocess[ray]'": "installs from PyPI (network); this environment has the extra",
    "preprocess run s3://cams/raw/2026-11/ --store s3://cams/datasets/front-door --ray auto --gpus-per-worker 1":
        "needs a Ray cluster with GPUs and an S3 endpoint (tests/distributed: Ray on this machine, S3 on moto)",
    "preprocess run ./photos --store ./cams.icechunk --ray local":
        "runs here, but starts Ray (~10 s, 1 GiB); tests/drivers/ray/test_job.py runs this code path",
}


def blocks(lang: str) -> list[tuple[int, str]]:
    """(line number, code) of every fenced block of ``lang`` in the README."""
    found: list[tuple[int, str]] = []
    current: list[str] | None = None
    start = 0
    for n, line in enumerate(README.read_text().splitlines(), start=1):
        if current is None and line.strip() == f"```{lang}":
            current, start = [], n + 1
        elif current is not None and line.strip() == "```":
            found.append((start, "\n".join(current) + "\n"))
            current = None
        elif current is not None:
            current.append(line)
    return found


def shell_lines(code: str) -> list[str]:
    """The commands of a shell block, without their comments."""
    lines = (re.sub(r"\s+#\s.*$", "", line).strip() for line in code.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def runnable() -> list[tuple[int, list[str]]]:
    return [(n, lines) for n, code in blocks("bash") if (lines := [x for x in shell_lines(code) if x not in SKIP])]


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ICECHUNK_LOG"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "80"
    return env


@pytest.fixture(scope="module")
def readme_dir(tmp_path_factory: pytest.TempPathFactory, camera_photos: list[Path],
               small_photos: list[Path]) -> Path:
    """A user's folder after the README's shell lines ran in it: ``photos/camera`` (3 camera photos),
    ``photos/opencv`` (3 small ones), ``pipelines/``, then ``cams.icechunk`` as the daily loop makes it."""
    d = tmp_path_factory.mktemp("readme")
    (d / "photos" / "camera").mkdir(parents=True)
    (d / "photos" / "opencv").mkdir()
    for p in camera_photos[:3]:
        shutil.copy(p, d / "photos" / "camera" / p.name)
    for p in (p for p in small_photos if p.name in ("fruits.jpg", "apple.jpg", "orange.jpg")):
        shutil.copy(p, d / "photos" / "opencv" / p.name)
    (d / "pipelines").symlink_to(ROOT / "pipelines")
    for n, lines in runnable():
        script = "set -euo pipefail\n" + "\n".join(lines) + "\n"
        proc = subprocess.run(["bash", "-c", script], cwd=d, env=environment(), capture_output=True, text=True,
                              timeout=600, check=False)
        assert proc.returncode == 0, f"README.md line {n}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return d


@pytest.mark.slow
def test_every_shell_line_runs_or_is_skipped_for_a_reason(readme_dir: Path) -> None:
    every = [line for _, code in blocks("bash") for line in shell_lines(code)]
    assert set(SKIP) <= set(every), set(SKIP) - set(every)  # no stale entries
    ran = [line for _, lines in runnable() for line in lines]
    assert ran and all(line in ran or line in SKIP for line in every)
    # what the daily loop left: the store, its tag, the export; the experiment branch deleted
    from preprocess import history

    store = str(readme_dir / "cams.icechunk")
    assert [t.name for t in history.tags(store)] == ["v1"]
    assert [b.name for b in history.branches(store)] == ["main"]
    assert history.resolve(store, "main~1").snapshot == history.resolve(store, "v1").snapshot
    assert len(list((readme_dir / "exported" / "images").iterdir())) == 6


@pytest.mark.slow
@pytest.mark.parametrize(("line", "code"), blocks("python"), ids=[f"README.md:{n}" for n, _ in blocks("python")])
def test_python_block_runs_as_written(readme_dir: Path, line: int, code: str) -> None:
    script = readme_dir / f"readme_{line}.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, script.name], cwd=readme_dir, env=environment(), capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"README.md line {line}:\n{proc.stderr[-4000:]}"
    if "preprocess" in code:  # plain icechunk prints its own warnings; preprocess opens silently
        assert "WARN" not in proc.stderr and "icechunk" not in proc.stderr, proc.stderr


def options(command: Any) -> set[str]:
    """Every option name of a (typer's own click) command."""
    return {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}


def test_every_option_in_a_synopsis_exists() -> None:
    root: Any = typer.main.get_command(app)  # typer vendors click: a group with .commands
    commands = root.commands
    checked = 0
    for n, code in blocks("text"):
        command = None
        for line in code.splitlines():
            words = line.split()
            if words[:1] == ["preprocess"] and len(words) > 1:
                command = commands.get(words[1])
                assert command is not None, f"README.md:{n}: no command {words[1]!r}"
            elif not line.startswith(" "):
                command = None  # not a synopsis (an error message, ...)
            if command is None:
                continue
            named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", re.sub(r"\s#\s.*$", "", line)))
            assert named <= options(command), f"README.md:{n}: {sorted(named - options(command))} not in " \
                                              f"`preprocess {command.name} --help`"
            checked += len(named)
    assert checked > 20  # the synopses of run, log/show/..., serve, watch and tune were read


@pytest.mark.parametrize(("line", "code"), blocks("toml"), ids=[f"README.md:{n}" for n, _ in blocks("toml")])
def test_every_toml_block_is_a_valid_spec(line: int, code: str) -> None:
    """A spec excerpt in the README is a spec that parses (its sections; the rest default)."""
    import tomllib

    from preprocess.pipeline.spec import parse_spec

    parse_spec(tomllib.loads(code), source=f"README.md:{line}")

"""The scripts people run first (issue 23, bug 9): `scripts/demo` and `scripts/test` set up uv once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.paths import ROOT


def test_setup_finds_the_uv_an_earlier_run_installed(tmp_path: Path) -> None:
    """pip puts uv into the user's scripts folder (~/.local/bin), which is often not on PATH: the
    set-up must look there before it installs uv again. The uv here is a stand-in script (the test
    must not install anything); what is checked is which uv the set-up finds, and that it says nothing
    about installing."""
    home = tmp_path / "home"
    user_bin = home / ".local" / "bin"
    user_bin.mkdir(parents=True)
    stub = user_bin / "uv"
    stub.write_text("#!/bin/sh\necho uv-stand-in\n")
    stub.chmod(0o755)
    script = f'say() {{ echo "say: $*"; }}; PY={sys.executable}; source scripts/_uv; command -v uv; uv'
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    env.pop("PYTHONUSERBASE", None)
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "installing uv" not in done.stdout + done.stderr
    assert done.stdout.splitlines()[-2:] == [str(stub), "uv-stand-in"]
    assert os.access(stub, os.X_OK)


def test_setup_sources_the_uv_step() -> None:
    assert 'source "$ROOT/scripts/_uv"' in (ROOT / "scripts" / "_setup").read_text()

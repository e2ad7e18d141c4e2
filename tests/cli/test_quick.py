"""A command line that answers at once (issue 22): ``--version`` before anything heavy is imported, the
commands registered without importing the store, shell completion, ``log --oneline`` and ``HEAD``.
How fast is measured by ``scripts/bench`` (the ``cli`` section), not here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from preprocess.cli import app
from tests.paths import ROOT
from tests.store.conftest import Hist

HEAVY = {"icechunk", "zarr", "numpy", "torch", "onnxruntime", "PIL", "matplotlib", "pydantic"}


def python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                          env={**os.environ, **env})


def test_version_imports_nothing_but_the_package() -> None:
    code = ("import sys; sys.argv = ['preprocess', '--version']; from preprocess.__main__ import main; main(); "
            f"print(sorted(set({sorted(HEAVY)!r}) & set(sys.modules)), 'typer' in sys.modules)")
    lines = python(code).stdout.splitlines()
    assert lines[0].startswith("preprocess ") and lines[0].split()[1][0].isdigit()
    assert lines[1] == "[] False"
    shown = CliRunner().invoke(app, ["--version"])  # the same answer through typer (e.g. --version log)
    assert shown.exit_code == 0 and shown.stdout.strip() == lines[0]


def test_the_commands_register_without_importing_the_store_or_a_model() -> None:
    out = python(f"import sys, preprocess.cli; print(sorted(set({sorted(HEAVY)!r}) & set(sys.modules)))")
    assert out.stdout.strip() == "[]"


def test_shell_completion_completes_commands_and_options() -> None:
    def complete(words: str, cword: int) -> list[str]:
        env = {"_PREPROCESS_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
        done = subprocess.run([str(Path(sys.executable).parent / "preprocess")], capture_output=True, text=True,
                              cwd=ROOT, env={**os.environ, **env}, check=False)
        return done.stdout.split()

    assert complete("preprocess lo", 1) == ["log"]
    assert "--oneline" in complete("preprocess log STORE --o", 3)
    assert "--install-completion" in CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).stdout


def test_log_oneline_and_head(hist: Hist) -> None:
    s = str(hist.store)
    r = CliRunner().invoke(app, ["log", s, "--oneline"])
    assert r.exit_code == 0
    commits = json.loads(CliRunner().invoke(app, ["log", s, "--json"]).stdout)["commits"]
    lines = r.stdout.splitlines()
    assert len(lines) == len(commits) and all(len(line) <= 200 for line in lines)
    first = lines[0].split(" ", 1)
    assert commits[0]["id"].startswith(first[0]) and "(main" in first[1] and first[1].endswith(commits[0]["message"])
    head = json.loads(CliRunner().invoke(app, ["log", s, "HEAD~1", "--json"]).stdout)["commits"]
    assert [c["id"] for c in head] == [c["id"] for c in commits[1:]]
    shown = json.loads(CliRunner().invoke(app, ["show", s, "HEAD", "--json"]).stdout)
    assert shown["snapshot"] == commits[0]["id"]
    refused = CliRunner().invoke(app, ["branch", s, "HEAD"])
    assert refused.exit_code == 2 and "REF_NAME" in refused.stderr


def test_a_bug_ends_in_its_traceback_an_error_line_and_exit_70() -> None:
    """README's exit codes say 70 for an internal error; an exception no command turned into an error line
    exited 1 with a bare traceback (a tune report's name did, before it was quoted)."""
    code = ("import sys, preprocess.cli\n"
            "def broken(): raise RuntimeError('a bug for this test')\n"  # test double: a command with a bug
            "preprocess.cli.main = broken\nsys.argv = ['preprocess', 'log', '.']\n"
            "from preprocess.__main__ import main\nmain()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 70, proc.stderr
    assert "Traceback" in proc.stderr and "error[INTERNAL]: RuntimeError: a bug for this test" in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("  hint: This is a bug")

"""Usage errors read like every other error (walkthrough finding 1): a missing argument, an unknown
command or option, a value out of range printed click's box with no code and no hint, and no JSON
document under ``--json``. Now ``error[CLI_USAGE]: ...`` with a hint naming the command's ``--help``
(and a did-you-mean where there is a close name), exit 2; the usage line names arguments as click does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jsonschema
from typer.testing import CliRunner

from preprocess.cli import app
from tests.cli.test_json import SCHEMA


def preprocess(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "80", "TERM": "dumb", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "preprocess", *args], env=env, capture_output=True, text=True,
                          check=False)


def test_usage_errors_print_the_code_and_a_hint() -> None:
    for args, line, hint in (
            (("diff", "/tmp/s", "v1"), "error[CLI_USAGE]: missing argument 'REF_B'", "preprocess diff --help"),
            (("run", "photos"), "error[CLI_USAGE]: missing option '--store' / '-s'", "preprocess run --help"),
            (("lss",), "error[CLI_USAGE]: no such command 'lss' (did you mean 'ls'?)", "preprocess --help"),
            (("ls", "/tmp/s", "--srt", "name"), "error[CLI_USAGE]: no such option: --srt (did you mean '--sort'?)",
             "preprocess ls --help"),
            (("models", "lst"), "error[CLI_USAGE]: no such command 'lst' (did you mean 'list'?)",
             "preprocess models --help"),
            (("serve", "/tmp/s", "--port", "99999"), "error[CLI_USAGE]: invalid value for '--port'",
             "preprocess serve --help"),
            # an option missing its value at the end: click raises it without a context (printed in its box)
            (("ls", "/tmp/s", "--sort"), "error[CLI_USAGE]: option '--sort' requires an argument",
             "preprocess ls --help"),
            (("tag", "/tmp/s", "--delete"), "error[CLI_USAGE]: option '--delete' requires an argument",
             "preprocess tag --help"),
            (("tune", "photos", "--spec"), "error[CLI_USAGE]: option '--spec' requires an argument",
             "preprocess tune --help"),
            # a negative wait was taken as 0 (an operator's first deployment)
            (("watch", "in", "--store", "s", "--wait", "-5"), "error[CLI_USAGE]: invalid value for '--wait'",
             "preprocess watch --help"),
            (("tag", "/tmp/s", "t", "--wait", "-1"), "error[CLI_USAGE]: invalid value for '--wait'",
             "preprocess tag --help")):
        r = CliRunner().invoke(app, list(args))
        assert r.exit_code == 2, (args, r.output)
        first, second = r.stderr.splitlines()[:2]
        assert first.startswith(line) and hint in second and second.startswith("  hint:"), (args, r.stderr)
        assert "│" not in r.stderr and r.stdout == "", args


def test_usage_errors_under_json_are_json_documents() -> None:
    for args, command in ((("diff", "/tmp/s", "v1", "--json"), "diff"), (("lss", "--json"), "preprocess"),
                          (("models", "lst", "--json"), "models")):
        r = CliRunner().invoke(app, list(args))
        doc = json.loads(r.stdout)
        jsonschema.Draft202012Validator(SCHEMA).validate(doc)
        assert doc["command"] == command and doc["error"]["code"] == "CLI_USAGE", args
        assert doc["error"]["exit_code"] == 2 and "--help" in doc["error"]["hint"] and r.exit_code == 2


def test_the_program_prints_usage_errors_the_same_way_and_bare_groups_still_show_help() -> None:
    r = preprocess("diff", "/tmp/s", "v1")
    assert r.returncode == 2 and r.stderr.startswith("error[CLI_USAGE]: missing argument 'REF_B'"), r.stderr
    bare = preprocess("models")
    assert "Usage: preprocess models" in bare.stdout + bare.stderr and "error[" not in bare.stderr


def test_usage_lines_name_the_arguments_in_capitals() -> None:
    assert "Usage: preprocess diff [OPTIONS] STORE REF_A REF_B" in preprocess("diff", "--help").stdout
    assert "Usage: preprocess ls [OPTIONS] STORE [REF]" in preprocess("ls", "--help").stdout
    assert "Usage: preprocess run [OPTIONS] SOURCES..." in preprocess("run", "--help").stdout
    shown = preprocess("ls", "--help").stdout
    assert "<list[" not in shown and "<str>" in shown

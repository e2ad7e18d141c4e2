"""The CLI's shared parts: the typer app, consoles, error printing, formatting helpers."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import warnings
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, cast

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from typer._click.exceptions import NoArgsIsHelpError, NoSuchOption, UsageError  # typer >= 0.29 vendors click
from typer.core import TyperGroup

from preprocess.cli.helptext import Command, tidy
from preprocess.core import names, progress
from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, PreprocessError, did_you_mean
from preprocess.core.jsonable import JSON_VERSION, Json


class _Group(TyperGroup):
    """The ``preprocess`` group: a usage error (a missing argument, an unknown command or option, a bad
    value) is printed like every other error (:func:`usage_failed`), not in click's box. Its help, and
    every subcommand's, is tidied (:func:`~preprocess.cli.helptext.tidy`) as it is built: by the program
    and by ``CliRunner().invoke(app, ...)`` alike."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tidy(cast("Command", self))

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        argv = list(args)  # parsing consumes ``args``
        try:
            ctx = super().make_context(info_name, args, parent, **extra)
        except UsageError as exc:
            usage_failed(exc, argv)
            raise  # not reached: usage_failed exits
        ctx.meta["preprocess.argv"] = argv
        return ctx

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            usage_failed(exc, ctx.meta.get("preprocess.argv", ()), ctx.command)
            raise


def usage_failed(exc: UsageError, args: Sequence[str], root: Any = None) -> None:
    """Exit 2 with ``error[CLI_USAGE]`` and a hint naming the command's ``--help`` (a JSON error document
    too when ``args`` hold ``--json``); click's own ``Did you mean`` becomes ours. A bare group, which
    shows its help, is left to click. An error raised without its context (an option missing its value)
    names the command that ``args`` call under ``root``."""
    if isinstance(exc, NoArgsIsHelpError) or (exc.ctx is None and root is None):
        raise exc
    # the command's words, without the program's name (``root`` in tests)
    words = exc.ctx.command_path.split()[1:] if exc.ctx is not None else _called(root, args)
    message = re.sub(r"\. Did you mean (.*)\?$", r" (did you mean \1?)", exc.format_message())
    if isinstance(exc, NoSuchOption):
        message = exc.message + did_you_mean(exc.option_name, exc.possibilities or ())
    message = message[:1].lower() + message[1:].rstrip(".")
    help_of = " ".join(["preprocess", *words, "--help"])
    hint = f"see `{help_of}`"
    named = next((a for a in args if a.startswith("-") and os.path.lexists(a)), None)
    if isinstance(exc, NoSuchOption) and named is not None:  # a file whose name starts with a dash
        hint = f"{names.quote(named)} is a file: write ./{names.quote(named)}, or put -- before it; {hint}"
    fail(ConfigError(message, code=ErrorCode.CLI_USAGE, hint=hint),
         as_json=(" ".join(words) or "preprocess") if "--json" in args else "")


def _called(group: Any, args: Sequence[str]) -> list[str]:
    """The (sub)command names that ``args`` start with under ``group`` (``["models", "build"]``)."""
    words: list[str] = []
    for arg in args:
        commands = getattr(group, "commands", {})
        if arg not in commands:
            break
        words.append(arg)
        group = commands[arg]
    return words


app = typer.Typer(cls=_Group, help="GPU image preprocessing: resize + recompress camera images as small as a neural "
                       "feature check allows, into versioned zarr (icechunk) datasets.",
                  no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False)
models_app = typer.Typer(help="Feature extractor models: list the bundled ones, build their ONNX files.",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")

out = Console()
err = Console(stderr=True)


def emit(command: str, result: Mapping[str, Json] | Sequence[Json], key: str = "") -> None:
    """Print a command's ``--json`` document (docs/json.md; the same bytes for the same content): one
    object, ``{"version": 1, "command": "show", ...the result's fields}``, or for a list, under ``key``:
    ``{"version": 1, "command": "log", "commits": [...]}``."""
    fields = {key: result} if key or not isinstance(result, Mapping) else dict(result)
    assert not fields.keys() & HEADER, f"{command}: a result may not use the header's keys {HEADER}"
    _print_json({"version": JSON_VERSION, "command": command, **fields})


# Characters that are text to JSON but act on a terminal: DEL and C1 controls, bidi marks, embeddings,
# overrides and isolates (U+202E shows "gpj.exe" as "exe.jpg"), line and paragraph separators.
_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _print_json(doc: Mapping[str, object]) -> None:
    """``doc`` indented, UTF-8, with :data:`_UNSAFE` characters written as ``\\uXXXX`` escapes (the same
    strings to a JSON parser; JSON escapes the C0 controls itself). They can only be inside strings."""
    text = json.dumps(doc, indent=2, ensure_ascii=False, default=str)
    out.print(Text(_UNSAFE.sub(lambda m: f"\\u{ord(m[0]):04x}", text)), soft_wrap=True, highlight=False)


HEADER = frozenset({"version", "command", "error"})  # the keys every --json document may have besides its result's


def fail(exc: PreprocessError, *, as_json: str = "") -> None:
    """Exit with ``exc``'s code after one line and a hint on stderr; when ``as_json`` names the command
    (its ``--json``), the error is also printed as the JSON document on stdout:
    ``{"version": 1, "command": "log", "error": {"code": ..., "message": ..., "hint": ..., ...}}``."""
    if as_json:
        error = {"code": str(exc.code), "message": names.text(exc.message),  # JSON is UTF-8: names as stored
                 "path": names.storable(exc.path) if exc.path else exc.path, "line": names.line(exc.one_line()),
                 "hint": exc.hint or "", "exit_code": exc.exit_code or 1}
        _print_json({"version": JSON_VERSION, "command": as_json, "error": error})
    # one line whatever the message holds: a name in it with a newline or an ESC is quoted (core.names)
    err.print(f"[bold red]error[{exc.code}][/]: {escape(names.line(exc.one_line()))}", highlight=False,
              soft_wrap=True)
    if exc.hint:
        err.print(Text(f"  hint: {names.line(exc.hint)}"), highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code or 1)


def quiet_libraries(*, icechunk: bool = True) -> None:
    """Keep library chatter (torch export warnings, icechunk's local-storage WARN lines) off the
    user's terminal; ``ICECHUNK_LOG`` still overrides icechunk's filter. ``icechunk=False`` leaves
    icechunk alone (setting its filter imports it: ~1 s that a command without a store never pays);
    commands call this with the default before they open a store."""
    warnings.filterwarnings("ignore", module="torch")
    warnings.filterwarnings("ignore", module="zarr")
    logging.getLogger("torch").setLevel(logging.ERROR)
    if icechunk:
        from preprocess.store.storage import quiet_icechunk

        # errors only; not the background pre-load of a manifest, whose failure the read that needs it reports
        quiet_icechunk("error,icechunk::repository=off")


def print_version() -> None:
    """``preprocess --version``: the package's version, from its metadata (nothing else is imported;
    ``preprocess/__main__.py`` answers a lone ``--version`` the same way before importing the CLI)."""
    from importlib.metadata import version as installed

    print(f"preprocess {installed('preprocess')}")


def _version(value: bool) -> None:
    if value:
        print_version()
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    quiet_libraries(icechunk=False)


class RichProgress:
    """A job's progress bar (a :class:`preprocess.core.progress.Progress`): images, rate, size ratio."""

    def __init__(self, console: Console) -> None:
        self._p = Progress(TextColumn("[bold]processing"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[rate]:>7.1f} img/s"), TextColumn("{task.fields[ratio]}"),
                           TimeElapsedColumn(), console=console, transient=False)
        self._task: Any = None
        self._bytes_in = 0
        self._bytes_out = 0
        self._lock = threading.Lock()  # lanes advance the images, the storing thread the bytes

    def start(self, total: int) -> None:
        self._p.start()
        self._task = self._p.add_task("run", total=total, rate=0.0, ratio="")

    def advance(self, steps: int, bytes_in: int = 0, bytes_out: int = 0) -> None:
        with self._lock:
            self._bytes_in += bytes_in
            self._bytes_out += bytes_out
            task = self._p.tasks[0]
            self._p.update(self._task, advance=steps)
            elapsed = task.elapsed or 0.0
            rate = task.completed / elapsed if elapsed > 0 else 0.0
            ratio = f"{self._bytes_in / self._bytes_out:.1f}x smaller" if self._bytes_out else ""
            self._p.update(self._task, rate=rate, ratio=ratio)

    def finish(self) -> None:
        self._p.stop()


class BarProgress:
    """A bar with the count, the rate and the time left (tune's measurements)."""

    def __init__(self, console: Console, label: str, unit: str) -> None:
        self._p = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                           TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                           TimeRemainingColumn(), console=console)
        self._unit = unit
        self._task = self._p.add_task(label, total=0, rate="", start=False)

    def start(self, total: int) -> None:
        self._p.update(self._task, total=total)
        self._p.start_task(self._task)
        self._p.start()

    def advance(self, steps: int, bytes_in: int = 0, bytes_out: int = 0) -> None:
        self._p.update(self._task, advance=steps)
        task = self._p.tasks[0]
        rate = task.completed / task.elapsed if task.elapsed else 0.0
        self._p.update(self._task, rate=f"{rate:.1f}/s")

    def finish(self) -> None:
        self._p.stop()


def progress_for(label: str, *, unit: str = "images", job: bool = False) -> progress.Progress:
    """A live bar when stdout and stderr are terminals; else plain lines on stderr (a log file, CI): N/M,
    the rate and the time left (:class:`preprocess.core.progress.LineProgress`). ``job``: run's bar."""
    if out.is_terminal and err.is_terminal:
        return RichProgress(err) if job else BarProgress(err, label, unit)
    return progress.LineProgress(lambda line: err.print(line, highlight=False, soft_wrap=True), label, unit)


def fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


@app.command()
def version() -> None:
    """Print the versions of preprocess and the stack it runs on (`preprocess --version`: the package's alone)."""
    from preprocess.rows.provenance import software_versions

    for k, v in software_versions().items():
        out.print(f"{k:12} {v or '-'}")



"""``--help`` as a reader wants it: a command's docstring is hard-wrapped in the source at ~110
columns, and typer keeps those line breaks, so on an 80-column terminal each line was wrapped
again mid-sentence. Here each paragraph of a docstring becomes one line (the terminal wraps it),
except lines that start a list item (``- ``) or are indented (kept as written). Flags (``--json``)
show no ``<bool>`` type: they take no value. Arguments read as click writes them (``STORE REF_A [REF]
SOURCES...``, not typer's ``{store} {ref_a}``), and a repeatable option or an argument that takes many
shows the type of one value (``--where <str>``, ``SOURCES <str>...``), not ``<list[str]>``."""

from __future__ import annotations

import inspect
import re
from typing import Any, Protocol, cast

import typer


def unwrap(text: str) -> str:
    """Paragraphs joined into single lines; list items and indented lines keep their breaks."""
    paragraphs = []
    for para in inspect.cleandoc(text).split("\n\n"):
        lines: list[str] = []
        for line in para.split("\n"):
            if lines and not line.startswith((" ", "- ", "* ", "\b")) and not lines[-1].startswith("\b"):
                lines[-1] = f"{lines[-1]} {line.strip()}"
            else:
                lines.append(line)
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


class Command(Protocol):
    """What typer builds (its own copy of click's ``Command``; typer >= 0.29 vendors click)."""

    help: str | None
    params: list[object]

    def __call__(self, *args: object, **kwargs: object) -> object: ...


def tidy[C: Command](command: C) -> C:
    """``command`` (and every subcommand) with unwrapped help and untyped flags."""
    if command.help:
        command.help = unwrap(command.help)
    for param in command.params:
        _named(_untyped(param))
    made = getattr(command, "get_help_option", None)
    if callable(made):  # --help is made per call: untype it as it is made
        setattr(command, "get_help_option", lambda ctx: _untyped(made(ctx)))  # noqa: B010
    for sub in dict(getattr(command, "commands", None) or {}).values():
        tidy(sub)
    return command


def _untyped[T](param: T) -> T:
    """A flag's type column stays empty (it takes no value)."""
    if getattr(param, "is_flag", False) and getattr(param, "metavar", None) is None:
        setattr(param, "metavar", "")  # noqa: B010
    return param


def _named(param: Any) -> None:
    """An argument's name in capitals, bare in the usage line; one value's type for a list."""
    shown = getattr(param, "display_type_rich", None)
    if callable(shown):
        each = "..." if param.param_type_name == "argument" else ""
        setattr(param, "display_type_rich",  # noqa: B010
                lambda ctx: re.sub(r"^<list\[(.*)\]>$", rf"<\1>{each}", shown(ctx) or "") or None)
    if param.param_type_name != "argument" or param.metavar is not None:
        return
    param.metavar = param.name.upper()
    usage = param.metavar + ("..." if param.nargs != 1 else "")
    usage = usage if param.required else f"[{usage}]"
    setattr(param, "get_usage_pieces", lambda ctx: [usage])  # noqa: B010


def command(app: typer.Typer) -> Command:
    """The command the ``preprocess`` program runs: ``app``, tidied (its group class tidies itself)."""
    return cast("Command", typer.main.get_command(app))


SPEC_HELP = ("Pipeline spec: a TOML file, or a bundled spec by name: camera (the default: checks what it stores, the "
             "whole image >= 0.99 and each quadrant and the centre half at the stored size >= 0.975), avif, gpu, "
             "archive, thumbnail (whole frames only, the size in the search), strict (two networks).")

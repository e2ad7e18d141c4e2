"""Reading the text files a user hands over (a pipeline spec, a model manifest, a tune report): bounded, so
a path like ``/dev/zero`` or a multi-GB file is refused instead of read until memory runs out, and parsed
so that a hostile nesting depth is a syntax error (TooDeep), not a RecursionError."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

MAX_TEXT_BYTES = 1 << 20  # a spec or manifest is a few KB


class TooLong(ValueError):
    """The file holds more than the limit."""


def read_text(path: Path, limit: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of ``path``, at most ``limit`` bytes (TooLong beyond; OSError, UnicodeDecodeError)."""
    with path.open("rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise TooLong(f"over {limit // 1024} KB")
    return data.decode("utf-8")


class TooDeep(ValueError):
    """Nested deeper than Python's recursion limit."""


def parse_toml(text: str) -> dict[str, Any]:
    """``tomllib.loads`` (TOMLDecodeError); nesting deeper than Python's recursion limit is TooDeep."""
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise TooDeep("nested too deeply") from None


def parse_json(text: str) -> Any:
    """``json.loads`` (ValueError); nesting deeper than Python's recursion limit is TooDeep."""
    try:
        return json.loads(text)
    except RecursionError:
        raise TooDeep("nested too deeply") from None

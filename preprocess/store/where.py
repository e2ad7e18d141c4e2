"""Selecting a version's rows by their fields: ``preprocess ls STORE --where "similarity < 0.995"`` and
the web UI's search and filters read the same expressions, evaluated here on whole columns.

An expression is conditions joined by ``and`` / ``or`` (``and`` binds tighter; no parentheses)::

    similarity < 0.995
    name ~ cam0 and format = avif
    folder ~ /data/incoming/gate-2 or camera = "Canon EOS 5D"
    capture_time >= 2026-11-01 and commit = 7D0G

A condition is ``FIELD OP VALUE``. FIELD is a row field (``ITEM_FIELDS``: similarity, quality,
bytes, status, format, source_path, camera_model, capture_time, ...) or one of ``ALIASES``:
``name`` (the source's file name), ``folder`` (its folder), ``path``, ``camera``, ``time``,
``spec`` (a fingerprint prefix or the spec's pipeline name; ``~`` looks in both), ``commit`` (the snapshot that added
the row: an id or a prefix of 4+ characters; see :mod:`preprocess.store.origins`), ``row``. A
``commit`` that names no commit of the version's history is NotFoundError REF_MISSING, as a missing
REF is (a typo is not "no rows"): the caller's columns give that history as :data:`HISTORY`.
OP: ``= != < <= > >=`` (numbers compare as numbers, text as text: ISO times sort as times) and
``~`` / ``!~`` (text contains VALUE, case-insensitive; with ``*`` or ``?`` a glob on the whole
text); ``CASELESS`` fields (stored in lower case) take VALUE in any case. VALUE: a number, a word, or a
quoted string. A NaN similarity matches no comparison, and an empty
text (a row without a capture time or camera) no ``< <= > >=``.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import cast

import numpy as np
import numpy.typing as npt

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, NotFoundError, did_you_mean
from preprocess.rows.schema import ITEM_COLUMNS

NUMERIC = frozenset(c.name for c in ITEM_COLUMNS if c.kind in ("int", "float")) | {"row"}
ITEM_FIELDS = tuple(c.name for c in ITEM_COLUMNS if c.name != "jpeg")
ALIASES = {"name": "source_path", "folder": "source_path", "path": "source_path", "camera": "camera_model",
           "time": "capture_time", "captured": "capture_time", "spec": "fingerprint", "commit": "commit",
           "row": "row"}
FIELDS = tuple(sorted(set(ITEM_FIELDS) | set(ALIASES)))
CASELESS = frozenset({"format", "encoder", "status", "source_format", "source_sha256"})  # stored in lower case
OPS = ("<=", ">=", "!=", "!~", "==", "=", "<", ">", "~")
_TOKEN = re.compile(r"""\s*(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<op><=|>=|!=|!~|==|=|<|>|~)"""
                    r"""|(?P<word>[^\s<>=!~"']+))""")

HISTORY = "history"  # not a row field: the snapshot ids of the version's history (any order), for ``commit``

type Column = npt.NDArray[np.generic]
type Columns = Callable[[str], Column]  # a column by name: a row field, "commit", "spec_name" or HISTORY
type Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Condition:
    """``field op value`` (``field`` as written; :attr:`column` is what it reads)."""

    field: str
    op: str
    value: str

    @property
    def column(self) -> str:
        return ALIASES.get(self.field, self.field)

    def __str__(self) -> str:
        value = self.value if re.fullmatch(r"[^\s\"']+", self.value) else f'"{self.value}"'
        return f"{self.field} {self.op} {value}"


@dataclass(frozen=True)
class Where:
    """Conditions in disjunctive form: a row matches when every condition of one group does."""

    groups: tuple[tuple[Condition, ...], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.groups)

    def __str__(self) -> str:
        return " or ".join(" and ".join(str(c) for c in g) for g in self.groups)

    def __and__(self, other: Where) -> Where:
        """Both (each group of one with each group of the other)."""
        if not self.groups or not other.groups:
            return self if self.groups else other
        return Where(tuple(a + b for a in self.groups for b in other.groups))

    def columns(self) -> list[str]:
        """The columns the expression reads (``commit`` and ``spec_name`` are the caller's)."""
        names = [c.column for g in self.groups for c in g]
        names += ["spec_name" for g in self.groups for c in g if c.field == "spec"]
        return list(dict.fromkeys(names))

    def mask(self, column: Columns, rows: int) -> Mask:
        """Which of ``rows`` rows match (all of them for an empty expression)."""
        if not self.groups:
            return np.ones(rows, dtype=bool)
        out = np.zeros(rows, dtype=bool)
        for group in self.groups:
            keep = np.ones(rows, dtype=bool)
            for c in group:
                keep &= _match(c, column, rows)
            out |= keep
        return out


def _bad(text: str, why: str) -> ConfigError:
    return ConfigError(f"--where {text[:200]!r}: {why}", code=ErrorCode.WHERE_INVALID,
                       hint=f"write FIELD OP VALUE joined by and/or, e.g. \"similarity < 0.995 and name ~ cam0\"; "
                            f"OP: {' '.join(OPS[:-1])} ~ (contains); fields: {', '.join(FIELDS)}")


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, text) pairs: kind is "op", "word" or "text" (a quoted string)."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise _bad(text, f"cannot read {text[pos:pos + 20]!r}")
        pos = m.end()
        kind = next(k for k in ("dq", "sq", "op", "word") if m.group(k) is not None)
        tokens.append(("text" if kind in ("dq", "sq") else kind, m.group(kind)))
    return tokens


def parse(text: str) -> Where:
    """An expression (see the module's doc); ConfigError WHERE_INVALID naming what is wrong."""
    text = text.strip()
    tokens = _tokens(text)
    groups: list[tuple[Condition, ...]] = []
    current: list[Condition] = []
    i = 0
    while i < len(tokens):
        if len(tokens) - i < 3:
            raise _bad(text, "a condition is FIELD OP VALUE")
        (fk, field), (ok, op), (vk, value) = tokens[i:i + 3]
        if fk != "word" or ok != "op" or vk == "op":
            raise _bad(text, f"expected FIELD OP VALUE at {field!r}")
        current.append(_condition(text, field.lower(), op, value))
        i += 3
        if i < len(tokens):
            joiner = tokens[i][1].lower()
            if tokens[i][0] != "word" or joiner not in ("and", "or", "&&", "||"):
                raise _bad(text, f"expected 'and' or 'or' before {tokens[i][1]!r}")
            if joiner in ("or", "||"):
                groups.append(tuple(current))
                current = []
            i += 1
            if i == len(tokens):
                raise _bad(text, f"nothing after {joiner!r}")
    if current:
        groups.append(tuple(current))
    return Where(tuple(groups))


def parse_all(texts: list[str]) -> Where:
    """Several expressions (``--where`` given more than once): rows must match each."""
    out = Where()
    for t in texts:
        if t.strip():
            out &= parse(t)
    return out


def _condition(text: str, field: str, op: str, value: str) -> Condition:
    if field not in FIELDS:
        raise _bad(text, f"no field {field!r}{did_you_mean(field, FIELDS)}")
    op = "=" if op == "==" else op
    if is_number(field) and op in ("~", "!~"):
        raise _bad(text, f"{field} is a number: compare it with = != < <= > >=")
    if is_number(field):
        try:
            number = float(value)
        except ValueError:
            raise _bad(text, f"{field} {op} {value!r}: {field} is a number") from None
        if not math.isfinite(number):
            raise _bad(text, f"{field} {op} {value!r}: not a finite number")
    if field == "commit" and op not in ("=", "!="):
        raise _bad(text, "commit takes = or != (a snapshot id or a prefix of 4+ characters)")
    if ALIASES.get(field, field) == "capture_time" and op in ("<", "<=", ">", ">=") and not is_time(value):
        raise _bad(text, f"{field} {op} {value!r}: not a time (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS)")
    return Condition(field, op, value)


_TIME = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:[T ](\d{2})(?::(\d{2})(?::(\d{2}))?)?)?)?)?")


def is_time(value: str) -> bool:
    """Whether ``value`` is an ISO time or the start of one (``2026``, ``2026-11``, ``2026-11-05T08:30``) that names a
    real moment (``2026-13-45`` does not): what capture times are compared with, as text."""
    m = _TIME.fullmatch(value)
    if m is None:
        return False
    y, mo, d, h, mi, sec = (int(g) if g else None for g in m.groups())
    try:
        datetime(y or 1, mo or 1, d or 1, h or 0, mi or 0, sec or 0)
    except ValueError:
        return False
    return True


_STR = np.dtypes.StringDType()
type Text = npt.NDArray[np.str_]  # numpy's variable-width strings (StringDType), as np.strings takes them


def _text(values: Column) -> Text:
    """A column as numpy's variable-width strings (what the reader gives text columns as)."""
    return cast("Text", values if values.dtype == _STR else np.asarray(values).astype(_STR))


def is_number(field: str) -> bool:
    """Whether ``field`` (a row field or one of :data:`ALIASES`) compares and sorts as a number."""
    return ALIASES.get(field, field) in NUMERIC


def field_values(field: str, column: Columns) -> Column:
    """What ``field`` (a row field or one of :data:`ALIASES`) is for every row, as ``--where`` compares it
    and ``--sort`` orders by it: a number column, or the text (a path's file name for ``name``)."""
    c = Condition(field, "=", "")
    return column(c.column) if is_number(field) else _derived(c, column)


def _derived(c: Condition, column: Columns) -> Text:
    """The text a condition compares: the file name or folder of a path, or the column itself."""
    values = _text(column(c.column))
    if c.field == "name":
        return _text(np.asarray([v.rsplit("/", 1)[-1] for v in values.tolist()], dtype=_STR))
    if c.field == "folder":
        return _text(np.asarray([v.rsplit("/", 1)[0] if "/" in v else "" for v in values.tolist()], dtype=_STR))
    return values


def _match(c: Condition, column: Columns, rows: int) -> Mask:
    if c.column == "row":
        return _compare(np.arange(rows, dtype=np.float64), c.op, float(c.value))
    if c.column in NUMERIC:
        numbers = np.asarray(column(c.column))
        if numbers.dtype.kind != "f":
            numbers = numbers.astype(np.float64)
        value = numbers.dtype.type(c.value)  # at the column's precision: similarity = 0.99 finds a float32 0.99
        return _compare(numbers, c.op, value) & ~np.isnan(numbers)
    if c.field == "commit":
        return _commit(c, column, rows)
    if c.field == "spec" and c.op in ("=", "!=", "~", "!~"):  # the fingerprint or the spec's name
        if c.op in ("~", "!~"):  # `spec ~ avif` matched the fingerprint's hex digits alone (a web UI audit)
            hit = _contains(_text(column("fingerprint")), c.value) | _contains(_text(column("spec_name")), c.value)
        else:
            hit = np.asarray(np.strings.startswith(_text(column("fingerprint")), c.value), dtype=np.bool_)
            hit |= _compare(_text(column("spec_name")), "=", c.value)
        return hit if c.op in ("=", "~") else ~hit
    if c.field in CASELESS:  # `format = AVIF` matched nothing, where the grid's format=AVIF matched (a web UI audit)
        c = replace(c, value=c.value.lower())
    values = _derived(c, column)
    if c.op in ("~", "!~"):
        hit = _contains(values, c.value)
        return hit if c.op == "~" else ~hit
    ordered = c.op not in ("=", "!=")  # no value is not before or after any
    return _compare(values, c.op, c.value) & ((values != "") if ordered else True)


def sort_order(keys: Column, *, numeric: bool, descending: bool) -> npt.NDArray[np.intp]:
    """The order of ``keys`` (stable; ties in row order, reversed when ``descending``), with what has no value
    (a NaN number, an empty text) last either way."""
    if numeric:
        numbers = np.asarray(keys).astype(np.float64)
        return np.argsort(-numbers if descending else numbers, kind="stable")
    idx = np.argsort(keys, kind="stable")
    if descending:
        idx = idx[::-1]
    empty = np.asarray(keys == "", dtype=np.bool_)[idx]
    return np.concatenate([idx[~empty], idx[empty]])


def _commit(c: Condition, column: Columns, rows: int) -> Mask:
    """The rows a ``commit`` condition selects; when none was added by a commit it names, the version's
    history is read to tell a commit that added no rows (no rows) from no such commit (REF_MISSING)."""
    hit: Mask = np.zeros(rows, dtype=np.bool_)
    if len(c.value) >= 4:
        hit = np.asarray(np.strings.startswith(_text(column("commit")), c.value.upper()), dtype=np.bool_)
    if not hit.any():
        _check_commit(c, [str(s) for s in column(HISTORY).tolist()])
    return hit if c.op == "=" else ~hit


def _check_commit(c: Condition, history: list[str]) -> None:
    """NotFoundError REF_MISSING unless ``c.value`` is a snapshot id of ``history`` or a prefix of 4+ of one."""
    value = c.value.upper()
    if len(value) >= 4 and any(s.startswith(value) for s in history):
        return
    near = {s[:len(value)] for s in history} if len(value) >= 4 else set()
    why = ("no commit of this version's history is {!r} or starts with it" if len(value) >= 4 else
           "{!r} is too short to name a commit: give 4 or more characters of its id")
    raise NotFoundError(f"{c}: {why.format(c.value)}{did_you_mean(value, near)}", code=ErrorCode.REF_MISSING,
                        hint="a snapshot id, or a prefix of 4+ characters of one, as `preprocess log STORE REF` "
                             "lists this version's commits")


def _contains(values: Text, needle: str) -> Mask:
    if any(ch in needle for ch in "*?["):
        pattern = re.compile(fnmatch.translate(needle.lower()))
        return np.asarray([bool(pattern.match(v.lower())) for v in values.tolist()], dtype=bool)
    return np.asarray(np.strings.find(np.strings.lower(values), needle.lower()) >= 0, dtype=np.bool_)


def _compare(values: npt.NDArray[np.generic], op: str, value: float | str | np.generic) -> Mask:
    a: npt.NDArray[np.generic] = np.asarray(values)
    match op:
        case "=":
            out = a == value
        case "!=":
            out = a != value
        case "<":
            out = np.less(a, value)
        case "<=":
            out = np.less_equal(a, value)
        case ">":
            out = np.greater(a, value)
        case _:
            out = np.greater_equal(a, value)
    return np.asarray(out, dtype=np.bool_)

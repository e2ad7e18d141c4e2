"""A recorded spec written back as TOML (the web UI's "download the spec" of a commit): the spec a
commit's provenance holds (:attr:`preprocess.rows.provenance.Provenance.spec`), as a file ``run
--spec`` takes. Sections of scalars and lists, as specs are; ``None`` values are left out (TOML has
no null: the field takes its default, as it did when the spec left it out)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence

from preprocess.core.jsonable import Json
from preprocess.core.names import quote

_BARE = re.compile(r"^[A-Za-z0-9_-]+\Z")


def key(k: str) -> str:
    """A bare key when TOML allows one, else a quoted key."""
    return k if _BARE.match(k) else json.dumps(k, ensure_ascii=False)


def value(v: Json) -> str:
    """One TOML value (a basic string uses JSON's escapes, which TOML shares)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items() if x is not None) + "}"
    if isinstance(v, Sequence):
        return "[" + ", ".join(value(x) for x in v if x is not None) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dumps(spec: Mapping[str, Json], header: Sequence[str] = ()) -> str:
    """``spec`` (section -> fields) as TOML, each section a table; top-level scalars first."""
    lines = [f"# {quote(h)}" for h in header]  # a newline in a commit message would end the comment (TOML)
    top = {k: v for k, v in spec.items() if not isinstance(v, Mapping) and v is not None}
    lines += [f"{key(k)} = {value(v)}" for k, v in top.items()]
    for section, fields in spec.items():
        if isinstance(fields, Mapping):
            lines += ["", f"[{key(section)}]"]
            lines += [f"{key(k)} = {value(v)}" for k, v in fields.items() if v is not None]
    return "\n".join(lines).lstrip("\n") + "\n"

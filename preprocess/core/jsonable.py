"""What ``--json`` prints and ``to_dict()`` returns, as types: plain JSON values, and the version of
the command line's JSON documents (``docs/json.md``, ``docs/json-schema.json``).

``Json`` uses the read-only container types (``Sequence``, ``Mapping``), so a ``list[str]`` or a
``dict[str, int]`` is a ``Json`` as it is (a ``list[Json]`` would not take a ``list[str]``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

type Json = str | int | float | bool | Sequence[Json] | Mapping[str, Json] | None
type JsonObject = dict[str, Json]

# The version of every `--json` document (`{"version": JSON_VERSION, "command": ..., "result": ...}`):
# raised when a field is renamed, removed or changes its meaning; new fields do not raise it.
JSON_VERSION = 1

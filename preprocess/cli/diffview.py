"""How ``preprocess diff`` prints a :class:`~preprocess.store.diff.Diff`: the summary rows, the pairs (the same
source under two specs) and the items added, removed and changed (as ``ls`` names sources: the whole
path on a wide terminal, else the file name)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from rich import box
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from preprocess.cli.app import fmt
from preprocess.core import names
from preprocess.core.units import count, size

if TYPE_CHECKING:
    from preprocess.store.diff import Diff


def items_table(d: Diff, limit: int, *, wide: bool) -> Table | None:
    """The rows added alone, removed alone and changed, at most ``limit`` of each (None: none)."""
    rows = ([("+", r, "") for r in d.added_alone[:limit]] + [("-", r, "") for r in d.removed_alone[:limit]]
            + [("~", c.item, ", ".join(c.fields)) for c in d.changed[:limit]])
    if not rows:
        return None
    t = Table(box=box.SIMPLE_HEAD)
    t.add_column("", no_wrap=True)
    t.add_column("source" if wide else "file", overflow="fold", ratio=3,
                 min_width=min(max(len(source_name(r.source_path, wide=False)) for _, r, _ in rows), 32))
    t.add_column("spec", no_wrap=True)
    t.add_column("status", no_wrap=True)
    t.add_column("bytes", justify="right", no_wrap=True)
    t.add_column("similarity", justify="right", no_wrap=True)
    t.add_column("fields", overflow="fold", ratio=1)
    for sign, r, fields in rows:
        t.add_row(sign, Text(source_name(r.source_path, wide=wide)), r.fingerprint[:8], escape(r.status), size(r.bytes),
                  fmt(r.similarity, ".4f"), escape(fields))
    return t


def source_name(stored: str, *, wide: bool) -> str:
    """A row's source as ``ls`` prints it: the whole path (wide terminals) or its file name, escaped."""
    path = names.real(stored)
    return names.quote(path if wide else os.path.basename(path))


def pairs_table(d: Diff, limit: int) -> Table:
    """The same sources under the two versions' specs: ``name: jpeg 27.0 KB q41 -> avif 30.4 KB q47``."""
    both = " ; +: a's row kept too" if any(p.kept for p in d.pairs) else ""
    t = Table(title=f"{len(d.pairs)} sources stored under another spec (a -> b{both})", title_justify="left",
              box=box.SIMPLE_HEAD)
    t.add_column("source", overflow="fold", ratio=2,
                 min_width=min(max(len(source_name(p.source_path, wide=False)) for p in d.pairs[:limit]), 32))
    t.add_column("a", no_wrap=True)
    t.add_column("", no_wrap=True)
    t.add_column("b", no_wrap=True)
    t.add_column("bytes", justify="right", no_wrap=True)
    for p in d.pairs[:limit]:
        delta = p.b.bytes - p.a.bytes
        t.add_row(Text(source_name(p.source_path, wide=False)), escape(p.a.words()), "+" if p.kept else "->",
                  escape(p.b.words()),
                  f"{'+' if delta >= 0 else '-'}{size(abs(delta))}")
    if len(d.pairs) > limit:
        t.caption = f"{len(d.pairs) - limit} more (--limit, or --json)"
    return t


def _kept(d: Diff) -> str:
    """How many of the pairs keep their first row too (the source stored under both specs), in words."""
    kept = sum(p.kept for p in d.pairs)
    return "" if not kept else f" ({'all' if kept == len(d.pairs) else kept} also kept under the first)"


def _failures(d: Diff, limit: int = 10) -> list[tuple[str, str]]:
    """Each failure added (+) or gone (-), by the source it names; the rest counted (``--json`` lists all)."""
    keys = [("+", k) for k in d.failures_added] + [("-", k) for k in d.failures_removed]
    rows = [("", f"{sign} [{f['code']}] {names.shown(str(f['source_path']))}")
            for sign, k in keys[:limit] for f in [d.failure(k)]]
    return rows + ([("", f"... {len(keys) - limit} more (--json lists them)")] if len(keys) > limit else [])


def summary_rows(d: Diff, ref_a: str, ref_b: str) -> list[tuple[str, str]]:
    rows = [
        ("from", f"{ref_a} ({d.a.snapshot}): {count(d.items_a, 'item')}, {size(d.bytes_a)}"),
        ("to", f"{ref_b} ({d.b.snapshot}): {count(d.items_b, 'item')}, {size(d.bytes_b)}"),
        ("common base", d.base or "-"),
        ("items", f"+{len(d.added)} added, -{len(d.removed)} removed, {len(d.changed)} changed, "
                  f"{d.unchanged} unchanged"),
        *([("same sources", f"{len(d.pairs)} stored under another spec{_kept(d)}: +{len(d.added_alone)} new "
                            f"sources, -{d.sources_gone} sources gone")] if d.pairs else []),
        *([("removed", f"{count(len(d.removed_alone), 'row')} of {ref_a}: {d.sources_gone} sources gone, "
                       f"{count(d.removed_held, 'row')} of sources still stored in {ref_b} under another spec")]
          if d.removed_held else []),  # as the web UI's compare page says it (only --json said it)
        ("bytes", f"{'+' if d.bytes_delta >= 0 else '-'}{size(abs(d.bytes_delta))} "
                  f"(+{size(d.bytes_added)} added, -{size(d.bytes_removed)} removed)"),
        ("failures", f"+{len(d.failures_added)}, -{len(d.failures_removed)}"),
        *_failures(d),
    ]
    for specs, sign in ((d.specs_added, "+"), (d.specs_removed, "-")):
        rows += [("spec", f"{sign} {names.quote(s.info.pipeline.name or '?')} {s.fingerprint}: {s.info.summary()}")
                 for s in specs]
    rows += [("model", f"+ {m}") for m in d.models_added] + [("model", f"- {m}") for m in d.models_removed]
    return rows

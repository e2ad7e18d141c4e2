"""`preprocess ls STORE [REF] --where ...`: a version's rows that match, each with the commit that added it."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from preprocess.cli.app import app, emit, err, fail, fmt, out, quiet_libraries
from preprocess.core import names
from preprocess.core.errors import PreprocessError
from preprocess.core.units import number, size

if TYPE_CHECKING:
    from preprocess.store.listing import Listing

SHORT_ID = 12
WIDE = 110


@app.command("ls")
def ls_cmd(
    store: Annotated[str, typer.Argument(help="The dataset: a local path or s3://BUCKET/PREFIX.", show_default=False)],
    ref: Annotated[str, typer.Argument(help="The version (a branch, tag, snapshot or REF~N).")] = "main",
    where: Annotated[list[str] | None, typer.Option(
        "--where", "-w", help="Keep the rows that match, e.g. \"similarity < 0.995\", \"name ~ cam0 and "
                              "format = avif\", \"commit = 7D0G\" (repeatable: each must match). Fields: every "
                              "row field, and name, folder, camera, time, spec, commit, row.")] = None,
    sort: Annotated[str, typer.Option(help="Order by this field (a NaN or empty value last).")] = "row",
    desc: Annotated[bool, typer.Option("--desc", help="Largest first.")] = False,
    limit: Annotated[int | None, typer.Option(help="Print at most this many rows (1 or more).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List a version's rows (all, or those --where selects): row, source, status, format, size, bytes,
    quality, similarity and the commit that added it (--json: every row field, the gate's checks too)."""
    from preprocess.store import open_repo
    from preprocess.store.listing import LISTED, Order, ls
    from preprocess.store.where import ITEM_FIELDS, parse_all

    js = "ls" if as_json else ""
    quiet_libraries()
    try:
        listing = ls(open_repo(store, create=False), ref, parse_all(where or []), order=Order(sort, desc),
                     limit=limit, fields=ITEM_FIELDS if as_json else LISTED)  # --json: every row field
    except PreprocessError as exc:
        fail(exc, as_json=js)
        return
    if as_json:
        emit("ls", listing.to_dict())
        return
    if not listing.total:  # an empty table headed "file" said nothing of why
        err.print(f"{names.quote(ref)} holds no stored image (its failures: `preprocess show {names.quote(store)} "
                  f"{names.quote(ref)}`, the web UI's failures page)", highlight=False, soft_wrap=True)
        return
    out.print(_table(store, ref, listing, sort))
    shown = len(listing.rows)
    more = f" (showing {shown}: --limit)" if shown < listing.matched else ""
    if listing.where or more:  # what the table alone does not say
        err.print(f"{listing.matched} of {listing.total} rows match{more}", highlight=False, soft_wrap=True)


# the fields the table shows; ordering by another one adds its column
_SHOWN = {"row", "source_path", "status", "format", "width", "height", "bytes", "quality", "similarity", "commit"}


def _table(store: str, ref: str, listing: Listing, sort: str = "row") -> Table:
    title = f"{names.quote(store)} ({ref})" + (f" where {names.line(listing.where)}" if listing.where else "")
    from preprocess.store.where import ALIASES

    key = ALIASES.get(sort, sort)
    # the crops view was checked: shown beside the whole view's (it binds most rows; whole alone read as overkill)
    crops = any(number(r.get("similarity_crops")) is not None for r in listing.rows)
    shown = _SHOWN | ({"similarity_crops"} if crops else set())
    extra = key if key not in shown and listing.rows and key in listing.rows[0] else ""
    # narrow terminals: the file name, no dimensions (the rest is in --json); the order's own column needs room,
    # and so does the crops view's
    wide = out.width >= WIDE + (_width(listing, extra) if extra else 0) + (len(" crops  0.9999") if crops else 0)
    sims = ["whole", "crops"] if crops else ["similarity"]
    columns: dict[str, list[str | Text]] = {"row": [], "source" if wide else "file": [], "status": [], "stored": [],
                                            "q": [], **{name: [] for name in sims}, "commit": []}
    cells = list(columns.values())
    for r in listing.rows:
        dims = f" {r['width']}x{r['height']}" if wide else ""
        path = names.real(str(r["source_path"]))  # printed escaped (core.names), whole or its file name
        row: list[str | Text] = [
            str(r["row"]), Text(names.quote(path if wide else os.path.basename(path))), escape(str(r["status"])),
            escape(f"{r['format']}{dims} {size(int(r['bytes'] or 0))}"), str(r["quality"]),
            fmt(number(r["similarity"]), ".4f"),
            *([fmt(number(r.get("similarity_crops")), ".4f")] if crops else []),
            str(r["commit"])[:SHORT_ID if wide else 8]]
        for column, cell in zip(cells, row, strict=True):
            column.append(cell)
    if extra:
        columns[escape(extra)] = [_cell(r[extra]) for r in listing.rows]
    gone = _left_out(columns, out.width)
    for name in gone:
        del columns[name]
    t = Table(title=escape(title), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=wide,
              caption=f"left out at {out.width} columns: {', '.join(gone)} (--json has every field)" if gone else None,
              caption_justify="left")
    for name in columns:
        t.add_column(name, justify="right" if name in ("row", "q", "similarity", "whole", "crops") else "left",
                     **({"overflow": "fold", "ratio": 3} if name in ("source", "file") else
                        {"overflow": "fold"} if name == extra else {"no_wrap": True}))
    for k in range(len(listing.rows)):
        t.add_row(*(column[k] for column in columns.values()))
    return t


# what a narrow terminal leaves out first, so that file names stay whole (the rest is in --json)
_LEAVE_OUT = ("commit", "q", "stored", "whole", "similarity", "crops", "status")


def _left_out(columns: dict[str, list[str | Text]], width: int) -> list[str]:
    """The columns of :data:`_LEAVE_OUT` to leave out, in that order, until the rest fits ``width`` with each
    file name whole (at most 24 characters of it)."""
    widths = {n: 3 + min(24 if n in ("file", "source") else 99,  # each column measured once (an escaped
                         max([len(n), *(len(c) if isinstance(c, str) else c.cell_len for c in cells)]))  # cell
              for n, cells in columns.items()}  # counts its escapes: a column can only seem wider)
    need, gone = sum(widths.values()), []
    for name in (n for n in _LEAVE_OUT if n in widths):
        if need <= width:
            break
        need -= widths[name]
        gone.append(name)
    return gone


def _width(listing: Listing, extra: str) -> int:
    """The columns the order's own column ``extra`` takes (its widest cell, at most 24, and its padding)."""
    return 3 + min(24, max(len(extra), *(len(_cell(r[extra]).plain) for r in listing.rows)))


def _cell(value: object) -> Text:
    """A field's value as one line of text ("-" for none)."""
    if isinstance(value, float):
        return Text(f"{value:.4f}")
    return Text(names.line(str(value)) if value not in (None, "") else "-")

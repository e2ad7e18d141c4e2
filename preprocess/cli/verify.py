"""`preprocess verify STORE [REF]`: read every stored image of a version back and check it against its row."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from preprocess.cli.app import app, emit, err, fail, out, progress_for, quiet_libraries
from preprocess.core import names
from preprocess.core.codes import ErrorCode
from preprocess.core.errors import PreprocessError, StorageError
from preprocess.core.units import count, size

if TYPE_CHECKING:
    from preprocess.verify import Verified

SHOWN = 50  # damaged rows listed in the text output (--json lists every one)


@app.command("verify")
def verify_cmd(store: Annotated[str, typer.Argument(help="The dataset: a local path or s3://BUCKET/PREFIX.",
                                                    show_default=False)],
               ref: Annotated[str, typer.Argument(help="The version to verify (REF, REF~N).")] = "main",
               decode: Annotated[bool, typer.Option(help="Decode every image in full (--no-decode: read and "
                                                         "check each one's header only, faster).")] = True,
               as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False) -> None:
    """Read a version back in full: every field, embedding and failure row (with their checksums, in stores
    made since 2026-12-07), and every stored image checked against its row: its CRC32C, its length and format,
    its header's size, and a full decode. Writes nothing. Exit codes: 0 every row intact; 5 a row damaged
    (each listed with its code) or the store unreadable; 2 a REF that is not there."""
    from preprocess.store import open_repo
    from preprocess.verify import verify

    js = "verify" if as_json else ""
    try:
        quiet_libraries()
        done = verify(open_repo(store, create=False), ref, decode=decode,
                      progress=None if as_json else progress_for("verifying"))
    except PreprocessError as exc:
        fail(exc, as_json=js)
        raise  # unreachable: fail() exits
    if as_json:
        emit("verify", done.to_dict())
    else:
        _print(done)
    if not done.ok:
        if not as_json:
            fail(StorageError(f"{count(done.damaged_rows, 'row')} damaged in {ref} (of {done.rows:,} items and "
                              f"{count(done.failures, 'failure')})", code=ErrorCode.STORE_IO,
                              hint="restore the store's files from a backup or a copy, or store the sources listed "
                                   "above again"))
        raise typer.Exit(5)


def _print(done: Verified) -> None:
    how = "decoded in full" if done.decoded else "headers checked (--no-decode)"
    sums = ("CRC32C and checksums checked" if done.crc and done.checksums else
            "nothing stored to check" if not done.rows and not done.failures else  # a store's first, empty commit
            "no checksums in this store's older arrays (made before 2026-12-07): their bits are not checked")
    out.print(f"verified {count(done.rows, 'row')} and {count(done.failures, 'failure')} of {done.ref['ref']} "
              f"({done.ref['snapshot']}): {done.intact:,} items intact, {done.damaged_rows:,} rows damaged; "
              f"{size(done.bytes)} of images read, {how}, {sums}", highlight=False, soft_wrap=True)
    if done.damaged:
        t = Table(box=box.SIMPLE_HEAD, show_edge=False)
        for c in ("row", "source", "code", "what"):
            t.add_column(c, overflow="fold")
        for d in done.damaged[:SHOWN]:
            row = str(d.row) if d.table == "items" else f"failure {d.row}"
            t.add_row(row, escape(names.line(d.source_path)), d.code, escape(names.line(d.message)))
        out.print(t)
        if len(done.damaged) > SHOWN:
            err.print(f"... and {len(done.damaged) - SHOWN:,} more (--json lists every one)", highlight=False)

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
    """Read every stored image of a version back and check it against its row: its CRC32C (stores made since
    2026-12-07), its length and format, its header's size, and a full decode. Writes nothing. Exit codes: 0
    every row intact; 5 a row damaged (each listed with its code) or the store unreadable; 2 a bad REF."""
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
            fail(StorageError(f"{count(len(done.damaged), 'row')} of {done.rows:,} damaged in {ref}",
                              code=ErrorCode.STORE_IO,
                              hint="restore the store's files from a backup or a copy; `preprocess show STORE "
                                   "--item ROW` gives a row's source, to store it again"))
        raise typer.Exit(5)


def _print(done: Verified) -> None:
    how = "decoded in full" if done.decoded else "headers checked (--no-decode)"
    crc = "CRC32C checked" if done.crc else "no CRC32C in this store (made before 2026-12-07)"
    out.print(f"verified {count(done.rows, 'row')} of {done.ref['ref']} ({done.ref['snapshot']}): "
              f"{done.rows - len(done.damaged):,} intact, {len(done.damaged):,} damaged; {size(done.bytes)} read, "
              f"{how}, {crc}; {done.seconds:.1f} s", highlight=False, soft_wrap=True)
    if done.damaged:
        t = Table(box=box.SIMPLE_HEAD, show_edge=False)
        for c in ("row", "source", "code", "what"):
            t.add_column(c, overflow="fold")
        for d in done.damaged[:SHOWN]:
            t.add_row(str(d.row), escape(names.line(d.source_path)), d.code, escape(names.line(d.message)))
        out.print(t)
        if len(done.damaged) > SHOWN:
            err.print(f"... and {len(done.damaged) - SHOWN:,} more (--json lists every one)", highlight=False)

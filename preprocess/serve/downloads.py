"""What the web UI lets a person take away: one stored image as a file, the items a filter selects
(a zip of their images with a manifest, or the manifest alone as CSV), and a commit's spec as TOML.

File names inside a zip are ``preprocess export``'s (``<sha256[:16]>-<fingerprint>.<ext>``), and its
manifest has export's columns (:func:`~preprocess.store.export.manifest_columns`); the manifest alone
(CSV) has them all but ``stored_sha256``: it does not read the images. Text cells are neutralised for
spreadsheets as the export's are. Nothing is written to disk. With ``redact`` (``serve --redact``) a download
tells what the pages tell (:func:`~preprocess.serve.pages.shown_path`): a source by its file name, a spec by
the last part of its path.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import zipfile
from collections.abc import Sequence
from urllib.parse import quote

import numpy as np

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, NotFoundError
from preprocess.rows.provenance import Provenance
from preprocess.rows.spec_toml import dumps
from preprocess.serve.catalog import Catalog
from preprocess.serve.grid import Rows
from preprocess.serve.pages import shown_path
from preprocess.store.cells import Record
from preprocess.store.export import FIELDS, csv_cell, file_name, manifest_columns, manifest_files
from preprocess.store.history import Commit

MAX_ITEMS = 5000  # images in one zip
MAX_BYTES = 512 * 2**20  # stored bytes in one zip


def attachment(name: str) -> str:
    """A Content-Disposition header saving the response as ``name`` (RFC 6266): an ASCII ``filename`` every
    client reads, and the name itself as UTF-8 (``filename*``) when it is not ASCII. A header is Latin-1, so a
    source called ``日本.jpg`` put as it is made every download of its row a 500 (and ``café.jpg`` one that
    clients decoded as they guessed)."""
    plain = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_.") else "_" for ch in name)
    if plain == name:
        return f'attachment; filename="{name}"'
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"


def item_file(cat: Catalog, snapshot: str, row: int) -> tuple[bytes, str]:
    """One stored image's bytes, as stored, and its file name (``<source name>-<fingerprint>.<ext>``)."""
    r = cat.item(snapshot, row)
    stem = str(r["source_path"]).rsplit("/", 1)[-1].rsplit(".", 1)[0] or "image"
    name = file_name(str(r["source_sha256"]), str(r["fingerprint"]), str(r["format"]))
    ext = name.rsplit(".", 1)[-1]
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)[:80]
    return cat.stored(snapshot, row), f"{safe}-{str(r['fingerprint'])[:8]}.{ext}"


def _manifest(cat: Catalog, snapshot: str, rows: Rows, *, redact: bool) -> list[Record]:
    """The selected rows' manifest records, every column but ``stored_sha256`` (``redact``: sources by file name)."""
    records = cat.rows(snapshot, rows, list(FIELDS))
    commits = cat.origins(snapshot).item_commits(rows)
    files = manifest_files((str(r["source_sha256"]), str(r["fingerprint"]), str(r["format"]), int(r["row"] or 0))
                           for r in records)
    for r, c, f in zip(records, commits, files, strict=True):
        r["file"], r["commit"], r["snapshot"] = f, c, snapshot
        if redact:
            r["source_path"] = shown_path(str(r["source_path"] or ""), redact=True)
    return records


def _csv(records: Sequence[Record], *, stored_sha256: bool) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    header = manifest_columns(stored_sha256=stored_sha256)
    w.writerow(header)
    for r in records:
        w.writerow([csv_cell(r[c]) for c in header])
    return buf.getvalue().encode("utf-8")


def selection_csv(cat: Catalog, snapshot: str, rows: Rows, *, redact: bool = False) -> bytes:
    """The manifest of the selected rows (no images, so no ``stored_sha256``)."""
    return _csv(_manifest(cat, snapshot, rows, redact=redact), stored_sha256=False)


def selection_zip(cat: Catalog, snapshot: str, rows: Rows, *, redact: bool = False) -> bytes:
    """A zip of the selected rows' stored images and their manifest.csv (ConfigError SERVE_TOO_LARGE
    past :data:`MAX_ITEMS` images or :data:`MAX_BYTES` bytes: filter more, or `preprocess export`)."""
    total = int(np.asarray(cat.column(snapshot, "bytes")[rows], dtype=np.int64).sum())
    if rows.size > MAX_ITEMS or total > MAX_BYTES:
        raise ConfigError(f"the selection is {rows.size} images, {total / 2**20:.0f} MiB: more than a download "
                          f"takes ({MAX_ITEMS} images, {MAX_BYTES // 2**20} MiB)", code=ErrorCode.SERVE_TOO_LARGE,
                          hint="filter further, take the manifest (CSV) alone, or use `preprocess export STORE DIR`")
    records = _manifest(cat, snapshot, rows, redact=redact)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for r in records:  # every row its own file (manifest_files)
            data = cat.stored(snapshot, int(r["row"] or 0))
            r["stored_sha256"] = hashlib.sha256(data).hexdigest()
            z.writestr(str(r["file"]), data)
        z.writestr("manifest.csv", _csv(records, stored_sha256=True), compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def spec_toml(commit: Commit, *, redact: bool = False) -> str:
    """The spec ``commit``'s job ran with, as a TOML file ``preprocess run --spec`` takes
    (NotFoundError SERVE_NOT_FOUND when the commit records none: it was not made by a job); ``redact``: the
    file it was read from by the last part of its path."""
    p: Provenance | None = commit.provenance
    if p is None or not p.spec:
        raise NotFoundError(f"commit {commit.id} records no spec (it was not made by a job)",
                          code=ErrorCode.SERVE_NOT_FOUND, hint="open a commit that `preprocess log` lists")
    header = [f"The spec of commit {commit.id} ({commit.written_at:%Y-%m-%d %H:%M} UTC): {commit.message}",
              f"recorded from {_spec_path(p.spec_path, redact=redact)}, sha256 {p.spec_sha256 or '?'}, "
              f"fingerprint {p.fingerprint or '?'}",
              "`preprocess run ... --spec THIS_FILE` runs it again"]
    return dumps(p.spec, header)


def _spec_path(path: str, *, redact: bool) -> str:
    """A spec's recorded path as the commit page shows it (:func:`~preprocess.serve.pages.redacted`)."""
    shown = os.path.basename(path) if redact else path
    return shown or "?"

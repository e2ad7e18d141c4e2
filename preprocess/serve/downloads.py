"""What the web UI lets a person take away: one stored image as a file, the items a filter selects
(a zip of their images with a manifest, or the manifest alone as CSV), and a commit's spec as TOML.

File names inside a zip are ``preprocess export``'s (``<sha256[:16]>-<fingerprint>.<ext>``), and the
manifest has its columns plus ``row`` and ``commit`` (the snapshot that added the row); its text
cells are neutralised for spreadsheets as the export's are. Nothing is written to disk.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Sequence

import numpy as np

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, NotFoundError
from preprocess.rows.provenance import Provenance
from preprocess.rows.schema import ITEM_COLUMNS
from preprocess.rows.spec_toml import dumps
from preprocess.serve.catalog import Catalog
from preprocess.serve.grid import Rows
from preprocess.store.cells import Record
from preprocess.store.export import csv_cell, file_name
from preprocess.store.history import Commit

MAX_ITEMS = 5000  # images in one zip
MAX_BYTES = 512 * 2**20  # stored bytes in one zip
FIELDS = [c.name for c in ITEM_COLUMNS if c.name != "jpeg"]


def item_file(cat: Catalog, snapshot: str, row: int) -> tuple[bytes, str]:
    """One stored image's bytes, as stored, and its file name (``<source name>-<fingerprint>.<ext>``)."""
    r = cat.item(snapshot, row)
    stem = str(r["source_path"]).rsplit("/", 1)[-1].rsplit(".", 1)[0] or "image"
    name = file_name(str(r["source_sha256"]), str(r["fingerprint"]), str(r["format"]))
    ext = name.rsplit(".", 1)[-1]
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)[:80]
    return cat.stored(snapshot, row), f"{safe}-{str(r['fingerprint'])[:8]}.{ext}"


def _manifest(cat: Catalog, snapshot: str, rows: Rows) -> tuple[list[Record], list[str]]:
    records = cat.rows(snapshot, rows, FIELDS)
    commits = cat.origins(snapshot).item_commits(rows)
    for r, c in zip(records, commits, strict=True):
        r["commit"] = c
    names = [f"images/{file_name(str(r['source_sha256']), str(r['fingerprint']), str(r['format']))}" for r in records]
    return records, names


def _csv(records: Sequence[Record], names: Sequence[str], snapshot: str) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    header = ["file", "row", *FIELDS, "commit", "snapshot"]
    w.writerow(header)
    for r, name in zip(records, names, strict=True):
        w.writerow([csv_cell(v) for v in (name, r["row"], *(r[f] for f in FIELDS), r["commit"], snapshot)])
    return buf.getvalue().encode("utf-8")


def selection_csv(cat: Catalog, snapshot: str, rows: Rows) -> bytes:
    """The manifest of the selected rows (no images)."""
    records, names = _manifest(cat, snapshot, rows)
    return _csv(records, names, snapshot)


def selection_zip(cat: Catalog, snapshot: str, rows: Rows) -> bytes:
    """A zip of the selected rows' stored images and their manifest.csv (ConfigError SERVE_TOO_LARGE
    past :data:`MAX_ITEMS` images or :data:`MAX_BYTES` bytes: filter more, or `preprocess export`)."""
    total = int(np.asarray(cat.column(snapshot, "bytes")[rows], dtype=np.int64).sum())
    if rows.size > MAX_ITEMS or total > MAX_BYTES:
        raise ConfigError(f"the selection is {rows.size} images, {total / 2**20:.0f} MiB: more than a download "
                          f"takes ({MAX_ITEMS} images, {MAX_BYTES // 2**20} MiB)", code=ErrorCode.SERVE_TOO_LARGE,
                          hint="filter further, take the manifest (CSV) alone, or use `preprocess export STORE DIR`")
    records, names = _manifest(cat, snapshot, rows)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        written: set[str] = set()
        for r, name in zip(records, names, strict=True):
            if name not in written:  # the same key twice in one version (not written by preprocess jobs)
                z.writestr(name, cat.stored(snapshot, int(r["row"] or 0)))
                written.add(name)
        z.writestr("manifest.csv", _csv(records, names, snapshot), compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def spec_toml(commit: Commit) -> str:
    """The spec ``commit``'s job ran with, as a TOML file ``preprocess run --spec`` takes
    (ConfigError CONFIG when the commit records none: it was not made by a job)."""
    p: Provenance | None = commit.provenance
    if p is None or not p.spec:
        raise NotFoundError(f"commit {commit.id} records no spec (it was not made by a job)",
                          code=ErrorCode.SERVE_NOT_FOUND, hint="open a commit that `preprocess log` lists")
    header = [f"The spec of commit {commit.id} ({commit.written_at:%Y-%m-%d %H:%M} UTC): {commit.message}",
              f"recorded from {p.spec_path or '?'}, sha256 {p.spec_sha256 or '?'}, fingerprint {p.fingerprint or '?'}",
              "`preprocess run ... --spec THIS_FILE` runs it again"]
    return dumps(p.spec, header)

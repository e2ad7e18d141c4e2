"""A mutation fuzzer over real image bytes, through the real `run` (issue 16, "Done when").

Seeds: small crops of the bundled photos as baseline and progressive JPEG, PNG, uncompressed and LZW
TIFF, and lossy WebP (made with Pillow and imagecodecs). Each mutant is a truncation, bit flips, a
run of random or zero bytes, a header field set to an extreme value, or bytes inserted or deleted in
the header. All of them go through one `preprocess run` (a subprocess with a time limit), which must:
not hang, print no traceback, give every input exactly one row or failure (or skip it as a copy of
content stored under another name), and leave a store readable at its last commit, with every
stored image decodable. The seed is fixed: a failure reproduces with the same files.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import icechunk
import imagecodecs
import numpy as np
from PIL import Image

from preprocess.pipeline.images import decode_rgb
from tests.paths import ROOT
from tests.plain import array, blob, column, open_root

SEED = 20261130
MUTANTS_PER_SEED = 40
RUN_TIMEOUT_S = 240  # the whole job; a hang on any input fails the test here


def _seeds(photos: list[Path]) -> dict[str, bytes]:
    crops = [np.ascontiguousarray(np.asarray(Image.open(p).convert("RGB").reduce(4))[:96, :128]) for p in photos[:2]]
    out: dict[str, bytes] = {}
    for n, arr in enumerate(crops):
        img = Image.fromarray(arr)
        for name, fmt, kw in (("base.jpg", "JPEG", {"quality": 85}), ("prog.jpg", "JPEG", {"progressive": True}),
                              ("img.png", "PNG", {}), ("raw.tif", "TIFF", {})):
            buf = io.BytesIO()
            img.save(buf, format=fmt, **kw)
            out[f"{n}-{name}"] = buf.getvalue()
        out[f"{n}-lzw.tif"] = bytes(imagecodecs.tiff_encode(arr, compression="lzw"))
        out[f"{n}-lossy.webp"] = bytes(imagecodecs.webp_encode(arr, 80, lossless=False))
    return out


def _mutations(rng: np.random.Generator) -> list[Callable[[bytes], bytes]]:
    def truncate(d: bytes) -> bytes:
        return d[:int(rng.integers(1, len(d)))]

    def flip_bits(d: bytes) -> bytes:
        b = bytearray(d)
        for pos in rng.integers(0, len(b), int(rng.integers(1, 9))):
            b[pos] ^= 1 << int(rng.integers(0, 8))
        return bytes(b)

    def random_run(d: bytes) -> bytes:
        at, n = int(rng.integers(0, len(d))), int(rng.integers(1, 200))
        return d[:at] + bytes(rng.integers(0, 256, n, dtype=np.uint8)) + d[at + n:]

    def zero_run(d: bytes) -> bytes:
        at, n = int(rng.integers(0, len(d))), int(rng.integers(1, 400))
        return d[:at] + bytes(min(n, len(d) - at)) + d[at + n:]

    def header_field(d: bytes) -> bytes:  # a 1/2/4-byte field in the first 128 bytes set to an extreme
        b = bytearray(d)
        width = int(rng.choice([1, 2, 4]))
        at = int(rng.integers(0, min(128, len(b) - width)))
        b[at:at + width] = bytes([int(rng.choice([0x00, 0xFF, 0x7F, 0x80]))]) * width
        return bytes(b)

    def insert_delete(d: bytes) -> bytes:
        at = int(rng.integers(2, min(200, len(d))))
        if rng.random() < 0.5:
            return d[:at] + bytes(rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8)) + d[at:]
        return d[:at] + d[at + int(rng.integers(1, 16)):]

    return [truncate, flip_bits, random_run, zero_run, header_field, insert_delete]


def test_mutated_images_through_run(tmp_path: Path, small_photos: list[Path]) -> None:
    rng = np.random.default_rng(SEED)
    mutate = _mutations(rng)
    folder = tmp_path / "in"
    folder.mkdir()
    files: dict[str, bytes] = {}
    for name, data in _seeds(small_photos).items():
        files[name] = data
        stem, ext = name.rsplit(".", 1)
        for k in range(MUTANTS_PER_SEED):
            files[f"{stem}-m{k:02d}.{ext}"] = mutate[k % len(mutate)](data)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    spec = tmp_path / "fuzz.toml"
    spec.write_text('[quality]\nmode = "fixed"\nvalue = 80\n[limits]\nmax_pixels = 4000000\n')
    store = tmp_path / "s.icechunk"
    proc = subprocess.run([sys.executable, "-m", "preprocess", "run", str(folder), "--store", str(store),
                           "--spec", str(spec), "--engine", "pillow", "--json"],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert proc.returncode in (0, 3), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    summary = json.loads(proc.stdout)
    assert summary["sources"] == len(files)
    assert summary["stored"] + summary["failed"] + summary["skipped"] == len(files)
    assert summary["stored"] > 12 and summary["failed"] > 100  # the seeds (and harmless mutants) are stored
    assert not [f for f in summary["failures"] if f["code"] == "E_ENGINE"]  # every failure is a decoder verdict

    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(store)))
    head = next(iter(repo.ancestry(branch="main")))
    assert head.id == summary["snapshot"]
    root = open_root(store, snapshot=head.id)
    items = [Path(str(p)).name for p in column(root, "items/source_path")]
    failures = [Path(str(p)).name for p in column(root, "failures/source_path")]
    rows = items + failures
    assert len(rows) == len(set(rows))  # one row or one failure per input, never both, never two
    by_sha: dict[str, list[str]] = {}
    for name, data in files.items():
        by_sha.setdefault(hashlib.sha256(data).hexdigest(), []).append(name)
    for name, data in files.items():  # an input without a row is a copy of content stored under another name
        assert name in rows or any(n in rows for n in by_sha[hashlib.sha256(data).hexdigest()]), name
    for i in range(array(root, "items/jpeg").shape[0]):
        assert decode_rgb(blob(root, "items/jpeg", i)).size[0] > 0

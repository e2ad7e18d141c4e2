"""Finding and reading source images: listing, reading with limits, content hashing."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from preprocess import errors
from preprocess.errors import ConfigError, InputError, input_error

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".webp", ".bmp", ".gif",
                            ".jp2", ".j2k", ".ppm", ".pgm"})


@dataclass(frozen=True)
class SourceFile:
    path: str
    data: bytes
    sha256: str

    @property
    def size(self) -> int:
        return len(self.data)


def is_candidate(p: Path) -> bool:
    """An image file name that is not hidden (partial uploads are often hidden: `.name.part`)."""
    return p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def list_sources(roots: Iterable[str | Path]) -> list[Path]:
    """Every image file under the roots (recursively), sorted; a root may also be one file.

    Hidden files (``.name``, e.g. partial uploads) and files without an image suffix are left out.
    """
    found: set[Path] = set()
    for root in roots:
        r = Path(root)
        if r.is_file():
            found.add(r)
        elif r.is_dir():
            for dirpath, dirnames, filenames in os.walk(r, followlinks=False):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                for name in filenames:
                    p = Path(dirpath) / name
                    if is_candidate(p) and (p.is_file() or p.is_symlink()):
                        found.add(p)
        else:
            raise ConfigError("source path does not exist", code="SOURCE_MISSING", path=str(r),
                              hint="pass a folder of images or image files")
    return sorted(found)


def read_source(path: Path, *, max_bytes: int) -> SourceFile:
    """Read one file whole and hash it; raise :class:`InputError` when it cannot be used."""
    p = str(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise input_error(errors.TOO_LARGE, f"file is {size / 1e6:.1f} MB, over the limit of "
                              f"{max_bytes / 1e6:.1f} MB", p)
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except InputError:
        raise
    except OSError as exc:
        raise input_error(errors.UNREADABLE, f"cannot read: {exc.strerror or exc}", p) from None
    if len(data) > max_bytes:
        raise input_error(errors.TOO_LARGE, f"file grew past the limit of {max_bytes / 1e6:.1f} MB", p)
    return SourceFile(path=p, data=data, sha256=hashlib.sha256(data).hexdigest())


def list_digest(entries: Iterable[tuple[str, str]]) -> str:
    """The input list's hash: sha256 over sorted (path, content sha256) lines."""
    h = hashlib.sha256()
    for path, sha in sorted(entries):
        h.update(f"{path}\t{sha}\n".encode())
    return h.hexdigest()


def batched(items: Iterable[Path], size: int) -> Iterator[list[Path]]:
    batch: list[Path] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch

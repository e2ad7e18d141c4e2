"""Finding and reading source images (local files or S3 objects): listing, reading with limits,
content hashing."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PosixPath

from preprocess import errors
from preprocess.errors import ConfigError, InputError, input_error
from preprocess.objects import is_object_url, list_objects, read_object

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


class ObjectPath(PosixPath):
    """An object in S3 (``s3://bucket/key``) where a source :class:`~pathlib.Path` is expected:
    ``name``, ``suffix`` and ``str()`` work (``str`` gives the ``s3://`` URL); reading goes through
    :func:`read_source` (obstore), never the local filesystem."""

    def __str__(self) -> str:
        parts = self.parts
        return "s3://" + "/".join(parts[1:]) if parts and parts[0] == "s3:" else super().__str__()

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"


def source_path(location: str) -> Path:
    """A source location as a Path (an :class:`ObjectPath` for ``s3://`` URLs)."""
    return ObjectPath(location) if is_object_url(location) else Path(location)


def is_candidate(p: Path) -> bool:
    """An image file name that is not hidden (partial uploads are often hidden: `.name.part`)."""
    return p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def list_sources(roots: Iterable[str | Path]) -> list[Path]:
    """Every image file under the roots (recursively), sorted; a root may also be one file, or an
    ``s3://bucket/prefix`` (every object under it, as :class:`ObjectPath`).

    Hidden files (``.name``, e.g. partial uploads) and files without an image suffix are left out.
    """
    found: set[Path] = set()
    for root in roots:
        if is_object_url(str(root)):  # an S3 prefix (or one object)
            found.update(p for p in map(ObjectPath, list_objects(str(root))) if is_candidate(p))
            continue
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
    if isinstance(path, ObjectPath):
        return _read_object(p, max_bytes=max_bytes)
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


def _read_object(url: str, *, max_bytes: int) -> SourceFile:
    try:
        size, data = read_object(url, max_bytes=max_bytes)
    except FileNotFoundError:
        raise input_error(errors.UNREADABLE, "cannot read: the object does not exist", url) from None
    except OSError as exc:
        raise input_error(errors.UNREADABLE, f"cannot read: {exc}", url) from None
    if size > max_bytes:
        raise input_error(errors.TOO_LARGE, f"file is {size / 1e6:.1f} MB, over the limit of "
                          f"{max_bytes / 1e6:.1f} MB", url)
    return SourceFile(path=url, data=data, sha256=hashlib.sha256(data).hexdigest())


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

"""Finding and reading source images (local files or S3 objects): listing, reading with limits,
content hashing.

Local files are untrusted names in a folder anyone may write to, so a read never blocks and never
leaves the input folders by accident: only regular files are opened (a FIFO, socket or device is
refused before any read), opened without following a final symlink (``O_NOFOLLOW``) and
non-blocking (``O_NONBLOCK``), and checked again on the open descriptor (``fstat``). A symlink is
followed only when it resolves inside one of the input roots, unless ``follow_symlinks`` says
otherwise; a refused link records no hash or size of its target.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PosixPath

from preprocess.core import errors, names
from preprocess.core.codes import ErrorCode
from preprocess.core.errors import InputError, NotFoundError, input_error
from preprocess.sources.location import Location, Where, is_object_url
from preprocess.sources.objects import list_objects, read_object

# Every name these formats go by (a .pnm or .jfif was left out without a word, though its format decodes).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".jif", ".png", ".tif", ".tiff", ".webp", ".bmp",
                            ".dib", ".gif", ".jp2", ".j2k", ".j2c", ".jpf", ".jpx", ".jph", ".ppm", ".pgm", ".pbm",
                            ".pnm", ".avif", ".jxl",
                            ".heic", ".heif"})  # HEIF: listed so that it is reported (E_UNSUPPORTED)

# Open flags for a local source: never block (a FIFO or device opened by accident), never follow a
# final symlink that was not checked (the path opened is already resolved), never leak to children.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


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


def list_sources(roots: Iterable[Where | Location], *, follow_symlinks: bool = False) -> list[Path]:
    """Every image file under the roots (recursively), sorted; a root may also be one file, or an
    ``s3://bucket/prefix`` (every object under it, as :class:`ObjectPath`).

    Hidden files (``.name``, e.g. partial uploads) and files without an image suffix are left out.
    Everything else with an image name is listed, whatever it is (a FIFO, a socket, a device, a broken
    link): :func:`read_source` refuses it, so it becomes a failure row instead of vanishing. So is a
    folder that cannot be listed (no permission, a path over the system's limit: ``E_UNREADABLE``) and
    a link to a folder outside the roots (``E_SYMLINK_OUTSIDE``; ``follow_symlinks`` walks into it, once
    per folder however many links lead there); a link to a folder inside them is left to that folder.

    **The path rule** (what rows record as ``source_path``): a local file's path is absolute, under
    its root's *resolved* folder (``photos``, ``./photos/``, ``/abs/photos`` and a symlink to that
    folder give the same paths), and keeps its own name below it (a symlink inside the root is
    recorded by its name, and read only if it resolves inside the root). ``s3://`` URLs are kept as
    listed.
    """
    found: set[Path] = set()
    locations = [Location.of_source(r) for r in roots]
    inside = local_roots(locations)
    for root in locations:
        if root.remote:  # an S3 prefix (or one object)
            found.update(p for p in map(ObjectPath, list_objects(root)) if is_candidate(p))
            continue
        r = root.local
        if r.is_dir():
            found.update(_walk(os.path.realpath(r), inside, follow=follow_symlinks))
        elif r.exists() or r.is_symlink():  # a file, or a FIFO, device or broken link named on the command line
            found.add(Path(os.path.realpath(r.parent)) / r.name)
        else:
            raise NotFoundError("source path does not exist", code=ErrorCode.SOURCE_MISSING, path=root.text,
                              hint="pass a folder of images or image files")
    return sorted(found)


def _walk(top: str, roots: Sequence[str], *, follow: bool) -> Iterator[Path]:
    """The image files under ``top``, and the folders that :func:`list_sources` lists as themselves."""
    unlisted: list[str] = []
    yield from map(Path, walk_images(top, roots, follow=follow, onerror=lambda e: unlisted.append(str(e.filename))))
    yield from map(Path, unlisted)


def walk_images(top: str, roots: Sequence[str], *, follow: bool, onerror: Callable[[OSError], None],
                prune: Callable[[str], bool] | None = None) -> Iterator[str]:
    """The walk ``run`` and ``watch`` share: every image file under ``top`` (not hidden, nor in a hidden
    folder), and each link to a folder outside ``roots`` unless ``follow`` (read as a file, it is refused:
    ``E_SYMLINK_OUTSIDE``). A link to a folder inside the roots is left to that folder; with ``follow``,
    each folder is walked once however many links lead there (and a loop ends). ``onerror`` gets each
    folder that cannot be listed; ``prune`` leaves out a subfolder (and all below it) when it says so."""
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(top, followlinks=follow, onerror=onerror):
        if (real := os.path.realpath(dirpath)) in seen:  # a loop, or a second link to a folder walked
            dirnames[:] = []
            continue
        seen.add(real)
        keep = []
        for d in sorted(dirnames):  # sorted: which link names a folder is fixed
            full = os.path.join(dirpath, d)
            if d.startswith(".") or (prune is not None and prune(full)):
                continue
            if os.path.islink(full):
                if any(_inside(os.path.realpath(full), r) for r in roots):
                    continue  # walked as itself
                if not follow:
                    yield full  # read_source: E_SYMLINK_OUTSIDE
                    continue
            keep.append(d)
        dirnames[:] = keep
        yield from (full for full in (os.path.join(dirpath, name) for name in filenames) if is_candidate(Path(full)))


def local_roots(roots: Iterable[Where | Location]) -> tuple[str, ...]:
    """The resolved folders that symlinks may lead into: each local root folder, or the folder of a
    root that is a file (so ``run in/*.jpg`` confines links like ``run in`` does); ``s3://`` roots
    are left out."""
    out: list[str] = []
    for root in map(Location.of_source, roots):
        if root.remote:
            continue
        r = root.text
        out.append(os.path.realpath(r if os.path.isdir(r) else os.path.dirname(os.path.abspath(r))))
    return tuple(out)


def read_source(path: Path, *, max_bytes: int, roots: Sequence[str] | None = None,
                follow_symlinks: bool = False) -> SourceFile:
    """Read one file whole and hash it; raise :class:`InputError` when it cannot be used.

    ``roots`` are the input roots (see :func:`local_roots`; None: the file's own folder): a path that
    resolves outside all of them through a symlink is refused (``E_SYMLINK_OUTSIDE``) unless
    ``follow_symlinks``. Anything but a regular file is refused (``E_NOT_FILE``) without reading.
    """
    p = str(path)
    if isinstance(path, ObjectPath):
        return _read_object(p, max_bytes=max_bytes)
    try:
        confined = None if follow_symlinks else _confinement(p, roots)
        data = _read_regular(_resolve(p, confined), p, max_bytes, confined)
    except InputError:
        raise
    except OSError as exc:
        raise input_error(errors.UNREADABLE, _unreadable(p, exc), p) from None
    return SourceFile(path=p, data=data, sha256=hashlib.sha256(data).hexdigest())


def _unreadable(path: str, exc: OSError) -> str:
    """Why ``path`` could not be read, in words: a link to nothing says where it leads."""
    if exc.errno == errno.ENOENT and os.path.islink(path):
        try:
            return f"a broken link: it leads to {names.quote(os.readlink(path))}, which is not there"
        except OSError:
            pass
    return f"cannot read: {exc.strerror or exc}"


def _confinement(path: str, roots: Sequence[str] | None) -> tuple[str, ...]:
    if roots is None:
        return local_roots([path])
    return tuple(os.path.realpath(r) for r in roots)


def _inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _resolve(path: str, confined: tuple[str, ...] | None) -> str:
    """The file ``path`` leads to, when it may be read: a link out of the ``confined`` roots is refused
    (None: links are followed anywhere)."""
    real = os.path.realpath(path)
    if confined is None or real == os.path.abspath(path) or any(_inside(real, r) for r in confined):
        return real
    raise input_error(errors.SYMLINK_OUTSIDE, "a symbolic link that leads outside the input folders; not followed",
                      path)


def _read_regular(real: str, path: str, max_bytes: int, confined: tuple[str, ...] | None) -> bytes:
    """Read a resolved regular file through one non-blocking descriptor, with the size limit."""
    _require_regular(os.stat(real).st_mode, path)  # refuse a FIFO or device before opening it
    fd = os.open(real, _OPEN_FLAGS)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        _require_regular(st.st_mode, path)  # what was opened, not what the name pointed at before
        if confined is not None and not _opened_inside(fd, confined):
            raise input_error(errors.SYMLINK_OUTSIDE, "the file moved outside the input folders while it was "
                              "opened; not read", path)
        if st.st_size > max_bytes:
            raise input_error(errors.TOO_LARGE, f"file is {st.st_size / 1e6:.1f} MB, over the limit of "
                              f"{max_bytes / 1e6:.1f} MB", path)
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise input_error(errors.TOO_LARGE, f"file grew past the limit of {max_bytes / 1e6:.1f} MB", path)
    return data


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"))


def _require_regular(mode: int, path: str) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):  # listed because it could not be listed itself (list_sources)
        try:
            os.scandir(path).close()
        except OSError as exc:
            raise input_error(errors.UNREADABLE, f"a folder that cannot be listed ({exc.strerror or exc}): the "
                              "images in it were not read", path) from None
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    raise input_error(errors.NOT_A_FILE, f"{kind}, not a regular file; not read", path)


def _opened_inside(fd: int, roots: tuple[str, ...]) -> bool:
    """Whether the open descriptor's file lies inside the roots (closes the race between resolving
    and opening; Linux only, elsewhere the check before the open stands)."""
    try:
        where = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return True
    return any(_inside(where, r) for r in roots)


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


def sha256_file(path: Path) -> str:
    """The sha256 of a file's bytes, read in blocks (a model file or a large source need not fit in memory)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def list_digest(entries: Iterable[tuple[str, str]]) -> str:
    """The input list's hash: sha256 over sorted (path, content sha256) lines (a path's exact bytes,
    also when it is not UTF-8)."""
    h = hashlib.sha256()
    for path, sha in sorted(entries):
        h.update(names.as_bytes(path) + f"\t{sha}\n".encode())
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

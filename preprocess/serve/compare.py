"""Source beside stored: read a row's source from its recorded ``source_path`` (never from a URL),
and find the region that changed most, for a zoom.

The source is shown only when it is a regular file (or an S3 object) no larger than
:data:`MAX_SOURCE_BYTES` whose sha256 is the one recorded in the row: a file changed or replaced
since is reported, not shown. It is read as ``run`` reads (:func:`~preprocess.sources.files.read_source`):
never through a link that leads out of the source's folder (a source replaced by a link to
another file is not opened, let alone hashed), never blocking on a FIFO. A recorded name that is
not UTF-8 is stored quoted: the file opened is the name it stands for (:func:`preprocess.core.names.real`).

A source that was shown may be deleted, rewritten or replaced while the server runs: its
:func:`source_stamp` (a stat, or one HEAD for an object) is taken again on every request that shows it,
and the file is read and hashed again when the stamp changed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from preprocess.core import names
from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, InputError, NotFoundError
from preprocess.pipeline.images import decode_rgb, probe
from preprocess.pipeline.regions import Region, abs_difference, changed_region, heat
from preprocess.serve.renditions import png
from preprocess.sources.files import ObjectPath, read_source
from preprocess.sources.location import parse_s3
from preprocess.sources.objects import is_object_url, object_store

MAX_SOURCE_BYTES = 256 * 2**20
MAX_SOURCE_PIXELS = 200_000_000
ZOOM_SIDE = 320  # px: a zoom crop is enlarged (nearest neighbour) to about this size
DIFF_GAIN = 4.0  # the difference map shows |source - stored| x this (small changes become visible)
type Stamp = tuple[object, ...]


@dataclass(frozen=True)
class Comparison:
    """The source resized to the stored size, and zoomed crops of the region that changed most."""

    size: tuple[int, int]  # the stored image's (width, height): the comparison's pixel grid
    source_size: tuple[int, int]  # the source as decoded (oriented)
    region: Region
    mean_abs_diff: float  # over the whole image
    scale: int  # zoom factor of the crops
    images: dict[str, bytes] = field(repr=False)  # "source" (resized), "zoom-source", "zoom-stored", "zoom-diff"
    source: Image.Image = field(repr=False, default_factory=lambda: Image.new("RGB", (1, 1)))  # resized, for crops

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.images.values()) + self.source.width * self.source.height * 3


def source_bytes(path: str, sha256: str) -> bytes:
    """The source file of a row, verified against its recorded sha256.

    ConfigError SOURCE_UNAVAILABLE (with the reason) when it is not there, not a regular file, too
    large, unreadable or changed since it was stored.
    """
    if not path:
        raise _unavailable("the row records no source path")
    shown = names.shown(path)
    source = ObjectPath(path) if is_object_url(path) else Path(names.real(path))
    try:
        data = read_source(source, max_bytes=MAX_SOURCE_BYTES).data  # local: confined to its own folder
    except InputError as exc:
        raise _unavailable(_why(shown, exc)) from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise _unavailable(f"{shown} has changed since it was stored (its sha256 differs)")
    return data


def source_stamp(path: str) -> Stamp | None:
    """What changes when a source is deleted, rewritten or replaced, had without reading it: a local file's
    size, mtime (ns), inode and device, of the name and of the file it leads to; an object's size, ETag and
    time (one HEAD). None when it cannot be had (the file is gone, say): the caller reads the file again."""
    if not path:
        return None
    try:
        if is_object_url(path):
            loc = parse_s3(path)
            import obstore

            meta = obstore.head(object_store(loc), loc.prefix)
            return int(meta["size"]), str(meta.get("e_tag")), str(meta.get("last_modified"))
        real = names.real(path)
        st, own = os.stat(real), os.lstat(real)
    except (OSError, RuntimeError, ValueError):
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, own.st_ino, own.st_mtime_ns, own.st_size


def _why(shown: str, exc: InputError) -> str:
    if exc.code == ErrorCode.E_UNREADABLE:
        return f"{shown} is not readable here ({exc.message.removeprefix('cannot read: ')})"
    if exc.code == ErrorCode.E_NOT_FILE:
        return f"{shown} is not a regular file ({exc.message.split(',')[0]})"
    if exc.code == ErrorCode.E_TOO_LARGE:
        return f"{shown} is larger than {MAX_SOURCE_BYTES // 2**20} MiB"
    if exc.code == ErrorCode.E_SYMLINK_OUTSIDE:
        return f"{shown} is now a link that leads out of its folder: not followed, not read"
    return f"{shown}: {exc.message}"


def _unavailable(reason: str) -> ConfigError:
    return NotFoundError(reason, code=ErrorCode.SOURCE_UNAVAILABLE,
                       hint="the side-by-side view needs the source file where the job read it")


def compare(source: bytes, stored: Image.Image, *, path: str = "") -> Comparison:
    """Decode the source as the pipeline does (probe, orient, RGB), resize it to the stored size and
    find the tile with the largest mean absolute difference."""
    probe(source, max_pixels=MAX_SOURCE_PIXELS, path=path)
    src = decode_rgb(source, path=path)
    resized = src.resize(stored.size, Image.Resampling.LANCZOS) if src.size != stored.size else src
    diff = abs_difference(np.asarray(resized), np.asarray(stored.convert("RGB")))
    region = changed_region(diff)
    scale = max(1, min(8, ZOOM_SIDE // max(region.width, region.height)))
    box = region.box

    def zoom(img: Image.Image) -> bytes:
        crop = img.crop(box)
        return png(crop.resize((crop.width * scale, crop.height * scale), Image.Resampling.NEAREST))

    images = {"source": png(resized), "zoom-source": zoom(resized), "zoom-stored": zoom(stored),
              "zoom-diff": zoom(Image.fromarray(heat(diff, DIFF_GAIN), "L"))}
    return Comparison(size=stored.size, source_size=src.size, region=region, mean_abs_diff=float(diff.mean()),
                      scale=scale, images=images, source=resized.convert("RGB"))

"""Where a dataset or a source lives: a local path or an object URL (``s3://bucket/prefix``), parsed
ONCE at the edge (the CLI, a driver, a public function) into a :class:`Location` that the drivers,
the store and the sources pass on, instead of re-reading the string wherever it is used.

Two readings of the same words, because a dataset and a source root mean different things by them:

- :meth:`Location.of_store`, a dataset: ``/data/ds``, ``./ds``, ``~/ds`` (expanded),
  ``file:///data/ds`` or ``s3://bucket/prefix``; ConfigError STORE_PATH when empty, STORE_URL for
  any other scheme (``gs://``), a ``file://`` URL with a host, or a malformed ``s3://`` URL.
- :meth:`Location.of_source`, a source root: ``s3://bucket/prefix`` or a path exactly as written
  (a shell already expanded ``~``; a path that does not exist is the lister's SOURCE_MISSING).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError

SCHEME = "s3"

type Where = str | os.PathLike[str]  # a location as a caller writes it (a Location once parsed)


def is_object_url(location: object) -> bool:
    """Whether ``location`` is written as an object URL (``s3://...``, any case); a Path never is."""
    return isinstance(location, str) and location.strip().lower().startswith(f"{SCHEME}://")


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # no leading or trailing slash; "" for the bucket root

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def child(self, key: str) -> str:
        """The ``s3://`` URL of the object ``key`` (a full key in the bucket)."""
        return f"s3://{self.bucket}/{key}"


def parse_s3(location: str) -> S3Location:
    """``s3://bucket/some/prefix`` -> S3Location (ConfigError STORE_URL when malformed)."""
    url = urlparse(location.strip())
    if url.scheme.lower() != SCHEME or not url.netloc:
        raise ConfigError(f"not an s3://bucket/prefix URL: {location}", code=ErrorCode.STORE_URL,
                          hint="write s3://BUCKET/PREFIX")
    return S3Location(bucket=url.netloc, prefix=url.path.strip("/"))


@dataclass(frozen=True)
class Location:
    """A parsed location: an object prefix (``object``) or a local path (``path``, absolute), never both.

    ``text`` is what the user wrote (what messages and records that say "as given" show); ``str()``
    is the canonical form: the ``s3://`` URL, or the absolute path.
    """

    text: str
    path: Path | None = None
    object: S3Location | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.object is None):
            raise TypeError("a Location is a local path or an object prefix: give exactly one")

    @classmethod
    def of_store(cls, where: Where | Location) -> Location:
        """A dataset's location (see the module doc for what it accepts and its errors)."""
        if isinstance(where, Location):
            return where
        text = os.fspath(where)
        if is_object_url(text):
            return cls(text, object=parse_s3(text))
        return cls(text, path=_local_store_path(text))

    @classmethod
    def of_source(cls, where: Where | Location) -> Location:
        """A source root's location: an ``s3://`` prefix (or one object), or a path as written."""
        if isinstance(where, Location):
            return where
        text = os.fspath(where)
        if is_object_url(text):
            return cls(text, object=parse_s3(text))
        return cls(text, path=Path(text).absolute())

    @property
    def remote(self) -> bool:
        """True for an object-store location (``s3://...``), False for a local path."""
        return self.object is not None

    @property
    def local(self) -> Path:
        """The local path; ConfigError STORE_URL when this is an object URL (a local-only use of it)."""
        if self.path is None:
            raise ConfigError(f"{self} is not a local path", code=ErrorCode.STORE_URL,
                              hint="this needs a local directory path")
        return self.path

    def __str__(self) -> str:
        return self.object.url if self.object is not None else str(self.path)


def given(where: Where | Location) -> str:
    """A location as the user wrote it (a parsed one keeps what it was parsed from)."""
    return where.text if isinstance(where, Location) else os.fspath(where)


def _local_store_path(text: str) -> Path:
    """The absolute local path a dataset location names (ConfigError STORE_URL for any other scheme)."""
    loc = text.strip()
    if not loc:
        raise ConfigError("the dataset location is empty", code=ErrorCode.STORE_PATH,
                          hint="pass a directory path, e.g. --store ./dataset")
    if "://" in loc:
        url = urlparse(loc)
        if url.scheme != "file":
            raise ConfigError(f"{url.scheme}:// datasets are not supported: {text}", code=ErrorCode.STORE_URL,
                              hint="use a local directory path or s3://BUCKET/PREFIX")
        if url.netloc not in ("", "localhost"):
            raise ConfigError(f"file:// URL with a host is not supported: {text}", code=ErrorCode.STORE_URL,
                              hint="write file:///absolute/path or a plain path")
        loc = unquote(url.path)
    return Path(loc).expanduser().absolute()

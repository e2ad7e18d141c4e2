"""Object storage (S3 and S3-compatible servers): parsing ``s3://bucket/prefix`` locations, finding
the endpoint, region and credentials in the usual places, listing and reading objects (obstore).

Configuration comes from, in order: the standard AWS environment variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` /
``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``), then the AWS shared files
for ``AWS_PROFILE`` (default ``default``: ``~/.aws/credentials``, ``~/.aws/config``, or
``AWS_SHARED_CREDENTIALS_FILE`` / ``AWS_CONFIG_FILE``), then the machine's own role (instance
metadata, web identity) as found by the object store client. A plain ``http://`` endpoint is
allowed (local S3 servers such as MinIO or moto). Secrets are never logged, put in an error
message or written into commit metadata: :meth:`S3Config.describe` leaves them out.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, NotFoundError
from preprocess.sources.location import Location, S3Location, is_object_url, parse_s3

if TYPE_CHECKING:
    from obstore.store import S3Config as ObstoreConfig
    from obstore.store import S3Store

# is_object_url: also here for the faces that look for it here (serve/compare.py)
__all__ = ["S3Config", "is_object_url", "list_objects", "object_store", "read_object", "s3_config"]


@dataclass(frozen=True, repr=False)
class S3Config:
    region: str | None
    endpoint: str | None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    source: str = "environment"  # where credentials came from: environment | profile NAME | machine

    @property
    def allow_http(self) -> bool:
        return bool(self.endpoint and self.endpoint.lower().startswith("http://"))

    def describe(self) -> dict[str, str | None]:
        """What may be shown or recorded: never the keys."""
        return {"region": self.region, "endpoint": self.endpoint, "credentials": self.source}

    def __repr__(self) -> str:
        return f"S3Config({self.describe()})"

    def obstore_config(self) -> ObstoreConfig:
        cfg: ObstoreConfig = {}
        if self.region:
            cfg["region"] = self.region
        if self.endpoint:
            cfg["endpoint"] = self.endpoint
            cfg["virtual_hosted_style_request"] = False
        if self.access_key_id and self.secret_access_key:
            cfg["access_key_id"] = self.access_key_id
            cfg["secret_access_key"] = self.secret_access_key
            if self.session_token:
                cfg["session_token"] = self.session_token
        return cfg


def _env(*names: str) -> str | None:
    for n in names:
        v = os.environ.get(n, "").strip()
        if v:
            return v
    return None


def _ini(path_env: str, default: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser()
    path = Path(os.environ.get(path_env) or default).expanduser()
    if path.is_file():
        try:
            cp.read(path)
        except configparser.Error as exc:
            raise ConfigError(f"cannot read the AWS file {path}: {exc.message}", code=ErrorCode.S3_CONFIG,
                              hint="fix the file's syntax (INI sections like [default])") from None
    return cp


def s3_config() -> S3Config:
    """The endpoint, region and credentials from the usual places (see the module docstring)."""
    profile = _env("AWS_PROFILE") or "default"
    conf = _ini("AWS_CONFIG_FILE", "~/.aws/config")
    section = "default" if profile == "default" else f"profile {profile}"
    prof = conf[section] if conf.has_section(section) else {}
    region = _env("AWS_REGION", "AWS_DEFAULT_REGION") or prof.get("region") or None
    endpoint = _env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL") or prof.get("endpoint_url") or None
    key, secret = _env("AWS_ACCESS_KEY_ID"), _env("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        return S3Config(region, endpoint, key, secret, _env("AWS_SESSION_TOKEN"), "environment")
    creds = _ini("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")
    if creds.has_section(profile) and creds[profile].get("aws_access_key_id"):
        c = creds[profile]
        return S3Config(region, endpoint, c.get("aws_access_key_id"), c.get("aws_secret_access_key"),
                        c.get("aws_session_token"), f"profile {profile}")
    if _env("AWS_PROFILE") and profile != "default":
        raise ConfigError(f"AWS profile {profile!r} has no keys in the shared credentials file",
                          code=ErrorCode.S3_CONFIG,
                          hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or fix AWS_PROFILE")
    return S3Config(region, endpoint, source="machine")


# -- objects (sources) -----------------------------------------------------------------------------


def object_store(loc: S3Location, config: S3Config | None = None) -> S3Store:
    """An obstore S3Store for the bucket of ``loc`` (keys are full bucket keys)."""
    from obstore.store import S3Store

    cfg = config or s3_config()
    return S3Store(loc.bucket, config=cfg.obstore_config(), client_options={"allow_http": cfg.allow_http})


def list_objects(location: Location | str) -> list[str]:
    """The ``s3://`` URLs of every object under ``location`` (a prefix, or one object's key; a string is
    parsed as a source's location)."""
    import obstore

    where = Location.of_source(location)
    loc = where.object
    if loc is None:
        raise ConfigError(f"not an s3://bucket/prefix URL: {where.text}", code=ErrorCode.STORE_URL,
                          hint="write s3://BUCKET/PREFIX")
    store = object_store(loc)
    prefix = loc.prefix
    found: list[str] = []
    try:
        for batch in obstore.list(store, prefix=prefix + "/" if prefix else None):
            found.extend(str(meta["path"]) for meta in batch)
        if not found and prefix:  # maybe one object
            try:
                obstore.head(store, prefix)
                found.append(prefix)
            except FileNotFoundError:
                pass
    except (OSError, RuntimeError, ValueError) as exc:
        raise NotFoundError(f"cannot list {where.text}: {_short(exc)}", code=ErrorCode.SOURCE_MISSING, path=where.text,
                          hint="check the bucket name, the endpoint (AWS_ENDPOINT_URL) and the credentials") from None
    return [loc.child(k) for k in found]


def read_object(url: str, *, max_bytes: int) -> tuple[int, bytes]:
    """(size, bytes) of one object; reads nothing when the object is larger than ``max_bytes``
    (then the bytes are empty). Raises OSError (FileNotFoundError when missing)."""
    import obstore

    loc = parse_s3(url)
    store = object_store(loc)
    try:
        size = int(obstore.head(store, loc.prefix)["size"])
        if size > max_bytes:
            return size, b""
        return size, bytes(obstore.get(store, loc.prefix).bytes())
    except FileNotFoundError:
        raise
    except (RuntimeError, ValueError) as exc:
        raise OSError(_short(exc)) from None


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__

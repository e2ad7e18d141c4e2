"""Datasets and sources on S3 (moto's S3 server on loopback): the same job, reader and history as
on a local path, configured from the usual AWS places, with secrets kept out of the dataset."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from preprocess.core.errors import ConfigError, StorageError
from preprocess.drivers.run import JobOptions, run_job
from preprocess.sources.files import ObjectPath, list_sources, read_source
from preprocess.sources.objects import s3_config
from preprocess.store import open_dataset, open_repo
from preprocess.store.history import log
from tests.s3server import SECRET, make_bucket, moto_server, s3_env
from tests.store.conftest import TINY


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def s3(endpoint: str, monkeypatch: pytest.MonkeyPatch, photo_sets: list[Path]) -> str:
    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(k, raising=False)
    for k, v in s3_env(endpoint).items():
        monkeypatch.setenv(k, v)
    return endpoint


def test_a_job_reads_s3_sources_into_an_s3_dataset_and_a_rerun_adds_nothing(
        s3: str, photo_sets: list[Path], tmp_path: Path) -> None:
    files = sorted(photo_sets[0].iterdir()) + sorted(photo_sets[1].iterdir())
    make_bucket(s3, "cams", files, prefix="raw/2026-11/")
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY.format(name="tiny", quality=80))
    found = list_sources(["s3://cams/raw/2026-11/"])
    assert [str(p) for p in found] == sorted(f"s3://cams/raw/2026-11/{f.name}" for f in files)
    assert all(isinstance(p, ObjectPath) for p in found)
    by_name = {f.name: f for f in files}
    assert read_source(found[0], max_bytes=10**8).data == by_name[found[0].name].read_bytes()

    opts = JobOptions(sources=["s3://cams/raw/2026-11"], store="s3://cams/datasets/front-door",
                      spec_path=str(spec), engine="pillow")
    first = run_job(opts)
    assert (first.stored, first.failed) == (len(files), 0)
    again = run_job(opts)
    assert (again.stored, again.skipped, again.snapshot) == (0, len(files), None)

    ds = open_dataset("s3://cams/datasets/front-door")
    assert sorted(ds.items_table(["source_path"])["source_path"].tolist()) == [str(p) for p in found]
    commit = log(open_repo("s3://cams/datasets/front-door", create=False))[0]
    meta = json.dumps(commit.__dict__, default=str)
    assert "s3://cams/raw/2026-11" in meta
    assert SECRET not in meta and "testing-key-id" not in meta

    # the CLI's history commands get S3 for free
    done = subprocess.run([sys.executable, "-m", "preprocess", "log", "s3://cams/datasets/front-door", "--json"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr

    # gc on an object store takes no lock a job holds: during an S3 job, `gc --older-than 0s` deleted the files
    # the job had written and not yet committed, and the job committed rows pointing at them (an audit,
    # 2026-12-07). Under a day is refused there; --dry-run may look.
    from datetime import timedelta

    from preprocess.store import refs

    repo = open_repo("s3://cams/datasets/front-door", create=False)
    with pytest.raises(ConfigError) as refused:
        refs.gc(repo, refs.parse_age("0s"))
    assert refused.value.code == "GC_AGE" and "running job" in refused.value.message
    assert refs.gc(repo, timedelta(0), dry_run=True).dry_run
    assert refs.gc(repo, refs.parse_age("1d")).counts["chunks_deleted"] == 0
    assert len(open_dataset("s3://cams/datasets/front-door")) == len(files)


def test_missing_datasets_buckets_and_urls_are_clear_errors(s3: str) -> None:
    with pytest.raises(ConfigError) as e:
        open_repo("s3://cams-none/ds", create=False)
    assert e.value.code in ("STORE_MISSING", "STORE_IO")
    make_bucket(s3, "empty")
    with pytest.raises(ConfigError, match="no dataset"):
        open_repo("s3://empty/ds", create=False)
    with pytest.raises(ConfigError, match="prefix"):
        open_repo("s3://empty", create=True)
    with pytest.raises(ConfigError, match="not supported"):
        open_repo("gs://bucket/ds", create=True)
    with pytest.raises((StorageError, ConfigError)) as caught:
        open_repo("s3://no-such-bucket/ds", create=True)
    assert SECRET not in str(caught.value)


def test_an_endpoint_that_refuses_connections_is_said_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """`preprocess log s3://...` with a wrong AWS_ENDPOINT_URL answered STORE_IO after 30-40 s of silence
    (icechunk's 10 tries with doubling backoff); the first look now tries 3 times within ~1 s. The bound is
    loose (10 s): a functional check that no long retry runs, not a speed figure."""
    import socket
    import time

    with socket.socket() as sock:  # a port nothing listens on: bound, never listened to
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        for k, v in s3_env(f"http://127.0.0.1:{port}").items():
            monkeypatch.setenv(k, v)
        start = time.monotonic()
        with pytest.raises(StorageError) as e:
            open_repo("s3://cams/ds", create=False)
        took = time.monotonic() - start
    assert e.value.code == "STORE_IO" and "refused" in str(e.value) and "AWS_ENDPOINT_URL" in e.value.hint
    assert took < 10, took


def test_an_endpoint_that_never_answers_is_an_error_not_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    """An endpoint that accepts connections and never answers hung `ls` for good (13 minutes, SIGTERM and
    SIGINT ignored: a call inside icechunk's runtime never returns to Python's handlers; an audit,
    2026-12-07). Each attempt has a time limit: STORE_IO in ~15 s. The bound is loose (60 s)."""
    import contextlib
    import socket
    import threading
    import time

    held: list[socket.socket] = []
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.settimeout(0.2)

        def accept() -> None:  # takes every connection and says nothing
            while not done.is_set():
                with contextlib.suppress(OSError):  # the accept's time limit: look at done again
                    held.append(sock.accept()[0])

        done = threading.Event()
        threading.Thread(target=accept, daemon=True).start()
        for k, v in s3_env(f"http://127.0.0.1:{sock.getsockname()[1]}").items():
            monkeypatch.setenv(k, v)
        start = time.monotonic()
        try:
            with pytest.raises(StorageError) as e:
                open_repo("s3://cams/ds", create=False)
        finally:
            done.set()
            for c in held:
                c.close()
        took = time.monotonic() - start
    assert e.value.code == "STORE_IO" and "timeout" in str(e.value).lower() and "AWS_ENDPOINT_URL" in e.value.hint
    assert took < 60, took


def test_config_comes_from_env_then_profile_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
              "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(k, raising=False)
    (tmp_path / "credentials").write_text("[cams]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = s3cr3t\n")
    (tmp_path / "config").write_text("[profile cams]\nregion = eu-west-1\nendpoint_url = http://minio:9000\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "cams")
    cfg = s3_config()
    assert (cfg.region, cfg.endpoint, cfg.access_key_id, cfg.allow_http) == ("eu-west-1", "http://minio:9000",
                                                                            "AKIDPROFILE", True)
    assert "s3cr3t" not in repr(cfg) and "s3cr3t" not in json.dumps(cfg.describe())
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://s3.example.com")
    cfg = s3_config()
    assert (cfg.access_key_id, cfg.endpoint, cfg.allow_http, cfg.source) == ("AKIDENV", "https://s3.example.com",
                                                                            False, "environment")
    monkeypatch.setenv("AWS_PROFILE", "nobody")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    with pytest.raises(ConfigError, match="nobody"):
        s3_config()


def test_watch_refuses_an_s3_folder() -> None:
    from preprocess.drivers.watch.options import WatchOptions

    with pytest.raises(ConfigError, match="S3 prefixes cannot be watched"):
        WatchOptions(folder="s3://cams/incoming", store="/tmp/x").check()

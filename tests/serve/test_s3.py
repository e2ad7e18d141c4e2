"""`serve` on a dataset in S3 (moto's S3 server on loopback), made by a real job from sources in S3:
the pages, thumbnails and the side-by-side view (its source read from S3, verified by sha256)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from preprocess.drivers.run import JobOptions, run_job
from preprocess.serve import Catalog, create_app
from tests.s3server import make_bucket, moto_server, s3_env
from tests.store.conftest import TINY


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


def test_an_s3_store_is_served_with_its_s3_sources_beside_it(endpoint: str, monkeypatch: pytest.MonkeyPatch,
                                                             small_photos: list[Path], tmp_path: Path) -> None:
    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(k, raising=False)
    for k, v in s3_env(endpoint).items():
        monkeypatch.setenv(k, v)
    make_bucket(endpoint, "cams", [p for p in small_photos if p.name in ("fruits.jpg", "chelsea.png")], prefix="raw/")
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY.format(name="tiny", quality=80))
    done = run_job(JobOptions(sources=["s3://cams/raw/"], store="s3://cams/ds", spec_path=str(spec), engine="pillow",
                              message="from s3"))
    assert done.stored == 2
    with TestClient(create_app(Catalog("s3://cams/ds"))) as c:
        assert "from s3" in c.get("/").text
        grid = c.get("/items?ref=main&sort=similarity")
        assert grid.status_code == 200 and grid.text.count('class="card"') == 2
        item = c.get(f"/snapshots/{done.snapshot}/items/0")
        assert item.status_code == 200 and "s3://cams/raw/" in item.text and 'id="side-by-side"' in item.text
        for picture in ("thumb", "stored", "compare/source", "compare/zoom-diff"):
            r = c.get(f"/snapshots/{done.snapshot}/items/0/{picture}")
            assert r.status_code == 200 and r.headers["content-type"].startswith("image/"), picture
        assert c.post("/items?ref=main").status_code == 405

"""A real store for the web UI, made by the real `run` job on real photos, and a live server.

The store (``served``): ``main`` = five photos (two 2560x1600 camera JPEGs with EXIF, a face, fruit,
a PNG) + a truncated file @ adaptive quality, 640 px (tagged ``v1``), then three more photos;
``low-q`` = branched from v1, then all eight photos at a fixed q40. After the jobs, one source is
deleted and one is rewritten, so their items cannot be shown beside their source.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from preprocess.drivers.run import Summary
from preprocess.rows.schema import ItemRow
from preprocess.serve import Catalog
from preprocess.serve.server import listen, make_server
from preprocess.store import open_repo, refs
from tests.jobs import run_pillow

SPEC = """
[pipeline]
name = "{name}"
[resize]
mode = "long-side"
size = 640
[quality]
mode = "{mode}"
min = 30
max = 95
step = 5
value = 40
[gate]
threshold = 0.99
[batch]
size = 8
"""
FIRST = ("astronaut.png", "fruits.jpg", "chelsea.png")
SECOND = ("messi5.jpg", "coffee.png", "rocket.jpg")
GONE, REWRITTEN = "rocket.jpg", "coffee.png"  # after the jobs: deleted, and changed


@dataclass
class Served:
    store: Path
    first: Summary
    second: Summary
    lowq: Summary
    photos: Path  # the sources' folder (both batches)


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory, camera_photos: list[Path], small_photos: list[Path],
           bad_images: dict[str, tuple[bytes, str]]) -> Served:
    root = tmp_path_factory.mktemp("served")
    by_name = {p.name: p for p in small_photos}
    first, second = root / "photos" / "first", root / "photos" / "second"
    first.mkdir(parents=True)
    second.mkdir()
    for p in camera_photos[:2] + [by_name[n] for n in FIRST]:
        shutil.copy(p, first / p.name)
    (first / "truncated.jpg").write_bytes(bad_images["truncated.jpg"][0])
    for n in SECOND:
        shutil.copy(by_name[n], second / n)
    specs = {}
    for name, mode in (("camera-640", "adaptive"), ("low-q40", "fixed")):
        specs[name] = root / f"{name}.toml"
        specs[name].write_text(SPEC.format(name=name, mode=mode))
    store = root / "cams.icechunk"
    one = run_pillow([first], store, specs["camera-640"], message="first cameras")
    repo = open_repo(str(store), create=False)
    refs.create_tag(repo, "v1")
    refs.create_branch(repo, "low-q", "v1")
    two = run_pillow([second], store, specs["camera-640"], message="second batch")
    low = run_pillow([first, second], store, specs["low-q40"], branch="low-q", message="low quality trial")
    (second / GONE).unlink()
    (second / REWRITTEN).write_bytes((second / REWRITTEN).read_bytes() + b"\0changed")
    return Served(store=store, first=one, second=two, lowq=low, photos=root / "photos")


@pytest.fixture(scope="session")
def catalog(served: Served) -> Catalog:
    return Catalog(str(served.store))


@contextmanager
def live_server(cat: Catalog, host: str = "127.0.0.1") -> Iterator[str]:
    """uvicorn in a thread on a free port, as `preprocess serve` runs it; yields the base URL."""
    sock = listen(host, 0)
    server = make_server(cat, host=host)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- stores written row by row (real image bytes; for what real jobs rarely make) -----------------


def crops(photo: Path, count: int, size: tuple[int, int] = (48, 32), fmt: str = "JPEG") -> list[bytes]:
    """``count`` different real images: crops of a real photo, encoded as ``fmt`` (Pillow)."""
    import io

    from PIL import Image

    img = Image.open(photo).convert("RGB")
    out = []
    for k in range(count):
        x, y = (k * 37) % (img.width - size[0]), (k * 23) % (img.height - size[1])
        buf = io.BytesIO()
        img.crop((x, y, x + size[0], y + size[1])).save(buf, format=fmt, **({"quality": 60} if fmt == "JPEG" else {}))
        out.append(buf.getvalue())
    return out


def item_row(i: int, data: bytes, *, size: tuple[int, int] = (48, 32), quality: int = 60,
             similarity: float = 0.99, status: str = "ok", fingerprint: str = "fp-a", fmt: str = "jpeg",
             job: str = "job-1", source_path: str = "") -> ItemRow:
    import hashlib

    import numpy as np

    return ItemRow(jpeg=data, format=fmt, encoder="libjpeg-turbo" if fmt == "jpeg" else "", chroma="420",
                   status=status, width=size[0], height=size[1], bytes=len(data),
                   quality=quality, similarity=similarity, probes=1, model="m", source_path=source_path or
                   f"/nowhere/img_{i:06d}.jpg", source_sha256=hashlib.sha256(str(i).encode()).hexdigest(),
                   source_bytes=10 * len(data), source_width=size[0] * 4, source_height=size[1] * 4,
                   source_format="JPEG", capture_time="", camera_model="", fingerprint=fingerprint, job_id=job,
                   embedding=np.zeros(4, dtype=np.float32))

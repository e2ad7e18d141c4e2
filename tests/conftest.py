"""Shared fixtures: the real photos (fetched by scripts/fetch-photos), odd and bad variants made
from them, the real model, and a GPU check for tests marked ``gpu``."""

from __future__ import annotations

import io
import signal
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings
from PIL import Image

from tests.paths import ROOT

# Property tests: no per-example deadline (a loaded 2-core CI machine took some past the default 200 ms) and the
# same examples every run (a fresh clone drew new ones each time: a failure could not be rerun). A session that
# wants new examples runs with --hypothesis-profile explore.
settings.register_profile("fixed", deadline=None, derandomize=True)
settings.register_profile("explore", deadline=None)
settings.load_profile("fixed")

PHOTOS = ROOT / "photos"

# A shell starts a background job (`scripts/test &`, nohup, some CI runners) with SIGINT ignored, and an
# ignored signal stays ignored in every process started from it: `preprocess run` (rightly) keeps it so,
# and the Ctrl-C tests would see nothing. The tests run as from a terminal: SIGINT caught here, so the
# processes they start get it at its default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _photos(sub: str) -> list[Path]:
    found = sorted(p for p in (PHOTOS / sub).glob("*") if p.suffix in (".jpg", ".png"))
    if not found:
        pytest.exit(f"no photos under {PHOTOS / sub}: run scripts/fetch-photos (scripts/test does)", returncode=2)
    return found


@pytest.fixture(scope="session")
def camera_photos() -> list[Path]:
    """2560x1600 camera JPEGs with real EXIF."""
    return _photos("camera")


@pytest.fixture(scope="session")
def small_photos() -> list[Path]:
    """Smaller real photos (opencv-doc, scikit-image): JPEG and PNG, 300-1000 px."""
    return _photos("opencv") + _photos("skimage")


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory, camera_photos: list[Path],
               small_photos: list[Path]) -> Path:
    """A small job's worth of real photos: 3 camera photos + 5 small ones."""
    d = tmp_path_factory.mktemp("sample")
    for p in camera_photos[:3] + small_photos[:5]:
        (d / p.name).write_bytes(p.read_bytes())
    return d


def gpu_available() -> bool:
    try:
        from preprocess.pipeline.engines import gpu_count

        return gpu_count() > 0
    except Exception:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU here (run on the lent GPU machine: scripts/gpu-check)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # not `"gpu" in item.keywords`: folder names count there
            item.add_marker(skip)


# --- odd and bad images, all made from real photos -------------------------------------------


def _jpeg(img: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92, **kw)
    return buf.getvalue()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _with_orientation(jpeg_img: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestMake"
    exif[0x0110] = "TestMake Camera-1"
    return _jpeg(jpeg_img, exif=exif.tobytes())


def _huge_header(jpeg: bytes, width: int, height: int) -> bytes:
    """Patch a real JPEG's SOF dimensions: a decompression bomb by header."""
    data = bytearray(jpeg)
    i = 2
    while i < len(data):
        marker = data[i + 1]
        seg_len = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            struct.pack_into(">HH", data, i + 5, height, width)
            return bytes(data)
        i += 2 + seg_len
    raise AssertionError("no SOF marker")


@pytest.fixture(scope="session")
def base_image(small_photos: list[Path]) -> Image.Image:
    """A real photo (RGB) to derive the odd variants from."""
    src = next(p for p in small_photos if p.name == "fruits.jpg")
    return Image.open(src).convert("RGB")


@pytest.fixture(scope="session")
def odd_images(base_image: Image.Image) -> dict[str, bytes]:
    """Valid but unusual images: each must convert correctly in every engine."""
    img = base_image
    arr16 = (np.asarray(img.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    rgba = img.convert("RGBA")
    alpha = np.asarray(rgba).copy()
    alpha[: alpha.shape[0] // 2, :, 3] = 0  # top half transparent -> white
    frames = io.BytesIO()
    img.save(frames, format="TIFF", save_all=True, append_images=[img.rotate(90, expand=True)])
    return {
        "rotated6.jpg": _with_orientation(img, 6),
        "rotated3.jpg": _with_orientation(img, 3),
        "cmyk.jpg": _jpeg(img.convert("CMYK")),
        "gray.jpg": _jpeg(img.convert("L")),
        "gray16.png": _png(Image.fromarray(arr16)),
        "rgba.png": _png(Image.fromarray(alpha, mode="RGBA")),
        "palette.png": _png(img.convert("P")),
        "multiframe.tif": frames.getvalue(),
    }


@pytest.fixture(scope="session")
def bad_images(base_image: Image.Image) -> dict[str, tuple[bytes, str]]:
    """Unusable inputs and the failure code each must be recorded with."""
    good = _jpeg(base_image)
    flipped = bytearray(good)
    rng = np.random.default_rng(7)
    start = len(flipped) // 3
    for pos in rng.integers(start, len(flipped) - 2, size=400):
        flipped[int(pos)] ^= 0xFF
    return {
        "empty.jpg": (b"", "E_EMPTY"),
        "truncated.jpg": (good[: len(good) // 2], "E_TRUNCATED"),
        "html.jpg": (b"<!doctype html><html><body>404 not found</body></html>\n", "E_NOT_IMAGE"),
        "bomb.jpg": (_huge_header(good, 60000, 60000), "E_TOO_LARGE"),
        "bitflip.jpg": (bytes(flipped), "E_CORRUPT"),
    }


# -- a store made by a real watch daemon that committed several times under one job id (issue 23) ----------


@dataclass
class DaemonStore:
    """``store``: three daemon commits on main (3 photos; 2 photos + a truncated file; 3 photos), each
    wave written once the previous one was committed, then a duplicate (settled at shutdown, no
    commit). ``waves``: the source sha256s (and failed file names) each commit added, in order.
    ``events``: the daemon's JSON log (``--log-level debug``)."""

    store: Path
    folder: Path
    waves: list[set[str]]
    failed: list[set[str]]
    events: list[dict[str, object]]


@pytest.fixture(scope="session")
def daemon_store(tmp_path_factory: pytest.TempPathFactory, camera_photos: list[Path],
                 bad_images: dict[str, tuple[bytes, str]]) -> DaemonStore:
    import hashlib

    from tests.drivers.watch.harness import Daemon, small_jpegs

    root = tmp_path_factory.mktemp("daemon")
    incoming, store = root / "incoming", root / "cams.icechunk"
    incoming.mkdir()
    photos = small_jpegs(camera_photos, 8)
    waves: list[list[tuple[str, bytes]]] = [
        [(f"cam0-{i:04d}.jpg", photos[i]) for i in range(3)],
        [("cam1-0003.jpg", photos[3]), ("cam1-0004.jpg", photos[4]), ("truncated.jpg", bad_images["truncated.jpg"][0])],
        [(f"cam2-{i:04d}.jpg", photos[i]) for i in range(5, 8)],
    ]
    with Daemon(incoming, store, "--commit-every", "3", "--batch-wait", "0.1s", "--log-level", "debug",
                quiet="0.3s", commit_interval="60s") as d:
        d.start()
        for k, wave in enumerate(waves, start=1):
            for name, data in wave:
                (incoming / name).write_bytes(data)
            deadline = time.monotonic() + 90
            while len(d.named("commit")) < k:  # the wave is committed before the next one is written
                assert time.monotonic() < deadline and d.proc.poll() is None, d.log()
                time.sleep(0.1)
        (incoming / "copy-of-cam0-0000.jpg").write_bytes(photos[0])  # a duplicate: no row, no commit
        deadline = time.monotonic() + 60
        while not any(e.get("duplicate") for e in d.named("batch")):
            assert time.monotonic() < deadline and d.proc.poll() is None, d.log()
            time.sleep(0.1)
        d.signal(signal.SIGTERM)
        assert d.wait(30) == 0, d.log()
        events = [dict(e) for e in d.events]
    shas = [{hashlib.sha256(data).hexdigest() for name, data in wave if name != "truncated.jpg"} for wave in waves]
    return DaemonStore(store, incoming, shas, [{n for n, _ in wave if n == "truncated.jpg"} for wave in waves], events)

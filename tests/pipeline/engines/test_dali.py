"""The DALI engine's own rules, on the CPU (the same graphs and glue as on the GPU): a device failure is
never an image's failure, an image the encoder fails on is encoded on the CPU and says so, encodes
are grouped per (quality, chroma), candidates DALI cannot decode are decoded on the CPU, which
backends work, and the batch decoder retries image by image. ``gpu`` tests repeat what matters on
the device (run by scripts/gpu-check)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("nvidia.dali")

from preprocess.core.errors import DeviceError
from preprocess.pipeline.codecs import Candidate, Encoded, Variant
from preprocess.pipeline.engines.dali import DaliEngine, ImageDecoder, codec_backends
from preprocess.pipeline.engines.dali.graph import Pipe
from preprocess.pipeline.extractor.manifest import find_manifest
from preprocess.pipeline.spec import Encode
from tests.pipeline.engines.test_conformance import source

VIEW = find_manifest("mobilenetv2-imagenet").input
LIBJPEG = Variant("jpeg", "libjpeg", "420")


@pytest.fixture
def engine() -> Iterator[DaliEngine]:
    eng = DaliEngine(Encode(encoders=("libjpeg",), progressive=False), VIEW, device="cpu", max_batch=8)
    yield eng
    eng.close()


class CountingEncoder:
    """Test double around the real nvImageCodec encoder: counts calls, and answers None for the images
    at ``fail`` (nvImageCodec's way of saying it failed on one; valid pixels never make it fail)."""

    def __init__(self, real: Any, fail: set[int] | None = None) -> None:
        self.real, self.fail, self.calls, self.seen = real, fail or set(), 0, 0

    def encode(self, images: list[Any], codec: str, **kw: Any) -> list[Any]:
        self.calls += 1
        out = self.real.encode(images, codec, **kw)
        marked = [None if self.seen + j in self.fail else cs for j, cs in enumerate(out)]
        self.seen += len(images)
        return marked


def _loaded(engine: DaliEngine, photos: list[Path]) -> list[Any]:
    loaded = engine.load([source(p.name, p.read_bytes()) for p in photos])
    assert not loaded.failures
    return loaded.prepared


def test_a_device_failure_stops_the_batch_instead_of_failing_its_images(
        engine: DaliEngine, small_photos: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    # Test double: no GPU here to run out of memory; the pipeline raises what DALI raises then.
    def oom(self: Pipe, feeds: dict[str, Any]) -> Any:
        raise RuntimeError("Critical error in pipeline:\nCUDA runtime API error cudaErrorMemoryAllocation (2):\n"
                           "out of memory")

    monkeypatch.setattr(Pipe, "run", oom)
    with pytest.raises(DeviceError) as err:
        engine.load([source(p.name, p.read_bytes()) for p in small_photos[:3]])
    assert err.value.code == "DEVICE_OOM"


def test_an_image_the_encoder_fails_on_is_encoded_on_the_cpu_and_says_so(
        engine: DaliEngine, small_photos: list[Path]) -> None:
    prepared = _loaded(engine, small_photos[:3])
    engine._jpeg.encoder = CountingEncoder(engine._jpeg.encoder, fail={1})
    got = engine.encode(prepared, [Candidate(LIBJPEG, 60)] * 3)
    assert [e.library for e in got] == ["", "libjpeg-turbo", ""]
    assert engine.fallbacks == 1 and "1 images" in engine.describe()["encode_fallbacks"]
    fallback = Image.open(io.BytesIO(got[1].data))
    assert fallback.format == "JPEG" and fallback.size == (prepared[1].width, prepared[1].height)
    # finish keeps the fallback's bytes (already optimized by libjpeg-turbo): the pixels measured
    final = engine.finish(prepared, got)
    assert final[1] == got[1].data
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(final[0]))), np.asarray(Image.open(io.BytesIO(got[0].data))))


def test_one_encoder_call_per_quality_and_chroma(engine: DaliEngine, small_photos: list[Path]) -> None:
    prepared = _loaded(engine, small_photos[:4])
    spy = engine._jpeg.encoder = CountingEncoder(engine._jpeg.encoder)
    asks = [Candidate(LIBJPEG, 30), Candidate(LIBJPEG, 50), Candidate(LIBJPEG, 30),
            Candidate(Variant("jpeg", "libjpeg", "444"), 30)]
    got = engine.encode(prepared, asks)
    assert spy.calls == 3 and [e.candidate for e in got] == asks
    spy.calls = 0
    final = engine.finish(prepared, got)  # baseline: optimized Huffman tables, grouped the same way
    assert spy.calls == 3
    for e, data in zip(got, final, strict=True):
        assert len(data) <= len(e.data)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), np.asarray(Image.open(io.BytesIO(e.data))))


def test_candidates_dali_cannot_decode_are_decoded_on_the_cpu(
        engine: DaliEngine, small_photos: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    prepared = _loaded(engine, small_photos[:2])
    blobs = engine.encode(prepared, [Candidate(LIBJPEG, 80)] * 2)
    expected = engine.view(blobs)
    tiles = engine.tiles(blobs)
    real = Pipe.run

    # Test double: DALI's decoder refuses the encoded candidates (a JPEG it cannot take), nothing else.
    def refuse_bytes(self: Pipe, feeds: dict[str, Any]) -> Any:
        if feeds["data"][0].ndim == 1:
            raise RuntimeError("Assert on \"CanDecode\" failed: Unrecognized image format")
        return real(self, feeds)

    monkeypatch.setattr(Pipe, "run", refuse_bytes)
    got = engine.view(blobs).host()
    assert got.shape == expected.host().shape and float(np.abs(got - expected.host()).mean()) < 0.02
    got_tiles = engine.tiles(blobs)
    assert got_tiles.counts == tiles.counts
    assert float(np.abs(got_tiles.batch.host() - tiles.batch.host()).mean()) < 0.02
    assert engine.pixels(blobs[0]).shape == (prepared[0].height, prepared[0].width, 3)


def test_which_backends_work_is_reported() -> None:
    rgb = np.asarray(Image.new("RGB", (64, 48), (200, 30, 90)))
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=80)
    assert codec_backends(buf.getvalue(), rgb, device="cpu") == {"decode": {"cpu": "ok"}, "encode": {"cpu": "ok"}}
    broken = codec_backends(b"\xff\xd8 not a jpeg", rgb, device="cpu")
    assert broken["decode"]["cpu"].startswith("unavailable")


def test_the_batch_decoder_retries_image_by_image(small_photos: list[Path]) -> None:
    blobs = [p.read_bytes() for p in small_photos if p.suffix == ".jpg"][:3]
    decoder = ImageDecoder(device="cpu", max_batch=4)
    try:
        got = decoder.decode([blobs[0], b"\xff\xd8\xff\xe0 garbage", blobs[1], blobs[2]])
        assert got[1] is None and all(isinstance(px, np.ndarray) for k, px in enumerate(got) if k != 1)
        ref = np.asarray(Image.open(io.BytesIO(blobs[2])).convert("RGB"), dtype=np.int16)
        last = got[3]
        assert isinstance(last, np.ndarray) and np.abs(last.astype(np.int16) - ref).mean() < 2.0
    finally:
        decoder.close()


@pytest.mark.gpu
def test_gpu_lanes_have_their_own_streams_and_encoders() -> None:
    a = DaliEngine(Encode(encoders=("libjpeg",)), VIEW, device="gpu", max_batch=8)
    b = DaliEngine(Encode(encoders=("libjpeg",)), VIEW, device="gpu", max_batch=8)
    try:
        from preprocess.pipeline.engines.dali.cuda import CudaMemory

        assert isinstance(a._memory, CudaMemory) and isinstance(b._memory, CudaMemory)
        assert a._memory.cuda_stream is not None and b._memory.cuda_stream is not None
        assert a._memory.cuda_stream.cuda_stream != b._memory.cuda_stream.cuda_stream
        assert a._jpeg.encoder is not b._jpeg.encoder
    finally:
        a.close()
        b.close()


@pytest.mark.gpu
def test_gpu_encode_round_trips_every_odd_shape_through_nvjpeg() -> None:
    eng = DaliEngine(Encode(encoders=("libjpeg",), progressive=False), VIEW, device="gpu", max_batch=8)
    try:
        shapes = [(1, 1), (1, 4000), (4000, 1), (3, 7), (16, 16), (8191, 3)]
        rng = np.random.default_rng(0)
        srcs = []
        for k, (w, h) in enumerate(shapes):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
            srcs.append(source(f"shape{k}.png", buf.getvalue()))
        loaded = eng.load(srcs)
        assert not loaded.failures
        got: list[Encoded] = eng.encode(loaded.prepared, [Candidate(LIBJPEG, 75)] * len(shapes))
        assert eng.fallbacks == 0, "nvJPEG failed on a shape"
        for e, p in zip(got, loaded.prepared, strict=True):  # long sides above 1280 px are resized
            assert Image.open(io.BytesIO(e.data)).size == (p.width, p.height)
        assert len(eng.view(got)) == len(shapes)
    finally:
        eng.close()

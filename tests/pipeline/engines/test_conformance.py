"""The engine contract: every engine (pillow, DALI on CPU, DALI on GPU) must pass this same suite.

References are computed independently with plain Pillow (full decode, EXIF transpose, RGB
conversion) so an engine cannot agree with itself by construction.
"""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Iterator
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from PIL import Image, ImageOps

from preprocess.core.errors import InputError
from preprocess.pipeline import codecs
from preprocess.pipeline.codecs import Candidate, Variant
from preprocess.pipeline.engines import make_engine
from preprocess.pipeline.engines.base import Engine, Prepared, SourceImage
from preprocess.pipeline.extractor.manifest import find_manifest
from preprocess.pipeline.extractor.view import model_view
from preprocess.pipeline.images import decode_rgb, probe
from preprocess.pipeline.spec import Encode, Resize

VIEW = find_manifest("mobilenetv2-imagenet").input
RESIZE = Resize(mode="long-side", size=1280)

ENGINES = [
    pytest.param(("pillow", "cpu"), id="pillow"),
    pytest.param(("dali", "cpu"), id="dali-cpu"),
    pytest.param(("dali", "gpu"), id="dali-gpu", marks=pytest.mark.gpu),
]


@pytest.fixture(params=ENGINES, scope="module")
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    name, device = request.param
    eng = make_engine(name, device, encode=Encode(), view=VIEW, max_batch=8)
    yield eng
    eng.close()


def source(name: str, data: bytes, resize: Resize = RESIZE) -> SourceImage:
    info = probe(data, max_pixels=200_000_000, path=name)
    return SourceImage(path=name, data=data, sha256=hashlib.sha256(data).hexdigest(), info=info,
                       target=resize.target(info.width, info.height))


def reference_rgb(data: bytes) -> Image.Image:
    img: Image.Image = Image.open(io.BytesIO(data))
    img = ImageOps.exif_transpose(img) or img
    if img.mode in ("I;16", "I"):
        arr = np.asarray(img, dtype=np.float32) / 257.0
        img = Image.fromarray(arr.round().clip(0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    return img.convert("RGB")


def pixels(engine: Engine, prepared: Prepared) -> np.ndarray:
    """The prepared image as host HWC uint8 (decoded from a lossless-enough encode if on device)."""
    if prepared.pixels.device == "cpu":
        return prepared.pixels.array()
    blob = engine.encode([prepared], [jpeg(100)])[0]
    return np.asarray(Image.open(io.BytesIO(blob.data)).convert("RGB"))


def jpeg(quality: int, chroma: str = "420", encoder: str = "libjpeg") -> Candidate:
    """A JPEG candidate from the engine's own JPEG encoder (libjpeg-turbo, or nvJPEG on the GPU)."""
    return Candidate(Variant("jpeg", encoder, chroma), quality)


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def test_resizes_real_photos_to_the_target(engine: Engine, camera_photos: list[Path],
                                           small_photos: list[Path]) -> None:
    files = camera_photos[:3] + small_photos[:3]
    srcs = [source(p.name, p.read_bytes()) for p in files]
    loaded = engine.load(srcs)
    assert not loaded.failures
    assert [p.index for p in loaded.prepared] == list(range(len(srcs)))
    for p, s in zip(loaded.prepared, srcs, strict=True):
        assert (p.width, p.height) == s.target
        assert max(p.width, p.height) <= 1280
        # never upscaled
        assert p.width <= s.info.width and p.height <= s.info.height
        ref = reference_rgb(s.data).resize(s.target, Image.Resampling.LANCZOS)
        got = pixels(engine, p)
        assert got.shape == (s.target[1], s.target[0], 3)
        assert mean_abs(got, np.asarray(ref)) < 4.0, s.path


def test_source_view_matches_the_reference_view(engine: Engine, camera_photos: list[Path],
                                                small_photos: list[Path]) -> None:
    files = [camera_photos[0], small_photos[0]]
    srcs = [source(p.name, p.read_bytes()) for p in files]
    loaded = engine.load(srcs)
    got = np.asarray(loaded.source_view.host())
    ref = model_view([reference_rgb(s.data) for s in srcs], VIEW).host()
    assert got.shape == ref.shape == (2, 3, VIEW.height, VIEW.width)
    assert got.dtype == np.float32
    # normalised units: ~0.02 is about one 8-bit level
    assert float(np.abs(got - ref).mean()) < 0.06


def test_encode_makes_real_jpegs_and_bytes_grow_with_quality(engine: Engine, camera_photos: list[Path]) -> None:
    s = source("cam", camera_photos[1].read_bytes())
    loaded = engine.load([s])
    p = loaded.prepared[0]
    blobs = [e.data for e in engine.encode([p, p, p], [jpeg(30), jpeg(60), jpeg(95)])]
    sizes = [len(b) for b in blobs]
    assert sizes[0] < sizes[1] < sizes[2]
    for b in blobs:
        img = Image.open(io.BytesIO(b))
        assert img.format == "JPEG"
        assert img.size == s.target
        img.load()
    assert sizes[2] < len(s.data)  # resized 4x fewer pixels: smaller even at q95
    # 4:2:0 subsampling as specified
    from PIL import JpegImagePlugin

    assert JpegImagePlugin.get_sampling(Image.open(io.BytesIO(blobs[1]))) == 2


def test_view_of_encoded_bytes_matches_reference(engine: Engine, camera_photos: list[Path]) -> None:
    s = source("cam", camera_photos[2].read_bytes())
    loaded = engine.load([s])
    blob = engine.encode(loaded.prepared, [jpeg(90)])[0]
    got = engine.view([blob]).host()
    ref = model_view([Image.open(io.BytesIO(blob.data)).convert("RGB")], VIEW).host()
    assert float(np.abs(got - ref).mean()) < 0.06


@pytest.mark.parametrize("name", ["rotated6.jpg", "rotated3.jpg", "cmyk.jpg", "gray.jpg", "gray16.png",
                                  "rgba.png", "palette.png", "multiframe.tif"])
def test_odd_images_convert_correctly(engine: Engine, odd_images: dict[str, bytes], name: str) -> None:
    data = odd_images[name]
    s = source(name, data)
    loaded = engine.load([s])
    assert not loaded.failures, loaded.failures
    p = loaded.prepared[0]
    ref = reference_rgb(data)
    assert (p.width, p.height) == ref.size  # small photo: not resized; orientation applied
    got = pixels(engine, p)
    assert mean_abs(got, np.asarray(ref)) < 4.0
    if name.startswith("gray"):
        assert mean_abs(got[..., 0], got[..., 2]) < 1.0


def test_a_bad_image_fails_alone(engine: Engine, bad_images: dict[str, tuple[bytes, str]],
                                 small_photos: list[Path]) -> None:
    good = [source(p.name, p.read_bytes()) for p in small_photos[:3]]
    truncated = source("truncated.jpg", bad_images["truncated.jpg"][0])
    batch = [good[0], truncated, good[1], good[2]]
    loaded = engine.load(batch)
    assert [i for i, _ in loaded.failures] == [1]
    err = loaded.failures[0][1]
    assert isinstance(err, InputError)
    assert err.code in ("E_TRUNCATED", "E_CORRUPT")
    assert err.path == "truncated.jpg"
    assert [p.index for p in loaded.prepared] == [0, 2, 3]
    assert loaded.source_view.host().shape[0] == 3


def _scan_garbage(data: bytes, seed: int) -> bytes:
    """``data`` with 300 bytes in the middle of its entropy-coded data made random, with no 0xFF among them
    (so no marker: the cheap structural check, :func:`~preprocess.pipeline.formats.jpeg.suspect`, sees
    nothing)."""
    at = data.index(b"\xff\xda")
    scan = at + 2 + int.from_bytes(data[at + 2:at + 4], "big")
    out, rng = bytearray(data), np.random.default_rng(seed)
    middle = scan + (len(out) - scan) // 3
    for k in range(middle, middle + 300):
        if out[k] != 0xFF and out[k - 1] != 0xFF:
            out[k] = int(rng.integers(0, 0xFF))
    return bytes(out)


def test_garbage_without_a_marker_in_the_scan_is_corrupt_on_every_engine(
        engine: Engine, small_photos: list[Path]) -> None:
    """DALI decoded these without a word (libjpeg-turbo's warning went to stderr): stored as ok, 40 levels
    off on average. Every engine now says E_CORRUPT, and the good images beside them load."""
    from preprocess.pipeline.formats.jpeg import entropy_intact, suspect

    good = [p.read_bytes() for p in small_photos[:2]]
    bad = [_scan_garbage(good[0], seed) for seed in (1, 2)]
    assert not any(suspect(b) for b in bad) and not any(entropy_intact(b) for b in bad)
    assert all(entropy_intact(g) for g in good)
    loaded = engine.load([source("a.jpg", good[0]), source("bad1.jpg", bad[0]), source("b.jpg", good[1]),
                          source("bad2.jpg", bad[1])])
    assert [(i, e.code, e.path) for i, e in loaded.failures] == [(1, "E_CORRUPT", "bad1.jpg"),
                                                                 (3, "E_CORRUPT", "bad2.jpg")]
    assert [p.index for p in loaded.prepared] == [0, 2]


def test_a_harmless_header_warning_still_loads_on_every_engine(engine: Engine, small_photos: list[Path]) -> None:
    """A JFIF 2.01 header makes libjpeg-turbo warn (so the strict read of the scans says no), yet the pixels
    are the honest file's: the DALI engine hands it to the CPU decoder, which mends the field."""
    from preprocess.pipeline.formats.jpeg import entropy_intact

    data = bytearray(small_photos[0].read_bytes())
    at = data.index(b"JFIF\x00")
    data[at + 5] = 2
    assert not entropy_intact(bytes(data))
    honest = engine.load([source("honest.jpg", small_photos[0].read_bytes())]).prepared[0]
    loaded = engine.load([source("jfif2.jpg", bytes(data))])
    assert not loaded.failures
    assert mean_abs(pixels(engine, loaded.prepared[0]), pixels(engine, honest)) < 1.0


def _exif(orientation: int) -> bytes:
    """An APP1 segment holding an EXIF block with one tag: ``orientation``."""
    body = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00" + struct.pack("<HHIHH", 0x112, 3, 1, orientation, 0)
    body += b"\x00" * 4
    return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body


def _odd_sources(photo: bytes) -> dict[str, bytes]:
    """Files a differential sweep of the two engines found DALI reading another way than the CPU decoder:
    two EXIF blocks (DALI took the other one, and sized its output for one reading while decoding the other:
    rows of uninitialised memory), a BMP cut in its last rows or with its pixel offset at 0, TIFFs whose
    strips fail to decode (DALI: ok, black), a PNG with a colour key (DALI kept the transparent pixels)."""
    small = Image.open(io.BytesIO(photo)).convert("RGB").resize((160, 100))
    jpg, bmp = io.BytesIO(), io.BytesIO()
    small.save(jpg, "JPEG", quality=90)
    small.save(bmp, "BMP")
    tif = bytes(imagecodecs.tiff_encode(np.asarray(small), compression="lzw"))
    flipped = bytearray(tif)
    flipped[len(tif) // 2] ^= 0xFF
    offset0 = bytearray(bmp.getvalue())
    offset0[10:14] = bytes(4)
    keyed = io.BytesIO()
    small.save(keyed, "PNG", transparency=small.getpixel((0, 0)))  # tRNS: pixels of that colour are transparent
    j = jpg.getvalue()
    return {"keyed.png": keyed.getvalue(),"exif-1-then-6.jpg": j[:2] + _exif(1) + _exif(6) + j[2:],
            "exif-6-then-1.jpg": j[:2] + _exif(6) + _exif(1) + j[2:],
            "cut.bmp": bmp.getvalue()[:-10], "offset0.bmp": bytes(offset0), "flipped.tif": bytes(flipped)}


def test_every_engine_gives_the_cpu_decoders_verdict_and_pixels(engine: Engine, small_photos: list[Path]) -> None:
    for name, data in _odd_sources(small_photos[0].read_bytes()).items():
        try:
            want: str | np.ndarray = np.asarray(decode_rgb(data, path=name))
        except InputError as exc:
            want = exc.code
        loaded = engine.load([source(name, data)])
        if isinstance(want, str):
            assert [e.code for _, e in loaded.failures] == [want], name
        else:
            assert not loaded.failures, (name, loaded.failures)
            assert mean_abs(pixels(engine, loaded.prepared[0]), want) < 1.5, name


def test_tiles_line_up_and_match_reference_crops(engine: Engine, camera_photos: list[Path],
                                                 small_photos: list[Path]) -> None:
    from preprocess.pipeline.engines.base import tile_boxes

    resize = Resize(mode="long-side", size=640)
    files = [camera_photos[3], next(p for p in small_photos if p.name == "chelsea.png")]
    srcs = [source(p.name, p.read_bytes(), resize) for p in files]
    loaded = engine.load(srcs)
    ref_tiles = engine.tiles(loaded.prepared)
    blobs = engine.encode(loaded.prepared, [jpeg(95), jpeg(95)])
    got_tiles = engine.tiles(blobs)
    expected = [len(tile_boxes(p.width, p.height, VIEW.width, VIEW.height)) for p in loaded.prepared]
    assert ref_tiles.counts == got_tiles.counts == expected == [6, 6]  # 640x400 and 451x300 (not upscaled)
    ref = ref_tiles.batch.host()
    got = got_tiles.batch.host()
    assert ref.shape == got.shape == (12, 3, VIEW.height, VIEW.width)
    # q95 candidates' tiles are close to the uncompressed tiles, tile by tile
    assert float(np.abs(ref - got).mean()) < 0.1
    # and each decoded tile is the reference crop of the decoded candidate, in the model's view
    img = Image.open(io.BytesIO(blobs[0].data)).convert("RGB")
    crops = [img.crop(b) for b in tile_boxes(img.width, img.height, VIEW.width, VIEW.height)]
    assert float(np.abs(got[:6] - model_view(crops, VIEW).host()).mean()) < 0.06


def test_crops_and_looks_line_up_with_the_reference(engine: Engine, camera_photos: list[Path],
                                                    small_photos: list[Path]) -> None:
    """The crops view (quadrants + centre half at the stored resolution) of a candidate and of its
    uncompressed resized image line up; one round's look (whole views, then every candidate's crops)
    holds exactly what view() and regions() give one by one."""
    from preprocess.pipeline.engines.base import crop_boxes

    files = [camera_photos[1], next(p for p in small_photos if p.name == "chelsea.png")]
    loaded = engine.load([source(p.name, p.read_bytes(), Resize(mode="long-side", size=640)) for p in files])
    ref = engine.regions(loaded.prepared, crop_boxes)
    blobs = engine.encode(loaded.prepared, [jpeg(95), jpeg(60)])
    got = engine.regions(blobs, crop_boxes)
    assert ref.counts == got.counts == [5, 5]
    assert float(np.abs(ref.batch.host()[:5] - got.batch.host()[:5]).mean()) < 0.1  # q95: close, crop by crop
    img = Image.open(io.BytesIO(blobs[1].data)).convert("RGB")
    crops = [img.crop(b) for b in crop_boxes(img.width, img.height)]
    assert float(np.abs(got.batch.host()[5:] - model_view(crops, VIEW).host()).mean()) < 0.06
    look = engine.looks(blobs, crop_boxes)
    assert (look.whole, look.counts) == (2, [5, 5])
    wholes, regions = look.split(look.batch.host()[:, 0, 0, :2])  # any [N, D] array splits alike
    assert wholes is not None and wholes.shape[0] == 2 and [len(r) for r in regions] == [5, 5]
    rows = look.batch.host()
    assert float(np.abs(rows[:2] - engine.view(blobs).host()).mean()) < 0.02
    assert float(np.abs(rows[2:] - got.batch.host()).mean()) < 0.02
    only = engine.looks(blobs, None)
    assert (only.whole, only.counts, len(only.batch)) == (2, [0, 0], 2)


def test_crop_boxes_are_the_quadrants_and_the_centre_half() -> None:
    from preprocess.pipeline.engines.base import crop_boxes

    assert crop_boxes(1280, 800) == [(0, 0, 640, 400), (640, 0, 1280, 400), (0, 400, 640, 800), (640, 400, 1280, 800),
                                     (320, 200, 960, 600)]
    assert len(crop_boxes(1281, 801, grids=(2, 3))) == 4 + 9 + 1
    assert crop_boxes(9, 9, grids=(3,), centre=False)[4] == (3, 3, 6, 6)


EVERY_VARIANT = [Variant("jpeg", "jpegli", "420"), Variant("jpeg", "libjpeg", "444"), Variant("webp", "libwebp", "420"),
                 Variant("avif", "libavif", "420"), Variant("avif", "libavif", "444"), Variant("jxl", "libjxl", "")]


@pytest.mark.parametrize("variant", EVERY_VARIANT, ids=lambda v: f"{v.format}-{v.encoder}-{v.chroma}")
def test_every_format_encodes_views_and_decodes(engine: Engine, small_photos: list[Path], variant: Variant) -> None:
    """Each engine offers every format: encode, the model view of the candidate (its own decode), and
    codecs.decode (what readers use) agree with the prepared pixels."""
    s = source("chelsea", next(p for p in small_photos if p.name == "chelsea.png").read_bytes())
    loaded = engine.load([s])
    p = loaded.prepared[0]
    lo, hi = engine.encode([p, p], [Candidate(variant, 30), Candidate(variant, 90)])
    assert len(lo.data) < len(hi.data)
    assert codecs.sniff(hi.data) == variant.format
    decoded = codecs.decode(hi.data, variant.format)
    assert decoded.shape == (p.height, p.width, 3) and decoded.dtype == np.uint8
    assert mean_abs(decoded, pixels(engine, p)) < 4.0  # q90 of any codec is close to the source
    got = engine.view([hi]).host()
    ref = model_view([Image.fromarray(decoded)], VIEW).host()
    assert float(np.abs(got - ref).mean()) < 0.06
    assert mean_abs(np.asarray(engine.pixels(hi)), decoded) < 1.0


@pytest.mark.parametrize("encoder", ["jpegli", "libjpeg"])
def test_finished_jpeg_is_smaller_with_the_same_pixels(engine: Engine, camera_photos: list[Path],
                                                       encoder: str) -> None:
    """What is stored (Engine.finish: mozjpeg's lossless scan optimization) decodes to exactly the pixels
    of the candidate the gate measured, in fewer bytes."""
    s = source("cam", camera_photos[4].read_bytes())
    p = engine.load([s]).prepared[0]
    probes = engine.encode([p, p], [jpeg(20, encoder=encoder), jpeg(60, encoder=encoder)])
    final = engine.finish([p, p], probes)
    for probe_, stored in zip(probes, final, strict=True):
        assert len(stored) < len(probe_.data)
        assert Image.open(io.BytesIO(stored)).info.get("progressive")
        measured = np.asarray(Image.open(io.BytesIO(probe_.data)))
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(stored))), measured)


def test_finished_baseline_jpeg_keeps_the_pixels(camera_photos: list[Path]) -> None:
    """``progressive = false`` (libjpeg only): the stored bytes are baseline JPEG with optimized Huffman
    tables, decoding to exactly the measured candidate's pixels (on DALI: nvImageCodec encodes it again)."""
    encode = Encode(encoders=("libjpeg",), progressive=False)
    for name in ("pillow", "dali"):
        eng = make_engine(name, "cpu", encode=encode, view=VIEW, max_batch=8)
        try:
            p = eng.load([source("cam", camera_photos[4].read_bytes())]).prepared[0]
            probes = eng.encode([p, p], [jpeg(20), jpeg(60, "444")])
            for probe_, stored in zip(probes, eng.finish([p, p], probes), strict=True):
                assert len(stored) <= len(probe_.data)
                assert not Image.open(io.BytesIO(stored)).info.get("progressive")
                measured = np.asarray(Image.open(io.BytesIO(probe_.data)))
                assert np.array_equal(np.asarray(Image.open(io.BytesIO(stored))), measured)
        finally:
            eng.close()

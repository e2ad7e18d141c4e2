"""Decoding untrusted sources (issue 16, items 4-7), on files generated here from a real photo:
every format this build can decode is decoded (header first: the bomb guard runs on header numbers),
what it cannot is E_UNSUPPORTED with a truthful hint, damaged data is never stored as ok pixels,
deep samples are scaled (never saturated), and embedded colour profiles are converted to sRGB."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pytest
import tifffile
from PIL import Image

from preprocess.core.codes import HINTS, ErrorCode
from preprocess.core.errors import InputError
from preprocess.pipeline.images import decode_rgb, probe

MAX = 100_000_000


@pytest.fixture(scope="module")
def rgb(small_photos: list[Path]) -> np.ndarray:
    """A 160x240 crop of a real photo."""
    src = next(p for p in small_photos if p.name == "fruits.jpg")
    return np.ascontiguousarray(np.asarray(Image.open(src).convert("RGB"))[40:200, 60:300])


def _pil(arr: np.ndarray, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _code(data: bytes, *, decode: bool = True) -> str:
    """The failure code probe (then decode_rgb) gives ``data``, or "ok"; a failure names its path and
    has a hint."""
    caught: InputError | None = None
    try:
        probe(data, max_pixels=MAX, path="x")
        if decode:
            decode_rgb(data, path="x")
    except InputError as exc:
        caught = exc
    if caught is None:
        return "ok"
    assert caught.path == "x" and caught.hint
    return caught.code


ENCODERS: dict[str, Callable[[np.ndarray], bytes]] = {
    "webp-lossy": lambda a: bytes(imagecodecs.webp_encode(a, 85, lossless=False)),
    "webp-lossless": lambda a: bytes(imagecodecs.webp_encode(a, lossless=True)),
    "jp2": lambda a: bytes(imagecodecs.jpeg2k_encode(a, 90, codecformat="jp2")),
    "j2k": lambda a: bytes(imagecodecs.jpeg2k_encode(a, 90, codecformat="j2k")),
    "j2k-12bit": lambda a: bytes(imagecodecs.jpeg2k_encode(a.astype(np.uint16) * 16, 90, codecformat="j2k",
                                                           bitspersample=12)),
    "tiff-lzw": lambda a: bytes(imagecodecs.tiff_encode(a, compression="lzw")),
    "tiff-deflate": lambda a: bytes(imagecodecs.tiff_encode(a, compression="deflate")),
    "tiff-jpeg": lambda a: bytes(imagecodecs.tiff_encode(a, compression="jpeg", rowsperstrip=16)),
    "tiff-packbits": lambda a: bytes(imagecodecs.tiff_encode(a, compression="packbits")),
    "tiff-zstd": lambda a: bytes(imagecodecs.tiff_encode(a, compression="zstd")),
    "avif": lambda a: bytes(imagecodecs.avif_encode(a, 80)),
    "avif-10bit": lambda a: bytes(imagecodecs.avif_encode(a.astype(np.uint16) * 4, 80, bitspersample=10)),
    "jxl": lambda a: bytes(imagecodecs.jpegxl_encode(a, 90)),
    "jxl-container": lambda a: bytes(imagecodecs.jpegxl_encode(a, 90, usecontainer=True)),
}
FORMATS = {"webp": "WEBP", "jp2": "JPEG2000", "j2k": "JPEG2000", "tiff": "TIFF", "avif": "AVIF", "jxl": "JXL"}


@pytest.mark.parametrize("kind", sorted(ENCODERS))
def test_every_supported_format_decodes_to_its_pixels(kind: str, rgb: np.ndarray) -> None:
    data = ENCODERS[kind](rgb)
    info = probe(data, max_pixels=MAX)
    assert (info.format, info.width, info.height) == (FORMATS[kind.partition("-")[0]], 240, 160)
    got = np.asarray(decode_rgb(data))
    assert got.shape == rgb.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - rgb).mean() < 4.0, kind  # lossy formats differ a little; deep ones are scaled
    # AVIF, JPEG XL and TIFF are not DALI formats, deep samples neither: the DALI engine sends them to the CPU path
    assert info.plain == (kind.partition("-")[0] in ("webp", "jp2", "j2k") and not kind.endswith("bit"))


@pytest.mark.parametrize("kind", ["avif", "webp-lossy", "jxl"])
def test_the_stored_bytes_reader_decodes_the_new_output_formats(kind: str, rgb: np.ndarray) -> None:
    assert decode_rgb(ENCODERS[kind](rgb)).size == (240, 160)


def _jxl_header(width: int, height: int) -> bytes:
    """A JPEG XL codestream start declaring width x height (SizeHeader, LSB-first bits)."""
    bits = [0]  # div8 = 0
    for v in (height - 1,):
        bits += [1, 1] + [(v >> i) & 1 for i in range(30)]  # U32 selector 3: 30 bits
    bits += [0, 0, 0]  # ratio 0: an explicit width follows
    bits += [1, 1] + [((width - 1) >> i) & 1 for i in range(30)]
    bits += [1] * 8  # all_default metadata
    out = bytearray(b"\xff\x0a")
    for i in range(0, len(bits), 8):
        out.append(sum(b << j for j, b in enumerate(bits[i:i + 8])))
    return bytes(out)


def test_the_bomb_guard_reads_every_format_from_its_header(rgb: np.ndarray) -> None:
    """Huge sizes in the headers of tiny files: refused before any decode (a decode would fail else)."""
    webp = bytearray(imagecodecs.webp_encode(rgb, lossless=True))
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + (59999).to_bytes(3, "little") * 2
    huge_webp = b"RIFF" + struct.pack("<I", 4 + len(vp8x) + len(webp) - 12) + b"WEBP" + vp8x + bytes(webp[12:])
    j2k = bytearray(ENCODERS["j2k"](rgb))
    struct.pack_into(">II", j2k, 8, 60000, 60000)  # SIZ: Xsiz, Ysiz
    avif = bytearray(ENCODERS["avif"](rgb))
    at = avif.find(b"ispe")
    struct.pack_into(">II", avif, at + 8, 60000, 60000)
    tiff = bytearray(ENCODERS["tiff-lzw"](rgb))
    for blob in (huge_webp, bytes(j2k), bytes(avif), _jxl_header(60000, 60000)):
        with pytest.raises(InputError) as caught:
            probe(bytes(blob), max_pixels=MAX, path="bomb")
        assert caught.value.code == "E_TOO_LARGE", caught.value.message
    assert probe(bytes(tiff), max_pixels=MAX).pixels == 240 * 160
    assert probe(_jxl_header(300, 200), max_pixels=MAX).width == 300


def test_what_cannot_be_decoded_is_unsupported_with_the_truth(rgb: np.ndarray) -> None:
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)
    assert _code(heic) == "E_UNSUPPORTED"
    assert _code(_pil(rgb, "ICO")) == "E_UNSUPPORTED"
    hint = HINTS[ErrorCode.E_UNSUPPORTED]
    for name in ("WebP", "JPEG 2000", "AVIF", "JPEG XL", "TIFF"):
        assert name in hint
    unknown = bytearray(ENCODERS["tiff-lzw"](rgb))
    ifd = struct.unpack_from("<I", unknown, 4)[0]
    for i in range(struct.unpack_from("<H", unknown, ifd)[0]):
        if struct.unpack_from("<H", unknown, ifd + 2 + 12 * i)[0] == 259:  # Compression
            struct.pack_into("<H", unknown, ifd + 2 + 12 * i + 8, 12345)
    assert _code(bytes(unknown)) == "E_UNSUPPORTED"
    assert _code(b"<!doctype html><p>not an image</p>") == "E_NOT_IMAGE"


def _scan_start(data: bytes) -> int:
    i = 2
    while data[i + 1] != 0xDA:
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return i + 2 + int.from_bytes(data[i + 2:i + 4], "big")


def test_garbage_in_the_scan_is_corrupt_not_ok(rgb: np.ndarray) -> None:
    """libjpeg decodes these with warnings only (Pillow drops them): before, they were stored as ok."""
    good = _pil(rgb, "JPEG", quality=92)
    start = _scan_start(good)
    rng = np.random.default_rng(16)
    garbage = {
        "random": bytes(rng.integers(0, 256, 300, dtype=np.uint8)),
        "no-0xff": bytes(rng.integers(0, 255, 300, dtype=np.uint8)),
        "zeros": bytes(300),
    }
    for name, junk in garbage.items():
        bad = good[:start + 500] + junk + good[start + 800:]
        assert _code(bad, decode=False) == "ok"  # the header is fine ...
        assert _code(bad) == "E_CORRUPT", name  # ... the pixels are not


def test_codes_say_what_happened(rgb: np.ndarray) -> None:
    good = _pil(rgb, "JPEG", quality=92)
    start = _scan_start(good)
    assert _code(good[:start]) == "E_TRUNCATED"  # cut right after its header
    assert _code(good[:200]) == "E_TRUNCATED"  # its first 200 bytes
    assert _code(good[:len(good) // 2]) == "E_TRUNCATED"
    assert _code(good[:2]) == "E_TRUNCATED"
    zero = bytearray(good)
    i = 2
    while zero[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + int.from_bytes(zero[i + 2:i + 4], "big")
    zero[i + 5:i + 9] = bytes(4)  # a 0x0 SOF
    assert _code(bytes(zero)) == "E_CORRUPT"
    png = _pil(rgb, "PNG")
    for at in (29, png.find(b"IDAT") + 40):  # the IHDR's CRC; a byte inside IDAT
        bad = bytearray(png)
        bad[at] ^= 0xFF
        assert _code(bytes(bad)) == "E_CORRUPT"
    assert _code(png[:len(png) // 2]) == "E_TRUNCATED"
    assert _code(ENCODERS["tiff-lzw"](rgb)[:3000]) == "E_TRUNCATED"
    assert _code(ENCODERS["webp-lossy"](rgb)[:500]) == "E_TRUNCATED"
    assert _code(ENCODERS["avif"](rgb).replace(b"ipco", b"xpco", 1)) == "E_CORRUPT"  # found by the fuzzer


def test_a_jpeg_missing_only_its_eoi_is_accepted_whole(rgb: np.ndarray) -> None:
    good = _pil(rgb, "JPEG", quality=92)
    assert good.endswith(b"\xff\xd9")
    assert np.array_equal(np.asarray(decode_rgb(good[:-2])), np.asarray(decode_rgb(good)))


def test_deep_samples_are_scaled_never_saturated(rgb: np.ndarray) -> None:
    gray = rgb[:, :, 1].astype(np.int64)
    cases = {
        "int32": (gray * 100_000).astype(np.int32),
        "int16-signed": (gray * 200 - 25_000).astype(np.int16),
        "float32-wide": (gray * 3.5 - 100).astype(np.float32),
        "float32-unit": (gray / 255.0).astype(np.float32),
        "uint16": (gray * 257).astype(np.uint16),
    }
    expected = ((gray - gray.min()) * 255.0 / (gray.max() - gray.min()) + 0.5).astype(np.uint8)
    for name, arr in cases.items():
        assert isinstance(arr, np.ndarray)
        for data in (tifffile_bytes(arr, None), tifffile_bytes(arr, "zlib")):
            got = np.asarray(decode_rgb(data))[:, :, 0].astype(int)
            want = gray if name in ("float32-unit", "uint16") else expected
            assert np.abs(got - want).max() <= 1, name
            assert np.count_nonzero(got == 255) < got.size // 10, name  # not saturated


def tifffile_bytes(arr: np.ndarray, compression: str | None, **kw: Any) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, compression=compression, **kw)
    return buf.getvalue()


def test_tiff_orientation_is_applied_once(rgb: np.ndarray) -> None:
    want = np.rot90(rgb, k=-1)  # orientation 6: rotate 90 degrees clockwise to view
    for compression in (None, "lzw"):
        data = tifffile_bytes(rgb, compression, photometric="rgb", extratags=[(274, "H", 1, 6, True)])
        info = probe(data, max_pixels=MAX)
        assert (info.width, info.height, info.orientation) == (160, 240, 6)
        assert np.array_equal(np.asarray(decode_rgb(data)), want), compression


def test_compressed_tiffs_in_every_layout_decode_to_their_pixels(rgb: np.ndarray) -> None:
    """Found by a differential sweep of both engines: a compressed MinIsWhite TIFF was stored inverted
    (imagecodecs gives the samples as stored, 93 levels off), and a compressed RGB TIFF with separate planes
    was refused as E_CORRUPT ("77x3 pixels"); Pillow's own decoders (uncompressed) were right all along."""
    gray = rgb.mean(axis=2).astype(np.uint8)
    for compression in (None, "lzw", "zlib", "packbits"):
        data = tifffile_bytes(255 - gray, compression, photometric="miniswhite")
        assert np.array_equal(np.asarray(decode_rgb(data))[:, :, 0], gray), compression
        deep = tifffile_bytes((65535 - gray.astype(np.uint16) * 257).astype(np.uint16), compression,
                              photometric="miniswhite")
        assert np.abs(np.asarray(decode_rgb(deep))[:, :, 0].astype(int) - gray).max() <= 1, compression
        alpha = np.dstack([255 - gray, np.full_like(gray, 255)])
        with_alpha = tifffile_bytes(alpha, compression, photometric="miniswhite", extrasamples=[2])
        assert _code(with_alpha) == "E_UNSUPPORTED", compression  # grey + alpha, white 0: refused, not guessed
        bilevel = gray > 128
        one_bit = tifffile_bytes(~bilevel, compression, photometric="miniswhite")
        assert np.array_equal(np.asarray(decode_rgb(one_bit))[:, :, 0] > 128, bilevel), compression
        planes = tifffile_bytes(np.moveaxis(rgb, -1, 0).copy(), compression, photometric="rgb",
                                planarconfig="separate")
        assert np.array_equal(np.asarray(decode_rgb(planes)), rgb), compression


def _adobe_rgb() -> bytes:
    """An Adobe RGB (1998) profile: its primaries, D65 white and gamma 563/256 (built by LittleCMS)."""
    return bytes(imagecodecs.cms_profile("rgb", whitepoint=(0.3127, 0.3290),
                                         primaries=(0.64, 0.33, 0.21, 0.71, 0.15, 0.06), gamma=563 / 256))


def test_an_adobe_rgb_source_is_converted_to_srgb(rgb: np.ndarray) -> None:
    adobe = _adobe_rgb()
    flat = np.zeros((64, 64, 3), np.uint8)
    flat[...] = (40, 180, 60)  # a saturated green, as Adobe RGB numbers
    srgb = bytes(imagecodecs.cms_profile("srgb"))
    expected = imagecodecs.cms_transform(flat[:1, :1], adobe, srgb, intent=imagecodecs.CMS.INTENT.RELATIVE_COLORIMETRIC)
    assert tuple(expected[0, 0]) == (0, 181, 42)  # what a colour-managed viewer shows
    files = {
        "jpeg": _pil(flat, "JPEG", quality=100, subsampling=0, icc_profile=adobe),
        "png": _pil(flat, "PNG", icc_profile=adobe),
        "tiff": _pil(flat, "TIFF", icc_profile=adobe),
        "tiff-lzw": tifffile_bytes(flat, "lzw", photometric="rgb", iccprofile=adobe),
    }
    for name, data in files.items():
        info = probe(data, max_pixels=MAX)
        assert info.profile and not info.plain, name  # DALI would ignore the profile: CPU path
        got = np.asarray(decode_rgb(data))[32, 32].astype(int)
        assert np.abs(got - expected[0, 0]).max() <= 2, (name, got)
        assert np.abs(got - (40, 180, 60)).max() > 10  # not the raw numbers
    # an sRGB profile changes nothing and keeps the source plain
    tagged = _pil(rgb, "JPEG", quality=92, icc_profile=srgb)
    assert probe(tagged, max_pixels=MAX).plain
    assert np.array_equal(np.asarray(decode_rgb(tagged)), np.asarray(decode_rgb(_pil(rgb, "JPEG", quality=92))))


def test_cmyk_jpegs_decode_like_pillow(rgb: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, format="JPEG", quality=95)
    data = buf.getvalue()
    pillow = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    assert np.abs(np.asarray(decode_rgb(data)).astype(int) - pillow).max() <= 1


def test_exif_text_ends_at_its_nul_and_prints(rgb: np.ndarray, camera_photos: list[Path]) -> None:
    """A newcomer's walkthrough (2026-12-06): BytheWater.jpg's EXIF Make is "Nokia\\x002" (EXIF ends an ASCII
    value with a NUL; what follows is not the value), and the row said "Nokia\\x002 N9", which `show` printed raw
    to the terminal. A hostile header's controls and length are not kept either."""
    real = next(p for p in camera_photos if p.name == "BytheWater.jpg")
    assert probe(real.read_bytes(), max_pixels=MAX).camera_model == "Nokia N9"
    exif = Image.Exif()
    exif[0x010F] = "Evil\x1b[31m Corp\r\n"  # Make: an escape sequence and a line break
    exif[0x0110] = "X" * 500  # Model
    exif[0x0132] = "2024:01:02 03:04:05\x00junk"  # DateTime
    got = probe(_pil(rgb, "JPEG", exif=exif.tobytes()), max_pixels=MAX)
    assert got.camera_model == "Evil [31m Corp " + "X" * 64 and got.capture_time == "2024-01-02T03:04:05"
    assert all(ch.isprintable() for ch in got.camera_model)


def test_a_bare_jpeg_decodes_into_a_reused_buffer_to_the_same_pixels(rgb: np.ndarray, odd_images: dict[str, bytes],
                                                                     bad_images: dict[str, tuple[bytes, str]]) -> None:
    """The reader's fast decode (libjpeg-turbo straight into a reused RGBX buffer that Pillow wraps) gives
    exactly what decode_rgb and the same resize give, for every JPEG: the bare ones it takes and the ones it
    hands to decode_rgb (orientation, CMYK, an ICC profile); damaged bytes fail with decode_rgb's code."""
    import pyjpegli

    from preprocess.pipeline.codecs import optimize_jpeg
    from preprocess.pipeline.formats.jpeg import bare_size
    from preprocess.pipeline.stored_pixels import decode_rgb_into
    from preprocess.torchdata.dataset import fit_pil
    from tests.conftest import _huge_header

    h, w = rgb.shape[:2]
    jpegli = bytes(pyjpegli.encode(rgb.tobytes(), w, h, 60))
    bare = {"jpegli": jpegli, "mozjpeg": optimize_jpeg(jpegli), "libjpeg 4:2:0": _pil(rgb, "JPEG", quality=80),
            "libjpeg 4:4:4 progressive": _pil(rgb, "JPEG", quality=90, subsampling=0, progressive=True),
            "gray": odd_images["gray.jpg"]}
    srgb = bytes(imagecodecs.cms_profile("srgb"))
    other = {"rotated": odd_images["rotated6.jpg"], "cmyk": odd_images["cmyk.jpg"],
             "icc": _pil(rgb, "JPEG", quality=90, icc_profile=srgb)}
    assert all(bare_size(d) is not None for d in bare.values()) and bare_size(jpegli) == (w, h)
    assert all(bare_size(d) is None for d in other.values())
    # what decode_rgb refuses or libjpeg never decodes is not bare either: TEM before the frame, no SOI, a
    # side over libjpeg-turbo's 65500
    assert bare_size(jpegli[:2] + b"\xff\x01" + jpegli[2:]) is None and bare_size(jpegli[2:]) is None
    assert bare_size(_huge_header(jpegli, 65535, 10)) is None
    assert bare_size(_huge_header(jpegli, 65500, 10)) == (65500, 10)
    uses: list[Callable[[Image.Image], Image.Image]] = [
        lambda im: im, lambda im: fit_pil(im, (64, 48), "crop"), lambda im: fit_pil(im, (50, 70), "stretch")]
    for name, data in {**bare, **other}.items():
        for use in uses:
            got = decode_rgb_into(data, use)
            assert got.mode == "RGB" and np.array_equal(np.asarray(got), np.asarray(use(decode_rgb(data)))), name
    # what it returns is its own: the next decode into the same buffer does not change it
    first = decode_rgb_into(bare["jpegli"], uses[0])
    decode_rgb_into(bare["libjpeg 4:2:0"], uses[0])
    assert np.array_equal(np.asarray(first), np.asarray(decode_rgb(bare["jpegli"])))
    for name in ("bitflip.jpg", "truncated.jpg"):
        data, code = bad_images[name]
        with pytest.raises(InputError) as caught:
            decode_rgb_into(data, uses[1])
        assert caught.value.code == code, name

"""Hostile input, round 3 (a helper's audit, 2026-12-07, session 7): colour profiles that do not fit the pixels
or build no transform, PPM samples above their maxval, a JPEG XL codestream cut short. Each was either a
crash that lost the whole job or pixels silently wrong under status ok."""

from __future__ import annotations

import io
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from PIL import Image

from preprocess.core.errors import InputError
from preprocess.pipeline.images import decode_rgb, probe
from tests.jobs import run_pillow

MAX = 120_000_000
GREY_LCMS_DEFAULT = bytes(imagecodecs.cms_profile("gray"))  # LittleCMS reads it, but builds no transform from it
GREY = bytes(imagecodecs.cms_profile("gray", whitepoint=[0.3127, 0.329, 1.0], gamma=2.2))


def _saved(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _cmyk_labelled_srgb() -> bytes:
    """An sRGB profile whose header says CMYK: LittleCMS reads it, and cannot transform CMYK pixels with it."""
    p = bytearray(imagecodecs.cms_profile("srgb"))
    p[16:20] = b"CMYK"
    return bytes(p)


def test_a_grey_profile_on_a_colour_image_is_ignored_not_applied(rgb: np.ndarray) -> None:
    """A colour photo tagged with a grey ICC profile was converted to grey and stored as ok (the gate compared
    the grey decode with itself). Browsers ignore a profile of another colour space than the pixels', and so
    does the decode: the colours stay, and the row names no profile."""
    img = Image.fromarray(rgb)
    for name, data in {"jpeg": _saved(img, "JPEG", quality=95, icc_profile=GREY),
                       "png": _saved(img, "PNG", icc_profile=GREY)}.items():
        untagged = decode_rgb(_saved(img, "JPEG", quality=95) if name == "jpeg" else _saved(img, "PNG"))
        got = np.asarray(decode_rgb(data))
        assert np.array_equal(got, np.asarray(untagged)), name
        assert int(np.abs(got[..., 0].astype(int) - got[..., 2]).max()) > 50, name  # still in colour
        assert probe(data, max_pixels=MAX).profile == "", name
    # on grey pixels the grey profile still applies (its gamma 2.2 against sRGB's curve moves mid-greys)
    grey = _saved(img.convert("L"), "PNG", icc_profile=GREY)
    assert probe(grey, max_pixels=MAX).profile
    assert not np.array_equal(np.asarray(decode_rgb(grey)), np.asarray(decode_rgb(_saved(img.convert("L"), "PNG"))))


@pytest.mark.parametrize("case", ["grey-jpeg", "grey-png", "cmyk-jpeg"])
def test_a_profile_that_builds_no_transform_is_ignored(rgb: np.ndarray, case: str) -> None:
    """A profile LittleCMS reads but cannot build a transform from left the pixels in their own mode (L, CMYK):
    `run` then failed with an IndexError in the model's view (exit 70, nothing committed), `watch` recorded
    E_ENGINE. It is ignored, as a profile LittleCMS cannot read already was: the pixels as if untagged."""
    img = Image.fromarray(rgb)
    mode, fmt, icc = {"grey-jpeg": ("L", "JPEG", GREY_LCMS_DEFAULT), "grey-png": ("L", "PNG", GREY_LCMS_DEFAULT),
                      "cmyk-jpeg": ("CMYK", "JPEG", _cmyk_labelled_srgb())}[case]
    kw: dict[str, object] = {"quality": 95} if fmt == "JPEG" else {}
    tagged, plain = _saved(img.convert(mode), fmt, icc_profile=icc, **kw), _saved(img.convert(mode), fmt, **kw)
    got = decode_rgb(tagged)
    assert got.mode == "RGB"
    assert np.array_equal(np.asarray(got), np.asarray(decode_rgb(plain)))


def test_a_job_with_such_a_file_commits_every_image(rgb: np.ndarray, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    img = Image.fromarray(rgb)
    (tmp_path / "src" / "grey.jpg").write_bytes(_saved(img.convert("L"), "JPEG", quality=95,
                                                       icc_profile=GREY_LCMS_DEFAULT))
    (tmp_path / "src" / "cmyk.jpg").write_bytes(_saved(img.convert("CMYK"), "JPEG", quality=95,
                                                       icc_profile=_cmyk_labelled_srgb()))
    (tmp_path / "src" / "plain.png").write_bytes(_saved(img, "PNG"))
    spec = tmp_path / "fixed.toml"
    spec.write_text('[quality]\nmode = "fixed"\nvalue = 80\n')
    summary = run_pillow([tmp_path / "src"], tmp_path / "s.icechunk", spec)
    assert (summary.stored, summary.failed) == (3, 0), summary


def test_ppm_samples_above_maxval_are_corrupt_not_clipped_to_white(rgb: np.ndarray) -> None:
    """A binary PPM whose samples exceed its maxval was decoded with them clipped to white (62% of the pixels)
    and stored; README says samples are scaled, never clipped. Pillow's plain-text decoder refuses them."""
    over = b"P6\n64 48\n100\n" + rgb.tobytes()
    with pytest.raises(InputError, match="exceeds the header's maxval of 100") as caught:
        decode_rgb(over, path="over.ppm")
    assert caught.value.code == "E_CORRUPT" and caught.value.path == "over.ppm"
    wide = (rgb.astype(np.uint16) * 8).astype(">u2")  # up to 2040, maxval 1000
    with pytest.raises(InputError, match="maxval of 1000"):
        decode_rgb(b"P6\n64 48\n1000\n" + wide.tobytes())
    # within maxval: scaled to the full range, as before
    third = decode_rgb(b"P6\n64 48\n100\n" + (rgb // 3).tobytes())
    assert np.abs(np.asarray(third).astype(int) - (rgb // 3).astype(int) * 255 / 100).max() <= 1
    inside = (rgb.astype(np.uint16) * 3).astype(">u2")
    assert np.abs(np.asarray(decode_rgb(b"P6\n64 48\n1000\n" + inside.tobytes())).astype(int)
                  - rgb.astype(int) * 3 * 255 / 1000).max() <= 1


def test_a_jpeg_xl_codestream_cut_short_is_truncated(rgb: np.ndarray) -> None:
    """A bare JPEG XL codestream (no boxes whose sizes tell it is short) cut after 200 bytes was E_CORRUPT;
    libjxl says it needs more input: E_TRUNCATED."""
    cut = bytes(imagecodecs.jpegxl_encode(rgb))[:200]
    with pytest.raises(InputError) as caught:
        decode_rgb(cut)
    assert caught.value.code == "E_TRUNCATED", caught.value


def _jp2(arr: np.ndarray, space: int | None = None, *, opacity: int | None = None) -> bytes:
    """A JP2 of ``arr``, its colour specification's enumerated space set to ``space``, and a cdef box marking
    component ``opacity`` as opacity (imagecodecs writes neither)."""
    data = bytearray(imagecodecs.jpeg2k_encode(arr, level=0, codecformat="jp2"))
    colr = data.find(b"colr")
    if space is not None:
        data[colr + 7:colr + 11] = space.to_bytes(4, "big")
    if opacity is not None:
        n = arr.shape[2]
        body = n.to_bytes(2, "big") + b"".join(
            i.to_bytes(2, "big") + (1 if i == opacity else 0).to_bytes(2, "big")
            + (0 if i == opacity else i + 1).to_bytes(2, "big") for i in range(n))
        cdef = (8 + len(body)).to_bytes(4, "big") + b"cdef" + body
        jp2h = data.find(b"jp2h") - 4
        end = jp2h + int.from_bytes(data[jp2h:jp2h + 4], "big")
        data[end:end] = cdef
        data[jp2h:jp2h + 4] = (end - jp2h + len(cdef)).to_bytes(4, "big")
    return bytes(data)


def test_jpeg_2000_colour_spaces_and_components_are_read_as_the_file_says() -> None:
    """A JP2 in CMYK or CIELab was stored as ok as if it were RGB (CMYK red came out white: K taken as alpha;
    Lab red as teal), and a fourth (or second) component without a cdef box was taken as alpha, so a red image
    was stored white (a hostile-input audit, session 8). Other spaces are E_UNSUPPORTED; without a cdef box no
    component is opacity; with one, the opacity it names is composited on white as before."""
    cmyk = np.zeros((32, 32, 4), np.uint8)
    cmyk[..., 1:3] = 255
    lab = np.full((32, 32, 3), (135, 208, 195), np.uint8)
    for data, name in ((_jp2(cmyk, 12), "CMYK"), (_jp2(lab, 14), "CIELab"), (_jp2(lab, 24), "e-sYCC")):
        with pytest.raises(InputError) as e:
            probe(data, max_pixels=MAX)
        assert e.value.code == "E_UNSUPPORTED" and name in e.value.message
    red = np.zeros((32, 32, 4), np.uint8)
    red[..., 0] = 255  # the fourth component 0: as alpha, all transparent (white on white)
    assert decode_rgb(_jp2(red)).getpixel((16, 16)) == (255, 0, 0)
    grey = np.zeros((32, 32, 2), np.uint8)
    grey[..., 0] = 128
    assert decode_rgb(_jp2(grey)).getpixel((16, 16)) == (128, 128, 128)
    assert decode_rgb(_jp2(red, opacity=3)).getpixel((16, 16)) == (255, 255, 255)
    assert decode_rgb(_jp2(red[..., :3].copy(), 16)).getpixel((16, 16)) == (255, 0, 0)


def test_a_png_pixel_past_its_palette_is_corrupt_not_black() -> None:
    """A PNG whose pixels index colour 7 of a one-colour palette was stored as ok, black (the PNG standard calls
    it an error; a hostile-input audit, session 8). A palette that covers its pixels decodes as before."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    def png(index: int) -> bytes:
        rows = b"".join(b"\x00" + bytes([index] * 8) for _ in range(8))
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 3, 0, 0, 0))
                + chunk(b"PLTE", bytes([255, 0, 0])) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))

    with pytest.raises(InputError) as e:
        decode_rgb(png(7))
    assert e.value.code == "E_CORRUPT" and "colour 7 of a palette of 1" in e.value.message
    assert decode_rgb(png(0)).getpixel((4, 4)) == (255, 0, 0)


def _png_with(arr: np.ndarray, mode: str, chunks: list[tuple[bytes, bytes]]) -> bytes:
    import struct
    import zlib

    png = _saved(Image.fromarray(arr, mode), "PNG")
    extra = b"".join(struct.pack(">I", len(b)) + k + b + struct.pack(">I", zlib.crc32(k + b)) for k, b in chunks)
    return png[:33] + extra + png[33:]  # after IHDR (8 + 25 bytes), before the image data


def test_a_png_gamma_is_applied_as_browsers_show_it() -> None:
    """A PNG's gAMA chunk was ignored: a linear-light PNG (gAMA 1.0), which a browser shows far brighter, was
    stored as if its numbers were sRGB (a session-8 finding: 16 stored where a browser shows 71). It is
    converted to sRGB (primaries from cHRM when given); sRGB's own 1/2.2, an sRGB or iCCP chunk beside it and
    an invalid value leave the pixels as they are."""
    ramp = np.tile(np.arange(256, dtype=np.uint8), (8, 1))
    lin = np.arange(256) / 255
    srgb = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055) * 255
    linear = (100000).to_bytes(4, "big")
    rgb = np.asarray(decode_rgb(_png_with(np.dstack([ramp] * 3), "RGB", [(b"gAMA", linear)])))[0, :, 0]
    assert np.abs(rgb - srgb).max() <= 1 and rgb[16] == 71
    grey = np.asarray(decode_rgb(_png_with(ramp, "L", [(b"gAMA", linear)])))[0, :, 0]
    assert np.abs(grey - srgb).max() <= 10 and abs(int(grey[16]) - 71) <= 1  # LittleCMS's grey: coarse in the dark
    for chunks in ([(b"gAMA", (45455).to_bytes(4, "big"))], [(b"sRGB", b"\x00"), (b"gAMA", linear)],
                   [(b"gAMA", (0).to_bytes(4, "big"))]):
        same = np.asarray(decode_rgb(_png_with(np.dstack([ramp] * 3), "RGB", chunks)))[0, :, 0]
        assert np.array_equal(same, ramp[0]), chunks
    wide = [(0.3127, 0.329), (0.68, 0.32), (0.265, 0.69), (0.15, 0.06)]  # Display P3's primaries
    chrm = b"".join(round(v * 100000).to_bytes(4, "big") for xy in wide for v in xy)
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    p3 = np.asarray(decode_rgb(_png_with(red, "RGB", [(b"gAMA", linear), (b"cHRM", chrm)])))[0, 0]
    assert p3[0] == 255 and p3[1] < 40 and p3[2] < 40  # P3 red is outside sRGB: clipped to sRGB's red
    bad = np.asarray(decode_rgb(_png_with(red, "RGB", [(b"gAMA", linear), (b"cHRM", bytes(32))])))[0, 0]
    assert tuple(bad) == (255, 0, 0)  # an invalid cHRM is ignored: sRGB primaries

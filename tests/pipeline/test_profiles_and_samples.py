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

"""Reading untrusted source images on the CPU: probe headers, and decode any supported format to
oriented 8-bit sRGB.

Shared by every engine: the header probe (:mod:`preprocess.pipeline.headers` opens the header) runs
before any decode (so a bomb or a non-image never reaches a DALI batch), and :func:`decode_rgb` is the one
CPU decode path (the pillow engine, the DALI engine's CPU fallback, and the stored-bytes reader all use it;
the training reader through :func:`preprocess.pipeline.stored_pixels.decode_rgb_into`, which decodes a bare
JPEG without its copies, to the same pixels).

What decodes what (this pillow-simd has libjpeg-turbo and zlib only):

- JPEG: simplejpeg (libjpeg-turbo), strict: damaged entropy-coded data is ``E_CORRUPT`` /
  ``E_TRUNCATED`` instead of grey blocks stored as ok (:mod:`preprocess.pipeline.formats.jpeg`);
- PNG, BMP, GIF, PPM/PGM and uncompressed TIFF: Pillow;
- compressed TIFF (LZW, Deflate, JPEG, PackBits, ZSTD, ...) and the uncompressed layouts Pillow misreads
  (signed or 32-bit integers, YCbCr: :func:`.formats.tiff.pillow_misreads`), WebP, JPEG 2000 (JP2 and
  J2K), AVIF and JPEG XL: imagecodecs (libtiff, libwebp, OpenJPEG, libavif, libjxl);
- HEIF/HEIC and anything else Pillow recognises: ``E_UNSUPPORTED``, with the list of what is.

Then, in this order: EXIF (or container) orientation, samples scaled to 8 bits
(:mod:`preprocess.pipeline.formats.pixels`: never saturated), alpha composited on white, and an embedded
non-sRGB ICC profile converted to sRGB (:mod:`preprocess.pipeline.formats.colour`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import imagecodecs
import numpy as np
from PIL import Image, ImageFile

from preprocess.core import errors
from preprocess.core.errors import InputError, input_error
from preprocess.pipeline.formats import colour, jpeg, pixels, png, sniff, tiff
from preprocess.pipeline.formats.orientations import EXIF_OPS
from preprocess.pipeline.formats.pixels import to_rgb
from preprocess.pipeline.headers import SWAPS_AXES, Opened, coded_profile, exif_fields, open_source

# Formats DALI's decoder takes straight from the bytes (when 8-bit RGB/L, single-frame, sRGB). Checked
# on DALI 2.4's CPU decoder: it decodes WebP and JPEG 2000; not AVIF or JPEG XL. Not BMP nor TIFF: they
# decode there, but a damaged one comes back as ok with garbage (a truncated BMP striped, its pixel offset
# ignored; a TIFF strip that fails to decode left black), so they take the strict CPU decoder (a
# differential sweep of both engines found ~380 such files; neither format has a GPU decoder in DALI).
_DALI_FORMATS = {"JPEG", "PNG", "WEBP", "JPEG2000"}
_PLAIN_MODES = {"RGB", "L"}
_CODECS: dict[str, Callable[[bytes], np.ndarray]] = {
    sniff.WEBP: lambda d: imagecodecs.webp_decode(d, index=0),
    sniff.AVIF: lambda d: imagecodecs.avif_decode(d, index=0),
    sniff.JXL: lambda d: imagecodecs.jpegxl_decode(d, index=0),
    sniff.JPEG2000: imagecodecs.jpeg2k_decode,
    sniff.TIFF: lambda d: imagecodecs.tiff_decode(d, index=0),
}


@dataclass(frozen=True)
class SourceInfo:
    """What a header says about a source, before any pixel is decoded."""

    format: str
    mode: str
    width: int  # after EXIF orientation
    height: int  # after EXIF orientation
    orientation: int
    frames: int  # 1, or more than 1 (2: a TIFF's pages are never counted, it may have 80,000)
    capture_time: str  # ISO 8601 or ""
    camera_model: str  # "Make Model" or ""
    bits: int = 8  # bits per sample as stored
    profile: str = ""  # an embedded ICC profile other than sRGB (converted to sRGB on decode): its name
    compression: int = 0  # TIFF's compression tag (0 for other formats)
    ambiguous: bool = False  # its header gives its size twice: only the CPU decoder, whose output is checked

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def plain(self) -> bool:
        """True when a generic decoder (DALI/nvImageCodec) handles it without conversion: a format it
        decodes, 8-bit RGB or grey, one frame, and no colour profile to apply (sources with a non-sRGB
        profile take the CPU path, where :func:`decode_rgb` converts them to sRGB)."""
        return (self.format in _DALI_FORMATS and self.mode in _PLAIN_MODES and self.frames == 1
                and self.bits == 8 and not self.profile
                and not self.ambiguous)


def probe(data: bytes, *, max_pixels: int, path: str | None = None) -> SourceInfo:
    """Read the header only; raise :class:`InputError` with a stable code for anything unusable."""
    src = open_source(data, path)
    w, h = src.size
    if w <= 0 or h <= 0:
        raise input_error(errors.CORRUPT, f"invalid dimensions {w}x{h}", path)
    if max(w * h, src.coded_pixels) > max_pixels:
        coded = f" (its coded frame: {src.coded_pixels / 1e6:.1f} MP)" if src.coded_pixels > w * h else ""
        raise input_error(errors.TOO_LARGE,
                          f"{w}x{h}{coded} = {max(w * h, src.coded_pixels) / 1e6:.1f} MP exceeds the limit of "
                          f"{max_pixels / 1e6:.1f} MP (decompression-bomb guard)", path)
    _check_coded(src, path)
    _check_scans(src, data, path)
    coded_profile(src, data, path)
    _, when, camera = exif_fields(src.exif)
    found = colour.describe(src.icc, src.mode)
    return SourceInfo(format=src.format, mode=src.mode, width=w, height=h, orientation=src.orientation,
                      frames=src.frames, capture_time=when, camera_model=camera, bits=src.bits,
                      profile=found[0] if found else "", compression=src.compression,
                      ambiguous=src.ambiguous)


def _check_coded(src: Opened, path: str | None) -> None:
    """An image coded at another size than its container says is ``E_CORRUPT`` before any decode: libavif
    crops or pads the frame to the box, silently (a 64x48 photo whose box says 1x1 was stored as 1x1)."""
    if src.coded is not None and src.coded != src.stored:
        raise input_error(errors.CORRUPT, f"its header says {src.stored[0]}x{src.stored[1]}, its coded image is "
                          f"{src.coded[0]}x{src.coded[1]}", path)


def _check_scans(src: Opened, data: bytes, path: str | None) -> None:
    """A progressive JPEG of more scans than any encoder writes is ``E_TOO_LARGE``, with the pixel limit
    (each scan is a pass over the whole image: a decompression bomb of few bytes)."""
    if src.format == sniff.JPEG and src.pil is not None and src.pil.info.get("progressive") and (
            n := jpeg.scans(data)) > jpeg.MAX_SCANS:
        raise input_error(errors.TOO_LARGE, f"a progressive JPEG of {n} scans (encoders write at most a few "
                          f"dozen; the limit is {jpeg.MAX_SCANS}): each scan is a pass over the whole image, "
                          "a decompression bomb", path)


def header_size(data: bytes, path: str | None = None) -> tuple[int, int]:
    """(width, height) after orientation, from the header alone (its errors are :func:`probe`'s)."""
    return open_source(data, path).size


def decode_rgb(data: bytes, *, draft_to: tuple[int, int] | None = None, path: str | None = None) -> Image.Image:
    """Decode fully to an oriented 8-bit sRGB image (first frame of multi-frame files).

    ``draft_to`` (oriented width, height) lets JPEG decode at a reduced DCT scale that still
    covers the target size: the fast path of the pillow engine.
    """
    src = open_source(data, path)
    _check_coded(src, path)
    coded_profile(src, data, path)
    try:
        img = _decode_pixels(src, data, draft_to, path)
        _check_size(img.size, src, drafted=draft_to is not None)
    except InputError:
        raise
    except Exception as exc:  # every decoder has its own error types
        code = errors.CORRUPT if src.complete else errors.TRUNCATED
        text = str(exc) or type(exc).__name__
        if "can not handle" in text:  # libtiff's "Sorry, can not handle image": a layout, not damage
            code = errors.UNSUPPORTED
        if isinstance(exc, OSError) and any(w in text.lower() for w in ("truncated", "end of file")):
            code = errors.TRUNCATED
        if "NEED_MORE_INPUT" in text:  # libjxl ran out of bytes (a bare codestream has no box sizes to tell)
            code = errors.TRUNCATED
        raise input_error(code, f"cannot decode: {text}", path) from None
    if not src.oriented:
        for op in EXIF_OPS.get(src.orientation, ()):
            img = img.transpose(op)
    return _to_srgb(img, src, data)


def _check_size(got: tuple[int, int], src: Opened, *, drafted: bool) -> None:
    """The decoder made the image its header described (``E_CORRUPT`` otherwise: pixels of another
    size than the size checked against the limit and used for the target are never stored). A JPEG
    decoded at a reduced DCT scale (``drafted``) is the header's size at one of libjpeg's scales."""
    want = src.size if src.oriented else src.stored
    if got == want:
        return
    if drafted and src.decoder == "jpeg" and any(
            got == jpeg.scaled(want, k) for k in range(1, 8)):
        return
    raise input_error(errors.CORRUPT, f"the decoder made {got[0]}x{got[1]} pixels where the header says "
                      f"{want[0]}x{want[1]}; not stored")


def _decode_pixels(src: Opened, data: bytes, draft_to: tuple[int, int] | None, path: str | None) -> Image.Image:
    """The stored pixels (not yet oriented), in whatever mode the decoder gives."""
    if src.decoder == "jpeg":
        target = (0, 0)
        if draft_to is not None:
            target = draft_to[::-1] if src.orientation in SWAPS_AXES else draft_to
        arr = jpeg.decode(data, src.mode, min_size=(int(target[0]), int(target[1])), path=path)
        if src.mode == "CMYK" and src.pil is not None and src.pil.info.get("adobe") is not None:
            arr = 255 - arr  # Adobe CMYK JPEGs store inverted samples (as Pillow assumes)
        return pixels.to_image(arr, cmyk=src.mode == "CMYK")
    img = src.pil
    if src.decoder == "pillow" and img is not None:
        if src.format == sniff.PPM:
            _check_ppm_samples(img, data, path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if src.frames > 1:
                img.seek(0)
            img.load()
        if src.format == sniff.PNG and img.mode == "P":
            _check_palette_indices(img, path)
        if src.min_is_white:
            arr = pixels.white_is_zero(np.asarray(img), src.bits)
            return pixels.to_image(arr, bits=src.bits if src.bits < 8 * arr.dtype.itemsize else None)
        return img
    return _codecs_pixels(src, np.asarray(_CODECS[src.format](data)))


def _check_ppm_samples(img: Image.Image, data: bytes, path: str | None) -> None:
    """A binary PPM/PGM whose samples exceed its maxval is ``E_CORRUPT``: Pillow's decoder clips them to white
    (its plain-text decoder refuses them). Only where Pillow scales, at a maxval other than 255 and 65535."""
    tile = img.tile[0] if isinstance(img, ImageFile.ImageFile) and len(img.tile) == 1 else None
    if tile is None or tile.codec_name != "ppm" or not isinstance(tile.args, tuple):
        return
    maxval = int(tile.args[-1])
    dtype = np.dtype(">u2" if maxval > 255 else np.uint8)
    count = min(img.width * img.height * len(img.getbands()), max(0, len(data) - tile.offset) // dtype.itemsize)
    samples = np.frombuffer(data, dtype=dtype, count=count, offset=tile.offset)
    if samples.size and (top := int(samples.max())) > maxval:
        raise input_error(errors.CORRUPT, f"a sample of {top} exceeds the header's maxval of {maxval} (the "
                          "decoder would clip it to white)", path)


def _check_palette_indices(img: Image.Image, path: str | None) -> None:
    """A PNG pixel whose index lies past its palette is an error by the PNG standard (``E_CORRUPT``): Pillow
    shows it black, stored as ok."""
    colours = len(img.getpalette(rawmode="RGB") or ()) // 3
    if 0 < colours < 256 and (top := int(np.asarray(img).max())) >= colours:
        raise input_error(errors.CORRUPT, f"a pixel uses colour {top} of a palette of {colours} (the decoder would "
                          "show it black)", path)


def _codecs_pixels(src: Opened, arr: np.ndarray) -> Image.Image:
    """imagecodecs' samples (as stored) as a Pillow image: planes interleaved, palette, MinIsWhite and
    TIFF extra samples applied, deep samples scaled."""
    if src.format == sniff.TIFF:
        arr = tiff.interleaved(arr, src.stored, separate=src.separate_planes, extra=src.extra_samples, bits=src.bits)
    elif src.format == sniff.JPEG2000 and src.extra_samples == 0 and arr.ndim == 3 and arr.shape[2] in (2, 4):
        arr = arr[..., :1] if arr.shape[2] == 2 else arr[..., :3]  # a JP2 without cdef: no component is alpha
    if src.palette is not None and arr.ndim == 2:
        out = Image.fromarray(pixels.to_8bit(arr), "L")
        out.putpalette(src.palette[1], rawmode=src.palette[0])
        return out
    if src.min_is_white:
        arr = pixels.white_is_zero(arr, src.bits)
    return pixels.to_image(arr, bits=src.bits if src.bits < 8 * arr.dtype.itemsize else None)


def _to_srgb(img: Image.Image, src: Opened, data: bytes) -> Image.Image:
    """RGB in sRGB: the embedded profile applied where it is for these pixels' colour space and builds a
    transform; ignored otherwise (:mod:`.formats.colour`), the pixels then taken as sRGB."""
    found = colour.describe(src.icc, img.mode)
    space = found[1] if found else ""
    if space in ("CMYK", "L") and img.mode == space:
        rgb = colour.to_srgb(img, src.icc) or to_rgb(img)
    else:
        rgb = to_rgb(img, bits=src.bits if src.bits > 8 else None)
        if space == "L":  # deep grey, or grey with alpha (now on white): the grey profile still applies
            rgb = colour.to_srgb(rgb.convert("L"), src.icc) or rgb
        elif space == "RGB":
            rgb = colour.to_srgb(rgb, src.icc) or rgb
    if src.format == sniff.PNG and img.mode in ("1", "L", "I", "I;16", "RGB") and "transparency" in img.info:
        rgb = png.keyed_out(img, rgb, src.bits, data)  # transparent on white, whatever the profile
    return rgb


jpeg_suspect = jpeg.suspect  # the DALI engine keeps damaged JPEGs from its decoder with these two
jpeg_intact = jpeg.entropy_intact

__all__ = ["SourceInfo", "decode_rgb", "header_size", "jpeg_intact", "jpeg_suspect", "probe", "to_rgb"]

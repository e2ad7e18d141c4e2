"""Reading untrusted source images on the CPU: probe headers, and decode any supported format to
oriented 8-bit sRGB.

Shared by every engine: the header probe runs before any decode (so a bomb or a non-image never
reaches a DALI batch), and :func:`decode_rgb` is the one CPU decode path (the pillow engine, the
DALI engine's CPU fallback, and the stored-bytes reader all use it; the training reader through
:func:`preprocess.pipeline.stored_pixels.decode_rgb_into`, which decodes a bare JPEG without its copies, to
the same pixels).

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

import io
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import imagecodecs
import numpy as np
from PIL import (
    BmpImagePlugin,
    ExifTags,
    GifImagePlugin,
    Image,
    ImageFile,
    Jpeg2KImagePlugin,
    JpegImagePlugin,
    PngImagePlugin,
    PpmImagePlugin,
    TiffImagePlugin,
)

from preprocess.core import errors
from preprocess.core.errors import InputError, input_error
from preprocess.pipeline.formats import colour, containers, jpeg, pixels, png, sniff, tiff
from preprocess.pipeline.formats.containers import EXIF_OPS, Header, HeaderError
from preprocess.pipeline.formats.pixels import to_rgb

# We enforce our own pixel limit (spec.limits.max_pixels) as an error; Pillow's own guard only
# warns below 2x its limit, so switch it off and never rely on it.
Image.MAX_IMAGE_PIXELS = None
# Pillow refuses a compressed PNG text or ICC chunk (zTXt, iTXt, iCCP) that inflates past 1 MiB, so a
# valid PNG with a large XMP packet or a LUT printer profile was E_CORRUPT. Each chunk may now inflate
# to 64 MiB and all text to 256 MiB: still bounded (zlib stops there), as much work per input byte.
PngImagePlugin.MAX_TEXT_CHUNK = 64 * 2**20
PngImagePlugin.MAX_TEXT_MEMORY = 256 * 2**20

# Orientations 5..8 swap width and height (EXIF 2.32, tag 0x0112).
_SWAPS_AXES = {5, 6, 7, 8}
# Characters kept of an EXIF text field (a camera's make or model, a time): a header is not trusted.
EXIF_TEXT_MAX = 64
# Formats DALI's decoder takes straight from the bytes (when 8-bit RGB/L, single-frame, sRGB). Checked
# on DALI 2.4's CPU decoder: it decodes WebP and JPEG 2000; not AVIF or JPEG XL. Not BMP nor TIFF: they
# decode there, but a damaged one comes back as ok with garbage (a truncated BMP striped, its pixel offset
# ignored; a TIFF strip that fails to decode left black), so they take the strict CPU decoder (a
# differential sweep of both engines found ~380 such files; neither format has a GPU decoder in DALI).
_DALI_FORMATS = {"JPEG", "PNG", "WEBP", "JPEG2000"}
_PLAIN_MODES = {"RGB", "L"}
# Header parsers Pillow has here (their decoders may be missing: see _decode_pixels).
_PILLOW: dict[str, type[ImageFile.ImageFile]] = {
    sniff.JPEG: JpegImagePlugin.JpegImageFile, sniff.PNG: PngImagePlugin.PngImageFile,
    sniff.TIFF: TiffImagePlugin.TiffImageFile, sniff.BMP: BmpImagePlugin.BmpImageFile,
    sniff.GIF: GifImagePlugin.GifImageFile, sniff.PPM: PpmImagePlugin.PpmImageFile,
    sniff.JPEG2000: Jpeg2KImagePlugin.Jpeg2KImageFile,
}
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


@dataclass
class _Source:
    """A source's header, opened: a Pillow image (pixels not loaded) or a container header."""

    format: str
    mode: str
    stored: tuple[int, int]  # width, height as stored
    orientation: int  # EXIF orientation of the stored pixels
    decoder: str  # "jpeg" (strict libjpeg-turbo), "pillow" or "codecs" (imagecodecs)
    oriented: bool  # the decoder applies the orientation itself (TIFF in Pillow, JPEG XL)
    frames: int
    bits: int
    icc: bytes
    exif: Image.Exif
    pil: ImageFile.ImageFile | None = None
    compression: int = 0
    separate_planes: bool = False  # TIFF PlanarConfiguration 2: imagecodecs gives (samples, height, width)
    min_is_white: bool = False  # TIFF Photometric 0 whose decoder gives the samples as stored (inverted after)
    extra_samples: int = -1  # TIFF ExtraSamples (0 unspecified, 1 premultiplied alpha) imagecodecs leaves to us
    complete: bool = True
    palette: tuple[str, bytes] | None = field(default=None, repr=False)
    coded_pixels: int = 0  # a larger frame than ``stored`` that the decoder makes first (AVIF), or 0
    coded: tuple[int, int] | None = None  # the size the image is coded at, when its container says another
    ambiguous: bool = False  # the header gives its size twice (decoders disagree): the CPU decoder only

    @property
    def size(self) -> tuple[int, int]:
        """Width and height after orientation."""
        w, h = self.stored
        return (h, w) if self.orientation in _SWAPS_AXES else (w, h)


def exif_text(value: object) -> str:
    """An EXIF ASCII field as one line of text: up to its first NUL (EXIF ends an ASCII value with one; a
    camera may write "Nokia\\x002"), unprintable characters as spaces, runs of spaces as one, at most
    :data:`EXIF_TEXT_MAX` characters."""
    raw = value.decode("latin-1") if isinstance(value, bytes) else str(value or "")
    raw = raw.split("\x00", 1)[0]
    return " ".join("".join(ch if ch.isprintable() else " " for ch in raw).split())[:EXIF_TEXT_MAX]


def _exif_fields(exif: Image.Exif) -> tuple[int, str, str]:
    orientation = int(exif.get(ExifTags.Base.Orientation, 1) or 1)
    if orientation not in range(1, 9):
        orientation = 1
    make = exif_text(exif.get(ExifTags.Base.Make))
    model = exif_text(exif.get(ExifTags.Base.Model))
    camera = model if make and model.startswith(make) else " ".join(p for p in (make, model) if p)
    when = ""
    try:
        sub = exif.get_ifd(ExifTags.IFD.Exif)
        raw = sub.get(ExifTags.Base.DateTimeOriginal) or exif.get(ExifTags.Base.DateTime)
        if raw:
            when = datetime.strptime(exif_text(raw), "%Y:%m:%d %H:%M:%S").isoformat()
    except (ValueError, KeyError, TypeError, AttributeError, struct.error):
        when = ""
    return orientation, when, camera


def probe(data: bytes, *, max_pixels: int, path: str | None = None) -> SourceInfo:
    """Read the header only; raise :class:`InputError` with a stable code for anything unusable."""
    src = _open(data, path)
    w, h = src.size
    if w <= 0 or h <= 0:
        raise input_error(errors.CORRUPT, f"invalid dimensions {w}x{h}", path)
    if max(w * h, src.coded_pixels) > max_pixels:
        coded = f" (its coded frame: {src.coded_pixels / 1e6:.1f} MP)" if src.coded_pixels > w * h else ""
        raise input_error(errors.TOO_LARGE,
                          f"{w}x{h}{coded} = {max(w * h, src.coded_pixels) / 1e6:.1f} MP exceeds the limit of "
                          f"{max_pixels / 1e6:.1f} MP (decompression-bomb guard)", path)
    _check_coded(src, path)
    _, when, camera = _exif_fields(src.exif)
    found = colour.describe(src.icc)
    return SourceInfo(format=src.format, mode=src.mode, width=w, height=h, orientation=src.orientation,
                      frames=src.frames, capture_time=when, camera_model=camera, bits=src.bits,
                      profile=found[0] if found else "", compression=src.compression,
                      ambiguous=src.ambiguous)


def _check_coded(src: _Source, path: str | None) -> None:
    """An image coded at another size than its container says is ``E_CORRUPT`` before any decode: libavif
    crops or pads the frame to the box, silently (a 64x48 photo whose box says 1x1 was stored as 1x1)."""
    if src.coded is not None and src.coded != src.stored:
        raise input_error(errors.CORRUPT, f"its header says {src.stored[0]}x{src.stored[1]}, its coded image is "
                          f"{src.coded[0]}x{src.coded[1]}", path)


def header_size(data: bytes, path: str | None = None) -> tuple[int, int]:
    """(width, height) after orientation, from the header alone (its errors are :func:`probe`'s)."""
    return _open(data, path).size


def _open(data: bytes, path: str | None) -> _Source:
    """Identify ``data`` by its signature and read its header (no pixel is decoded)."""
    if not data:
        raise input_error(errors.EMPTY_FILE, "empty file (0 bytes)", path)
    fmt = sniff.sniff(data)
    if fmt is None:
        raise _unknown(data, path)
    if fmt == sniff.HEIF:
        raise input_error(errors.UNSUPPORTED, "HEIF/HEIC image: no HEVC decoder is available here", path)
    try:
        if fmt in _PILLOW:
            return _open_pillow(fmt, data)
        return _from_header(containers.parse(fmt, data))
    except HeaderError as exc:
        code = errors.TRUNCATED if exc.truncated else errors.CORRUPT
        raise input_error(code, f"unreadable {fmt} header: {exc}", path) from None
    except InputError as exc:
        raise input_error(exc.code, exc.message, path) from None
    except Exception as exc:  # a header parser's own error on hostile bytes is a verdict, not a crash of the run
        raise input_error(errors.CORRUPT, f"unreadable {fmt} header ({type(exc).__name__}: {exc})", path) from None


def _unknown(data: bytes, path: str | None) -> InputError:
    cut = sniff.cut_signature(data)
    if cut is not None:
        return input_error(errors.TRUNCATED, f"the file ends inside its {cut} signature ({len(data)} bytes)", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            other = Image.open(io.BytesIO(data)).format  # identify only: never loaded
    except Exception:
        other = None
    if other:
        return input_error(errors.UNSUPPORTED, f"{other} images are not supported", path)
    return input_error(errors.NOT_AN_IMAGE, "not a recognised image format", path)


def _from_header(h: Header) -> _Source:
    exif = Image.Exif()
    if h.exif:
        try:
            exif.load(h.exif if h.exif.startswith(b"Exif") else b"Exif\x00\x00" + h.exif)
        except Exception:  # a damaged EXIF block must not fail a readable image
            exif = Image.Exif()
    return _Source(format=h.format, mode=h.mode, stored=(h.width, h.height), orientation=h.orientation,
                   compression=h.compression,
                   decoder="codecs", oriented=h.format == sniff.JXL, frames=h.frames, bits=h.bits, icc=h.icc, exif=exif,
                   complete=h.complete, coded_pixels=h.coded_pixels, coded=h.coded, min_is_white=h.min_is_white,
                   separate_planes=h.separate_planes, extra_samples=h.extra_samples)


def _open_pillow(fmt: str, data: bytes) -> _Source:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _pillow_source(fmt, _PILLOW[fmt](io.BytesIO(data)), data)
    except (InputError, HeaderError):
        raise
    except Exception as exc:  # Pillow raises many types for broken headers
        if fmt == sniff.TIFF and "unknown pixel mode" in str(exc):
            return _from_header(tiff.header(data))  # float, 32-bit or signed RGB: no Pillow mode; libtiff
        raise containers.header_error(fmt, data, exc) from None


def _pillow_source(fmt: str, img: ImageFile.ImageFile, data: bytes) -> _Source:
    if fmt == sniff.PNG:  # else getexif() decodes the pixels, and its errors were lost with a damaged EXIF's
        img.info.setdefault("exif", png.exif(data))
    try:
        exif = img.getexif()
    except Exception:  # a damaged EXIF block must not fail a readable image
        exif = Image.Exif()
    decoder = {sniff.JPEG: "jpeg", sniff.JPEG2000: "codecs"}.get(fmt, "pillow")
    src = _Source(format=fmt, mode=img.mode, stored=img.size, orientation=_exif_fields(exif)[0], decoder=decoder,
                  oriented=False, frames=_frames(img), bits=8, icc=img.info.get("icc_profile") or b"", exif=exif,
                  pil=img)
    if isinstance(img, TiffImagePlugin.TiffImageFile):
        _tiff_details(src, img, data)
    elif fmt == sniff.PNG:
        _png_details(src, img, data)
    elif fmt == sniff.PPM and img.mode == "I":
        src.bits = 16  # maxval > 255: Pillow scales the samples to 16 bits
    elif fmt == sniff.JPEG2000:
        h = containers.parse(fmt, data)
        src.bits, src.icc, src.complete, src.orientation = h.bits, h.icc, h.complete, 1
        src.coded_pixels = h.width * h.height  # the codestream's size (SIZ) counts for the limit, not only the box's
    return src


def _png_details(src: _Source, img: ImageFile.ImageFile, data: bytes) -> None:
    """Check a PNG's chunks (Pillow checks only some CRCs, and decodes short image data), and note its bit
    depth, a colour key and a cICP colour encoding (Pillow reads neither)."""
    if bad := png.crc_error(data):
        raise input_error(errors.CORRUPT, f"PNG chunk {bad} fails its CRC check")
    if wrong := png.data_mismatch(data):
        raise input_error(errors.CORRUPT, f"PNG: {wrong}")
    src.bits = data[24]  # IHDR's bit depth (its CRC is checked)
    if "transparency" in img.info and img.mode in ("1", "L", "RGB"):  # a colour key: transparent pixels
        src.mode = "RGBA" if img.mode == "RGB" else "LA"  # (so never "plain": DALI's decoder drops the key)
    if (code_points := png.cicp(data)) is not None:
        src.icc = colour.from_encoding(*code_points, fmt="PNG")


def _frames(img: ImageFile.ImageFile) -> int:
    """1, or 2 when there is more than one frame: never counted (``n_frames`` walks every IFD of a TIFF,
    40 s for 80,000 one-pixel pages), only the first one is used. A broken later frame counts as none."""
    try:
        return 2 if getattr(img, "is_animated", False) else 1
    except Exception:
        img.seek(0)  # back to the first frame's state (raises if even that is broken)
        return 1


def _tiff_details(src: _Source, img: TiffImagePlugin.TiffImageFile, data: bytes) -> None:
    """Pillow reports a TIFF's size already oriented (and orients when it decodes): keep the stored size
    for libtiff, which does not; note the bit depth, palette and whether every strip is in the data."""
    tags = img.tag_v2
    src.stored = getattr(img, "_tile_size", img.size)
    # a compression Pillow lacks here, or samples its raw decoder misreads: libtiff (imagecodecs) decodes them
    libtiff = (bool(img.tile) and img.tile[0].codec_name == "libtiff") or tiff.pillow_misreads(tags)
    src.decoder, src.oriented = ("codecs", False) if libtiff else ("pillow", True)
    src.compression = tiff.int_tag(tags, 259, 1)
    rawmode = str(img.tile[0].args[0]) if img.tile and isinstance(img.tile[0].args, tuple) else ""
    src.separate_planes, src.min_is_white = tiff.layout(tags, rawmode, libtiff=libtiff)
    src.extra_samples = tiff.extra_sample(tags) if libtiff else -1
    if (photometric := tags.get(262)) in (8, 9, 10):
        raise input_error(errors.UNSUPPORTED, f"TIFF in CIELab (Photometric {photometric}): no sRGB conversion here")
    src.bits = tiff.int_tag(tags, 258, 8)
    src.complete = tiff.complete(tags, len(data))
    if (wrong := tiff.jpeg_strips_misfit(tags, data) if libtiff else tiff.strips_oversized(tags)):
        raise input_error(errors.CORRUPT, f"TIFF: {wrong}")
    src.coded_pixels, src.ambiguous = tiff.claims(data)
    if img.mode == "P" and img.palette is not None:
        rawmode, table = img.palette.getdata()
        src.palette = rawmode, bytes(table)


def decode_rgb(data: bytes, *, draft_to: tuple[int, int] | None = None, path: str | None = None) -> Image.Image:
    """Decode fully to an oriented 8-bit sRGB image (first frame of multi-frame files).

    ``draft_to`` (oriented width, height) lets JPEG decode at a reduced DCT scale that still
    covers the target size: the fast path of the pillow engine.
    """
    src = _open(data, path)
    _check_coded(src, path)
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
        raise input_error(code, f"cannot decode: {text}", path) from None
    if not src.oriented:
        for op in EXIF_OPS.get(src.orientation, ()):
            img = img.transpose(op)
    return _to_srgb(img, src, data)


def _check_size(got: tuple[int, int], src: _Source, *, drafted: bool) -> None:
    """The decoder made the image its header described (``E_CORRUPT`` otherwise: pixels of another
    size than the size checked against the limit and used for the target are never stored). A JPEG
    decoded at a reduced DCT scale (``drafted``) is the header's size at one of libjpeg's scales."""
    want = src.size if src.oriented else src.stored
    if got == want:
        return
    if drafted and src.decoder == "jpeg" and any(
            got == (-(-want[0] * k // 8), -(-want[1] * k // 8)) for k in range(1, 8)):
        return
    raise input_error(errors.CORRUPT, f"the decoder made {got[0]}x{got[1]} pixels where the header says "
                      f"{want[0]}x{want[1]}; not stored")


def _decode_pixels(src: _Source, data: bytes, draft_to: tuple[int, int] | None, path: str | None) -> Image.Image:
    """The stored pixels (not yet oriented), in whatever mode the decoder gives."""
    if src.decoder == "jpeg":
        target = (0, 0)
        if draft_to is not None:
            target = draft_to[::-1] if src.orientation in _SWAPS_AXES else draft_to
        arr = jpeg.decode(data, src.mode, min_size=(int(target[0]), int(target[1])), path=path)
        if src.mode == "CMYK" and src.pil is not None and src.pil.info.get("adobe") is not None:
            arr = 255 - arr  # Adobe CMYK JPEGs store inverted samples (as Pillow assumes)
        return pixels.to_image(arr, cmyk=src.mode == "CMYK")
    img = src.pil
    if src.decoder == "pillow" and img is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if src.frames > 1:
                img.seek(0)
            img.load()
        if src.min_is_white:
            arr = pixels.white_is_zero(np.asarray(img), src.bits)
            return pixels.to_image(arr, bits=src.bits if src.bits < 8 * arr.dtype.itemsize else None)
        return img
    return _codecs_pixels(src, np.asarray(_CODECS[src.format](data)))


def _codecs_pixels(src: _Source, arr: np.ndarray) -> Image.Image:
    """imagecodecs' samples (as stored) as a Pillow image: planes interleaved, palette, MinIsWhite and
    TIFF extra samples applied, deep samples scaled."""
    if src.format == sniff.TIFF:
        arr = tiff.interleaved(arr, src.stored, separate=src.separate_planes, extra=src.extra_samples, bits=src.bits)
    if src.palette is not None and arr.ndim == 2:
        out = Image.fromarray(pixels.to_8bit(arr), "L")
        out.putpalette(src.palette[1], rawmode=src.palette[0])
        return out
    if src.min_is_white:
        arr = pixels.white_is_zero(arr, src.bits)
    return pixels.to_image(arr, bits=src.bits if src.bits < 8 * arr.dtype.itemsize else None)


def _to_srgb(img: Image.Image, src: _Source, data: bytes) -> Image.Image:
    found = colour.describe(src.icc)
    space = found[1] if found else ""
    if space in ("CMYK", "L") and img.mode == space:
        rgb = colour.to_srgb(img, src.icc)
    else:
        rgb = to_rgb(img, bits=src.bits if src.bits > 8 else None)
        if space == "L":  # deep grey, or grey with alpha (now on white): the grey profile still applies
            rgb = colour.to_srgb(rgb.convert("L"), src.icc)
        elif space == "RGB":
            rgb = colour.to_srgb(rgb, src.icc)
    if src.format == sniff.PNG and img.mode in ("1", "L", "I", "I;16", "RGB") and "transparency" in img.info:
        rgb = png.keyed_out(img, rgb, src.bits, data)  # transparent on white, whatever the profile
    return rgb


jpeg_suspect = jpeg.suspect  # the DALI engine keeps damaged JPEGs from its decoder with these two
jpeg_intact = jpeg.entropy_intact

__all__ = ["SourceInfo", "decode_rgb", "header_size", "jpeg_intact", "jpeg_suspect", "probe", "to_rgb"]

"""A source's header, opened: what :func:`preprocess.pipeline.images.probe` reads and
:func:`~preprocess.pipeline.images.decode_rgb` starts from, before any pixel is decoded.

Every format is identified by its signature (:mod:`.formats.sniff`); JPEG, PNG, TIFF, BMP, GIF, PPM and
JPEG 2000 headers are read by Pillow's parsers (their pixels are never loaded here), checked against the
bytes where Pillow trusts them (:mod:`.formats.png`, :mod:`.formats.tiff`), and WebP, AVIF and JPEG XL by
:mod:`.formats.containers`. Anything a parser raises on hostile bytes is an :class:`InputError`.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass, field
from datetime import datetime

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
from preprocess.pipeline.formats import bounds, colour, containers, jpeg, orientations, png, sniff, tiff
from preprocess.pipeline.formats.containers import Header, HeaderError

# We enforce our own pixel limit (spec.limits.max_pixels) as an error; Pillow's own guard only
# warns below 2x its limit, so switch it off and never rely on it.
Image.MAX_IMAGE_PIXELS = None
# Pillow refuses a compressed PNG text or ICC chunk (zTXt, iTXt, iCCP) that inflates past 1 MiB, so a
# valid PNG with a large XMP packet or a LUT printer profile was E_CORRUPT. Each chunk may now inflate
# to 64 MiB and all text to 256 MiB: still bounded (zlib stops there), as much work per input byte.
PngImagePlugin.MAX_TEXT_CHUNK = 64 * 2**20
PngImagePlugin.MAX_TEXT_MEMORY = 256 * 2**20

# Orientations 5..8 swap width and height (EXIF 2.32, tag 0x0112).
SWAPS_AXES = {5, 6, 7, 8}
# Characters kept of an EXIF text field (a camera's make or model, a time): a header is not trusted.
EXIF_TEXT_MAX = 64
# Header parsers Pillow has here (their decoders may be missing: see images._decode_pixels).
_PILLOW: dict[str, type[ImageFile.ImageFile]] = {
    sniff.JPEG: JpegImagePlugin.JpegImageFile, sniff.PNG: PngImagePlugin.PngImageFile,
    sniff.TIFF: TiffImagePlugin.TiffImageFile, sniff.BMP: BmpImagePlugin.BmpImageFile,
    sniff.GIF: GifImagePlugin.GifImageFile, sniff.PPM: PpmImagePlugin.PpmImageFile,
    sniff.JPEG2000: Jpeg2KImagePlugin.Jpeg2KImageFile,
}


@dataclass
class Opened:
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
    icc_coded: bool = False  # JPEG XL: pixels in an ICC profile inside its codestream, not yet read (coded_profile)
    jpeg_inside: bool = False  # JPEG XL: the JPEG it was transcoded from can be rebuilt (a jbrd box)

    @property
    def size(self) -> tuple[int, int]:
        """Width and height after orientation."""
        w, h = self.stored
        return (h, w) if self.orientation in SWAPS_AXES else (w, h)


def exif_text(value: object) -> str:
    """An EXIF ASCII field as one line of text: up to its first NUL (EXIF ends an ASCII value with one; a
    camera may write "Nokia\\x002"), unprintable characters as spaces, runs of spaces as one, at most
    :data:`EXIF_TEXT_MAX` characters."""
    raw = value.decode("latin-1") if isinstance(value, bytes) else str(value or "")
    raw = raw.split("\x00", 1)[0]
    return " ".join("".join(ch if ch.isprintable() else " " for ch in raw).split())[:EXIF_TEXT_MAX]


def exif_fields(exif: Image.Exif) -> tuple[int, str, str]:
    orientation = orientations.value(exif.get(ExifTags.Base.Orientation, 1))
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


def open_source(data: bytes, path: str | None) -> Opened:
    """Identify ``data`` by its signature and read its header (no pixel is decoded)."""
    if not data:
        raise input_error(errors.EMPTY_FILE, "empty file (0 bytes)", path)
    fmt = sniff.sniff(data)
    if fmt is None:
        raise _unknown(data, path)
    if fmt == sniff.HEIF:
        raise input_error(errors.UNSUPPORTED, "HEIF/HEIC image: no HEVC decoder is available here", path)
    try:
        bounds.check(fmt, data)  # before any parser walks a million pieces
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


def _from_header(h: Header) -> Opened:
    exif = Image.Exif()
    if h.exif:
        try:
            exif.load(h.exif if h.exif.startswith(b"Exif") else b"Exif\x00\x00" + h.exif)
        except Exception:  # a damaged EXIF block must not fail a readable image
            exif = Image.Exif()
    return Opened(format=h.format, mode=h.mode, stored=(h.width, h.height), orientation=h.orientation,
                   compression=h.compression,
                   decoder="codecs", oriented=h.format == sniff.JXL, frames=h.frames, bits=h.bits, icc=h.icc, exif=exif,
                   complete=h.complete, coded_pixels=h.coded_pixels, coded=h.coded, min_is_white=h.min_is_white,
                   separate_planes=h.separate_planes, extra_samples=h.extra_samples, icc_coded=h.icc_coded,
                   jpeg_inside=h.jpeg_inside)


def coded_profile(src: Opened, data: bytes, path: str | None) -> None:
    """Fill in the ICC profile of a JPEG XL whose pixels are in one coded inside its codestream (libjxl gives
    the pixels in that profile, and imagecodecs does not give the profile out: they were taken as sRGB, a
    Display P3 photo 11.6 levels off). A JPEG transcoded to JPEG XL (a jbrd box, what cjxl makes of a JPEG by
    default) has it in the JPEG it rebuilds losslessly; any other is ``E_UNSUPPORTED``. Call it after the
    size limit: rebuilding allocates the image's coefficients."""
    if not src.icc_coded:
        return
    if not src.jpeg_inside:
        raise input_error(errors.UNSUPPORTED, "JPEG XL whose pixels are in an ICC profile coded inside its "
                          "codestream: the JPEG XL decoder here does not give the profile out, so its colours "
                          "cannot be converted to sRGB (convert it to PNG or JPEG with its profile)", path)
    import imagecodecs

    try:
        rebuilt = bytes(imagecodecs.jpegxl_decode_jpeg(data, numthreads=1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            icc = JpegImagePlugin.JpegImageFile(io.BytesIO(rebuilt)).info.get("icc_profile") or b""
    except Exception as exc:  # libjxl's and Pillow's own errors on hostile bytes
        raise input_error(errors.CORRUPT, "JPEG XL: the JPEG it was transcoded from (for its colour profile) "
                          f"cannot be rebuilt ({type(exc).__name__}: {exc})", path) from None
    src.icc, src.icc_coded = icc, False


def _open_pillow(fmt: str, data: bytes) -> Opened:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _pillow_source(fmt, _PILLOW[fmt](io.BytesIO(data)), data)
    except (InputError, HeaderError):
        raise
    except Exception as exc:  # Pillow raises many types for broken headers
        if fmt == sniff.TIFF and "unknown pixel mode" in str(exc):
            return _from_header(tiff.header(data))  # float, 32-bit or signed RGB: no Pillow mode; libtiff
        if fmt == sniff.JPEG and (layout := jpeg.unsupported(data)):
            raise input_error(errors.UNSUPPORTED, f"a valid JPEG this build cannot decode: {layout}") from None
        raise containers.header_error(fmt, data, exc) from None


def _pillow_source(fmt: str, img: ImageFile.ImageFile, data: bytes) -> Opened:
    if fmt == sniff.PNG:  # else getexif() decodes the pixels, and its errors were lost with a damaged EXIF's
        img.info.setdefault("exif", png.exif(data))
    try:
        exif = img.getexif()
    except Exception:  # a damaged EXIF block must not fail a readable image
        exif = Image.Exif()
    decoder = {sniff.JPEG: "jpeg", sniff.JPEG2000: "codecs"}.get(fmt, "pillow")
    src = Opened(format=fmt, mode=img.mode, stored=img.size, orientation=exif_fields(exif)[0], decoder=decoder,
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
        src.extra_samples = h.extra_samples  # a JP2 without an opacity in cdef: the decode drops the extra component
        src.coded_pixels = h.width * h.height  # the codestream's size (SIZ) counts for the limit, not only the box's
    return src


def _png_details(src: Opened, img: ImageFile.ImageFile, data: bytes) -> None:
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
    elif not src.icc and (told := png.gamma(data)) is not None:  # gAMA (+ cHRM), as browsers show it
        g, chrm = told
        white, rgb = (chrm[0], (chrm[1], chrm[2], chrm[3])) if chrm else (colour.D65, colour.SRGB_PRIMARIES)
        src.icc = colour.profile(None if colour.space_of(img.mode) == "L" else rgb, white, 1 / g)


def _frames(img: ImageFile.ImageFile) -> int:
    """1, or 2 when there is more than one frame: never counted (``n_frames`` walks every IFD of a TIFF,
    40 s for 80,000 one-pixel pages), only the first one is used. A broken later frame counts as none."""
    try:
        return 2 if getattr(img, "is_animated", False) else 1
    except Exception:
        img.seek(0)  # back to the first frame's state (raises if even that is broken)
        return 1


def _tiff_details(src: Opened, img: TiffImagePlugin.TiffImageFile, data: bytes) -> None:
    """Pillow reports a TIFF's size already oriented (and orients when it decodes): keep the stored size
    for libtiff, which does not; note the bit depth, palette and whether every strip is in the data."""
    tags = img.tag_v2
    if why := tiff.reduced_copy(tags, more=src.frames > 1):
        raise input_error(errors.UNSUPPORTED, f"TIFF: {why}")
    src.stored = getattr(img, "_tile_size", img.size)
    # a compression Pillow lacks here, or samples its raw decoder misreads: libtiff (imagecodecs) decodes them
    libtiff = (bool(img.tile) and img.tile[0].codec_name == "libtiff") or tiff.pillow_misreads(tags)
    src.decoder, src.oriented = ("codecs", False) if libtiff else ("pillow", True)
    src.compression = tiff.int_tag(tags, 259, 1)
    rawmode = str(img.tile[0].args[0]) if img.tile and isinstance(img.tile[0].args, tuple) else ""
    src.separate_planes, src.min_is_white = tiff.layout(tags, rawmode, libtiff=libtiff)
    src.extra_samples = tiff.int_tag(tags, 338, -1) if libtiff else -1
    if (photometric := tiff.int_tag(tags, 262, -1)) in (8, 9, 10):
        raise input_error(errors.UNSUPPORTED, f"TIFF in CIELab (Photometric {photometric}): no sRGB conversion here")
    src.bits = tiff.int_tag(tags, 258, 8)
    src.complete = tiff.complete(tags, len(data))
    if (wrong := tiff.jpeg_strips_misfit(tags, data) if libtiff else tiff.strips_oversized(tags)):
        raise input_error(errors.CORRUPT, f"TIFF: {wrong}")
    src.coded_pixels, src.ambiguous = tiff.claims(data)
    if img.mode == "P" and img.palette is not None:
        rawmode, table = img.palette.getdata()
        src.palette = rawmode, bytes(table)

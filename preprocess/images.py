"""Reading untrusted source images on the CPU: probe headers, and convert any mode to RGB.

Shared by every engine: the header probe runs before any decode (so a bomb or a non-image
never reaches a DALI batch), and the Pillow conversion handles the modes DALI does not
(CMYK, 16-bit, palette, alpha, multi-frame).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from preprocess import errors
from preprocess.errors import InputError, input_error

# We enforce our own pixel limit (spec.limits.max_pixels) as an error; Pillow's own guard only
# warns below 2x its limit, so switch it off and never rely on it.
Image.MAX_IMAGE_PIXELS = None

# Orientations 5..8 swap width and height (EXIF 2.32, tag 0x0112).
_SWAPS_AXES = {5, 6, 7, 8}
# Formats DALI's decoder takes straight from the bytes (when 8-bit RGB/L and single-frame).
_DALI_FORMATS = {"JPEG", "PNG", "TIFF", "BMP", "WEBP", "JPEG2000"}
_PLAIN_MODES = {"RGB", "L"}


@dataclass(frozen=True)
class SourceInfo:
    """What a header says about a source, before any pixel is decoded."""

    format: str
    mode: str
    width: int  # after EXIF orientation
    height: int  # after EXIF orientation
    orientation: int
    frames: int
    capture_time: str  # ISO 8601 or ""
    camera_model: str  # "Make Model" or ""

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def plain(self) -> bool:
        """True when a generic decoder (DALI/nvImageCodec) handles it without conversion."""
        return self.format in _DALI_FORMATS and self.mode in _PLAIN_MODES and self.frames == 1


def _exif_fields(img: Image.Image) -> tuple[int, str, str]:
    try:
        exif = img.getexif()
    except Exception:  # a damaged EXIF block must not fail a readable image
        return 1, "", ""
    orientation = int(exif.get(ExifTags.Base.Orientation, 1) or 1)
    if orientation not in range(1, 9):
        orientation = 1
    make = str(exif.get(ExifTags.Base.Make, "") or "").strip("\x00 ")
    model = str(exif.get(ExifTags.Base.Model, "") or "").strip("\x00 ")
    camera = model if make and model.startswith(make) else " ".join(p for p in (make, model) if p)
    when = ""
    try:
        sub = exif.get_ifd(ExifTags.IFD.Exif)
        raw = sub.get(ExifTags.Base.DateTimeOriginal) or exif.get(ExifTags.Base.DateTime)
        if raw:
            when = datetime.strptime(str(raw).strip("\x00 "), "%Y:%m:%d %H:%M:%S").isoformat()
    except (ValueError, KeyError, TypeError, AttributeError):
        when = ""
    return orientation, when, camera


def probe(data: bytes, *, max_pixels: int, path: str | None = None) -> SourceInfo:
    """Read the header only; raise :class:`InputError` with a stable code for anything unusable."""
    if not data:
        raise input_error(errors.EMPTY_FILE, "empty file (0 bytes)", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise input_error(errors.NOT_AN_IMAGE, "not a recognised image format", path) from None
    except Exception as exc:  # Pillow raises many types for broken headers
        raise input_error(errors.CORRUPT, f"unreadable image header: {exc}", path) from None
    with img:
        w, h = img.size
        if w <= 0 or h <= 0:
            raise input_error(errors.CORRUPT, f"invalid dimensions {w}x{h}", path)
        if w * h > max_pixels:
            raise input_error(errors.TOO_LARGE,
                              f"{w}x{h} = {w * h / 1e6:.1f} MP exceeds the limit of "
                              f"{max_pixels / 1e6:.1f} MP (decompression-bomb guard)", path)
        orientation, when, camera = _exif_fields(img)
        if orientation in _SWAPS_AXES:
            w, h = h, w
        return SourceInfo(format=str(img.format or "?"), mode=img.mode, width=w, height=h,
                          orientation=orientation, frames=int(getattr(img, "n_frames", 1) or 1),
                          capture_time=when, camera_model=camera)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB correctly (scale 16-bit, composite alpha on white)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float32)
        # mode "I" holds 16-bit PNGs as 32-bit ints: scale by 16-bit full range unless all <= 255
        peak = 65535.0 if mode != "I" or float(arr.max(initial=0)) > 255 else 255.0
        eight = (arr * (255.0 / peak) + 0.5).clip(0, 255).astype(np.uint8)
        return Image.fromarray(eight, "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        top = float(arr.max(initial=0.0)) or 1.0
        scale = 255.0 if top <= 1.0 else 255.0 / top
        return Image.fromarray((arr * scale).clip(0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if mode == "CMYK":
        # Adobe-style CMYK JPEGs are stored inverted; Pillow's decoder already accounts for it.
        return img.convert("RGB")
    return img.convert("RGB")


def decode_rgb(data: bytes, *, draft_to: tuple[int, int] | None = None, path: str | None = None) -> Image.Image:
    """Decode fully to an oriented 8-bit RGB image (first frame of multi-frame files).

    ``draft_to`` (oriented width, height) lets JPEG decode at a reduced DCT scale that still
    covers the target size: the fast path of the pillow engine.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            if draft_to is not None and img.format == "JPEG" and img.mode in ("RGB", "L", "YCbCr"):
                tw, th = draft_to
                orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
                if orientation in _SWAPS_AXES:
                    tw, th = th, tw
                img.draft("RGB", (tw, th))
            img.load()
            ImageOps.exif_transpose(img, in_place=True)  # in place: no copy when already upright
            return to_rgb(img)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise input_error(errors.NOT_AN_IMAGE, "not a recognised image format", path) from None
    except OSError as exc:
        text = str(exc)
        code = errors.TRUNCATED if "truncated" in text.lower() or "end of file" in text.lower() else errors.CORRUPT
        raise input_error(code, f"cannot decode: {text}", path) from None
    except (ValueError, SyntaxError, EOFError, IndexError, KeyError, Image.DecompressionBombError) as exc:
        raise input_error(errors.CORRUPT, f"cannot decode: {exc}", path) from None

"""What the browser gets for a stored image: its bytes as they are when a browser shows that format,
else a PNG of its pixels; thumbnails (JPEG) for grids.

Every decode of stored bytes goes through :func:`preprocess.pipeline.images.decode_rgb`, so a format the
store learns (AVIF, WebP, JPEG XL, JPEG 2000, ...) is shown here with no change.
"""

from __future__ import annotations

import io

from PIL import Image

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError
from preprocess.pipeline.formats import sniff
from preprocess.pipeline.images import decode_rgb as decode

THUMB_BOX = 256  # a thumbnail's long side, px (grid cards are ~180 px wide; sharp on 1.5x screens)
THUMB_QUALITY = 85
MAX_PIXELS = 200_000_000  # a stored image larger than this is not decoded here

# What Chromium, Firefox and Safari all display as an <img>: served as stored (by the sniffed format).
BROWSER_TYPES = {sniff.JPEG: "image/jpeg", sniff.PNG: "image/png", sniff.GIF: "image/gif", sniff.WEBP: "image/webp",
                 sniff.AVIF: "image/avif", sniff.BMP: "image/bmp"}


def check_pixels(width: int, height: int) -> None:
    """ConfigError SERVE_TOO_LARGE for an image too large to decode here (a damaged or hostile row)."""
    if width * height > MAX_PIXELS:
        raise ConfigError(f"the stored image is {width}x{height}: too large to show here",
                          code=ErrorCode.SERVE_TOO_LARGE,
                          hint="export it (`preprocess export`) and open it with an image viewer")


def for_browser(data: bytes) -> tuple[bytes, str]:
    """(bytes, media type) a browser can show: the stored bytes when their format is one browsers
    display, else a PNG of the decoded pixels (JPEG XL, JPEG 2000, TIFF, HEIF, ...)."""
    media = BROWSER_TYPES.get(sniff.sniff(data) or "")
    if media is not None:
        return data, media
    return png(decode(data)), "image/png"


def thumbnail(data: bytes, box: int = THUMB_BOX) -> bytes:
    """A JPEG thumbnail (long side ``box`` px, never enlarged) of stored bytes of any format."""
    img = decode(data)
    img.thumbnail((box, box), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return jpeg(img, THUMB_QUALITY)


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()

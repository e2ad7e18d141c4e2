"""What the browser gets for a stored image: its bytes as they are when a browser shows that format,
else a PNG of its pixels; thumbnails (JPEG) for grids.

Every decode of stored bytes goes through :func:`preprocess.store.reader.decode`, so a format the
store learns (AVIF, WebP, JPEG XL, JPEG 2000, ...) is shown here with no change.
"""

from __future__ import annotations

import io

from PIL import Image

from preprocess.errors import ConfigError
from preprocess.store.reader import decode

THUMB_BOX = 256  # a thumbnail's long side, px (grid cards are ~180 px wide; sharp on 1.5x screens)
THUMB_QUALITY = 85
MAX_PIXELS = 200_000_000  # a stored image larger than this is not decoded here

# What Chromium, Firefox and Safari all display as an <img>: served as stored.
BROWSER_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp",
                 "avif": "image/avif", "bmp": "image/bmp"}


# Leading signatures, in the order they are tried (ISO-BMFF "ftyp" boxes are told apart by brand).
_SIGNATURES: tuple[tuple[tuple[bytes, ...], str], ...] = (
    ((b"\xff\xd8\xff",), "jpeg"), ((b"\x89PNG\r\n\x1a\n",), "png"), ((b"GIF87a", b"GIF89a"), "gif"),
    ((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n"), "jxl"),
    ((b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51"), "jp2"),
    ((b"II*\x00", b"MM\x00*"), "tiff"), ((b"BM",), "bmp"),
)


def sniff(data: bytes) -> str:
    """The image format of ``data`` from its first bytes: jpeg, png, gif, webp, avif, heif, jxl,
    jp2, tiff, bmp, or "unknown"."""
    head = data[:32]
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        brands = {head[i:i + 4] for i in range(8, min(len(head), 32) - 3, 4)}
        return "avif" if brands & {b"avif", b"avis"} else "heif"
    return next((name for prefixes, name in _SIGNATURES if head.startswith(prefixes)), "unknown")


def check_pixels(width: int, height: int) -> None:
    """ConfigError SERVE_TOO_LARGE for an image too large to decode here (a damaged or hostile row)."""
    if width * height > MAX_PIXELS:
        raise ConfigError(f"the stored image is {width}x{height}: too large to show here", code="SERVE_TOO_LARGE",
                          hint="export it (`preprocess export`) and open it with an image viewer")


def for_browser(data: bytes) -> tuple[bytes, str]:
    """(bytes, media type) a browser can show: the stored bytes when their format is one browsers
    display, else a PNG of the decoded pixels (JPEG XL, JPEG 2000, TIFF, HEIF, ...)."""
    media = BROWSER_TYPES.get(sniff(data))
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

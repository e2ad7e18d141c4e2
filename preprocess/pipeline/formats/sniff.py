"""What format a file is, from its first bytes (never from its name).

Knowing the format before parsing lets a damaged header be reported as damaged (``E_CORRUPT`` /
``E_TRUNCATED``) instead of "not an image", and keeps each parser to the format it was written for.
"""

from __future__ import annotations

JPEG, PNG, TIFF, WEBP, JPEG2000, AVIF, JXL, BMP, GIF, PPM, HEIF = (
    "JPEG", "PNG", "TIFF", "WEBP", "JPEG2000", "AVIF", "JXL", "BMP", "GIF", "PPM", "HEIF")

_PREFIXES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", JPEG),
    (b"\x89PNG\r\n\x1a\n", PNG),
    (b"II*\x00", TIFF), (b"MM\x00*", TIFF), (b"II+\x00", TIFF), (b"MM\x00+", TIFF),  # classic and BigTIFF
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", JPEG2000),  # JP2 container
    (b"\xff\x4f\xff\x51", JPEG2000),  # J2K codestream: SOC then SIZ
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", JXL),  # JPEG XL container
    (b"\xff\x0a", JXL),  # JPEG XL codestream
    (b"GIF87a", GIF), (b"GIF89a", GIF),
    (b"BM", BMP),
)
_AVIF_BRANDS = {b"avif", b"avis"}
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}


def sniff(data: bytes) -> str | None:
    """The format of ``data`` by its signature, or None when no known signature matches."""
    for prefix, fmt in _PREFIXES:
        if data.startswith(prefix):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return WEBP
    if data[4:8] == b"ftyp":
        return _isobmff_brand(data)
    if len(data) >= 3 and data[:1] == b"P" and data[1:2] in b"123456" and data[2:3].isspace():
        return PPM
    return None


def _isobmff_brand(data: bytes) -> str | None:
    size = int.from_bytes(data[:4], "big")
    brands = {data[8:12]} | {data[i:i + 4] for i in range(16, min(size, len(data), 64) - 3, 4)}
    if brands & _AVIF_BRANDS:
        return AVIF
    if brands & _HEIF_BRANDS:
        return HEIF
    return None


def cut_signature(data: bytes) -> str | None:
    """The format whose signature ``data`` is the start of (a file cut inside its first bytes)."""
    if len(data) < 2:
        return None
    for prefix, fmt in _PREFIXES:
        if len(data) < len(prefix) and prefix.startswith(data):
            return fmt
    return WEBP if len(data) < 12 and b"RIFF".startswith(data[:4]) else None

"""Stored formats and the encoders that make them, on the CPU.

The one place that knows what a spec's ``[encode]`` names (a format, its encoders, chroma
subsampling, effort), what a row records about how its bytes were made (``format``, ``encoder``,
``chroma``), and how a candidate's bytes decode back to pixels for the gate. Engines call
:func:`encode` for everything they do not encode themselves (the pillow engine encodes libjpeg
candidates with Pillow; the DALI engine JPEG on the GPU with nvImageCodec), so every engine offers
every format.

Formats (all lossy, 8-bit RGB):

- ``jpeg``: ``libjpeg`` (libjpeg-turbo through Pillow on the CPU, nvJPEG on the GPU; the IJG
  quality scale, optimized Huffman tables) and ``jpegli`` (Google's jpegli through pyjpegli: a
  different quantisation and adaptive quantisation, plain JPEG output that any decoder reads).
- ``webp``: libwebp (lossy, always 4:2:0), ``avif``: libavif with the AOM encoder, ``jxl``: libjxl;
  all through imagecodecs, single-threaded per call (the engines run one call per lane).

Every encoder takes a quality in 1..100 on its own scale; the gate measures each candidate, so the
scales never have to agree.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

Format = Literal["jpeg", "webp", "avif", "jxl"]
Chroma = Literal["444", "422", "420"]


@dataclass(frozen=True)
class Option:
    """A format's effort knob, named as its library names it."""

    name: str  # the [encode] field: speed (avif), method (webp), effort (jxl)
    default: int


@dataclass(frozen=True)
class FormatInfo:
    name: Format
    suffix: str  # file suffix for exports, with the dot
    mime: str
    encoders: tuple[str, ...]  # what a spec may name; the first is the default
    chroma: tuple[Chroma, ...]  # what a spec may name; the first is the default; () when the format has none
    option: Option | None


FORMATS: dict[str, FormatInfo] = {
    "jpeg": FormatInfo("jpeg", ".jpg", "image/jpeg", ("jpegli", "libjpeg"), ("420", "422", "444"), None),
    "webp": FormatInfo("webp", ".webp", "image/webp", ("libwebp",), ("420",), Option("method", 4)),
    "avif": FormatInfo("avif", ".avif", "image/avif", ("libavif",), ("420", "444"), Option("speed", 6)),
    "jxl": FormatInfo("jxl", ".jxl", "image/jxl", ("libjxl",), (), Option("effort", 7)),
}
OPTIONS = ("speed", "method", "effort")
# Encoders that encode one chroma subsampling only, whatever the spec lists.
_FIXED_CHROMA = {"jpegli": "420", "libwebp": "420"}

# File suffixes of the formats a row's bytes can be in: the stored formats', and the sources' own (kept
# as they are for source/passthrough rows).
_SOURCE_SUFFIXES = {"jpg": ".jpg", "png": ".png", "tiff": ".tif", "bmp": ".bmp", "gif": ".gif", "jpeg2000": ".jp2",
                    "ppm": ".ppm"}


def file_suffix(fmt: str) -> str:
    """The file suffix (with its dot) for bytes in format ``fmt`` (a row's ``format``); ``.bin`` if unknown."""
    fmt = fmt.lower()
    info = FORMATS.get(fmt)
    return info.suffix if info is not None else _SOURCE_SUFFIXES.get(fmt, ".bin")


# What a row records as its encoder (the library that made the bytes), per spec encoder name.
LIBRARIES = {"libjpeg": "libjpeg-turbo", "jpegli": "jpegli", "libwebp": "libwebp", "libavif": "libavif-aom",
             "libjxl": "libjxl"}


class Encode(Protocol):
    """What this module reads of a spec's ``[encode]`` (:class:`preprocess.spec.Encode`)."""

    @property
    def format(self) -> str: ...
    @property
    def encoders(self) -> Sequence[str]: ...
    @property
    def chroma_subsampling(self) -> Sequence[str]: ...
    @property
    def model_fields_set(self) -> set[str]: ...


def check_encode(info: FormatInfo, encode: Encode) -> None:
    """Raise ValueError (a spec error naming the field) for what ``info``'s format cannot do."""
    _check_encoders(info, encode)
    _check_chroma(info, encode)
    for option in OPTIONS:
        if option in encode.model_fields_set and getattr(encode, option) is not None and (
                info.option is None or info.option.name != option):
            raise ValueError(f"encode.{option}: does not apply to format {info.name!r}"
                             + (f" (its knob is encode.{info.option.name})" if info.option else ""))


def _check_encoders(info: FormatInfo, encode: Encode) -> None:
    if not encode.encoders:
        raise ValueError("encode.encoders: name at least one encoder")
    for name in encode.encoders:
        if name not in info.encoders:
            raise ValueError(f"encode.encoders: {name!r} is not an encoder of format {info.name!r} "
                             f"(it has: {', '.join(info.encoders)})")
    if len(set(encode.encoders)) != len(encode.encoders):
        raise ValueError("encode.encoders: an encoder is listed twice")


def _check_chroma(info: FormatInfo, encode: Encode) -> None:
    for chroma in encode.chroma_subsampling:
        if chroma not in info.chroma:
            have = ", ".join(info.chroma) if info.chroma else "none: leave it out"
            raise ValueError(f"encode.chroma_subsampling: {chroma!r} is not a subsampling of format "
                             f"{info.name!r} (it has: {have})")
    if info.chroma and not encode.chroma_subsampling:
        raise ValueError("encode.chroma_subsampling: name at least one subsampling")
    for name in encode.encoders:
        fixed = _FIXED_CHROMA.get(name)
        if fixed is not None and fixed not in encode.chroma_subsampling:
            others = [e for e in info.encoders if e not in _FIXED_CHROMA]
            raise ValueError(f"encode.chroma_subsampling: {name} encodes {fixed} only, which is not listed"
                             + (f" (for {', '.join(encode.chroma_subsampling)} use encoders = {others})" if others
                                else ""))


@dataclass(frozen=True)
class Variant:
    """One way of encoding: a format, an encoder of it and its chroma subsampling ("" for none)."""

    format: Format
    encoder: str
    chroma: str = ""

    @property
    def label(self) -> str:
        chroma = f" {self.chroma[0]}:{self.chroma[1]}:{self.chroma[2]}" if self.chroma else ""
        return f"{self.encoder}{chroma}"


@dataclass(frozen=True)
class Candidate:
    """What the gate asks an engine to make: a variant at a quality."""

    variant: Variant
    quality: int


@dataclass(frozen=True, eq=False)
class Encoded:
    """A candidate's bytes. ``library`` names the library that made them when it is not the engine's
    usual one for the variant (:meth:`~preprocess.engines.base.Engine.library`), e.g. libjpeg-turbo on
    the CPU for an image nvJPEG failed on; "" otherwise."""

    data: bytes
    candidate: Candidate
    library: str = ""

    @property
    def format(self) -> str:
        return self.candidate.variant.format


def optimize_jpeg(data: bytes) -> bytes:
    """A JPEG's scans and Huffman tables losslessly optimized (mozjpeg's jpegtran: progressive, same
    coefficients, so the same pixels; typically 5-40% smaller than an encoder's own output)."""
    import mozjpeg_lossless_optimization

    return bytes(mozjpeg_lossless_optimization.optimize(data))


def finish(encoded: Encoded, *, progressive: bool) -> bytes:
    """The bytes stored for a measured candidate, on the CPU: JPEG optimized losslessly when the spec
    asks for progressive JPEG; other formats (and baseline JPEG) as they were encoded."""
    if encoded.format == "jpeg" and progressive:
        return optimize_jpeg(encoded.data)
    return encoded.data


def _as_array(pixels: Any) -> np.ndarray:
    """HWC uint8 RGB, C-contiguous (a PIL image or an array)."""
    return np.ascontiguousarray(np.asarray(pixels, dtype=np.uint8))


_SUBSAMPLING = {"444": 0, "422": 1, "420": 2}


def encode_pillow_jpeg(image: Any, quality: int, chroma: str, *, progressive: bool = False) -> bytes:
    """libjpeg-turbo through Pillow: optimized Huffman tables always (the same coefficients and
    pixels as without, a smaller file)."""
    from PIL import Image

    img = image if isinstance(image, Image.Image) else Image.fromarray(_as_array(image), "RGB")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality), subsampling=_SUBSAMPLING[chroma], optimize=True,
             progressive=progressive)
    return buf.getvalue()


def encode(pixels: Any, candidate: Candidate, *, level: int | None = None) -> bytes:
    """``pixels`` (HWC uint8 RGB, or a PIL RGB image) encoded as ``candidate`` on the CPU; ``level`` is
    the format's effort option (avif speed, webp method, jxl effort), else its default."""
    import imagecodecs

    v, q = candidate.variant, int(candidate.quality)
    if v.encoder == "libjpeg":
        return encode_pillow_jpeg(pixels, q, v.chroma or "420")
    arr = _as_array(pixels)
    if v.encoder == "jpegli":
        import pyjpegli

        return bytes(pyjpegli.encode(arr.tobytes(), arr.shape[1], arr.shape[0], q))
    option = FORMATS[v.format].option
    if level is None and option is not None:
        level = option.default
    if v.encoder == "libwebp":
        return bytes(imagecodecs.webp_encode(arr, level=q, lossless=False, method=level, numthreads=1))
    if v.encoder == "libavif":
        formats = imagecodecs.AVIF.PIXEL_FORMAT
        pixelformat = formats.YUV444 if v.chroma == "444" else formats.YUV420
        return bytes(imagecodecs.avif_encode(arr, level=q, speed=level, pixelformat=pixelformat, numthreads=1))
    if v.encoder == "libjxl":
        return bytes(imagecodecs.jpegxl_encode(arr, level=q, effort=level, numthreads=1))
    raise ValueError(f"unknown encoder {v.encoder!r}")


def decode(data: bytes, fmt: str) -> np.ndarray:
    """One of our own encoded candidates -> HWC uint8 RGB (no orientation, no colour management:
    candidates carry neither). JPEG through Pillow (pillow-simd's libjpeg-turbo, as the sources)."""
    if fmt == "jpeg":
        from PIL import Image

        img = Image.open(io.BytesIO(data))
        img.load()
        return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
    import imagecodecs

    if fmt == "webp":
        arr = np.asarray(imagecodecs.webp_decode(data, hasalpha=False))
    elif fmt == "avif":
        arr = np.asarray(imagecodecs.avif_decode(data, numthreads=1))
    elif fmt == "jxl":
        arr = np.asarray(imagecodecs.jpegxl_decode(data, numthreads=1))
    else:
        raise ValueError(f"unknown stored format {fmt!r}")
    return arr[..., :3] if arr.ndim == 3 else np.repeat(arr[..., None], 3, axis=2)


def sniff(data: bytes) -> str | None:
    """The stored format of ``data`` from its magic bytes (None when it is none of ours)."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:12] in (b"ftypavif", b"ftypavis"):
        return "avif"
    if data[:2] == b"\xff\x0a" or data[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n":
        return "jxl"
    return None


def variants(encode: Encode) -> list[Variant]:
    """The (encoder, chroma) variants an ``[encode]`` section allows, the primary first; an encoder with
    one chroma mode (jpegli, libwebp) gives one variant whatever the list says."""
    fmt: Format = FORMATS[encode.format].name
    out: list[Variant] = []
    for encoder in encode.encoders:
        chromas: list[str] = ([_FIXED_CHROMA[encoder]] if encoder in _FIXED_CHROMA
                              else list(encode.chroma_subsampling) or [""])
        out.extend(Variant(fmt, encoder, c) for c in chromas if Variant(fmt, encoder, c) not in out)
    return out

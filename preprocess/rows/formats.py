"""The catalogue of stored formats: what a spec's ``[encode]`` may name (a format, its encoders and their
chroma subsamplings, its effort knob) and what a row records about how its bytes were made (``format``,
``encoder``, ``chroma``), with each format's file suffix and MIME type.

Part of the row contract: the pipeline encodes by it (:mod:`preprocess.pipeline.codecs`), the store names
exported files by it. Pure data; imports nothing of the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Format = Literal["jpeg", "webp", "avif", "jxl"]
Chroma = Literal["444", "422", "420"]


@dataclass(frozen=True)
class Option:
    """A format's effort knob, named as its library names it."""

    name: str  # the [encode] field: speed (avif), method (webp), effort (jxl)
    default: int


@dataclass(frozen=True)
class EncoderInfo:
    """An encoder a spec may name: the library that makes its bytes and the chroma subsamplings it offers."""

    name: str  # what a spec names (encode.encoders)
    library: str  # what a row records as its encoder
    chroma: tuple[Chroma, ...]  # () when the format has no chroma subsampling
    gpu: str = ""  # the library it runs as on the GPU (libjpeg: nvjpeg), "" when it has no GPU form


@dataclass(frozen=True)
class FormatInfo:
    name: Format
    suffix: str  # file suffix for exports, with the dot
    mime: str
    encoders: tuple[EncoderInfo, ...]  # the first is the default
    option: Option | None

    @property
    def chroma(self) -> tuple[Chroma, ...]:
        """Every subsampling an encoder of the format offers; the first is the default."""
        return tuple(dict.fromkeys(c for e in self.encoders for c in e.chroma))

    def encoder(self, name: str) -> EncoderInfo | None:
        return next((e for e in self.encoders if e.name == name), None)


_ALL: tuple[Chroma, ...] = ("420", "422", "444")
FORMATS: dict[str, FormatInfo] = {
    "jpeg": FormatInfo("jpeg", ".jpg", "image/jpeg", (EncoderInfo("jpegli", "jpegli", ("420",)),
                                                      EncoderInfo("libjpeg", "libjpeg-turbo", _ALL, gpu="nvjpeg")),
                       None),
    "webp": FormatInfo("webp", ".webp", "image/webp", (EncoderInfo("libwebp", "libwebp", ("420",)),),
                       Option("method", 4)),
    "avif": FormatInfo("avif", ".avif", "image/avif", (EncoderInfo("libavif", "libavif-aom", ("420", "444")),),
                       Option("speed", 6)),
    "jxl": FormatInfo("jxl", ".jxl", "image/jxl", (EncoderInfo("libjxl", "libjxl", ()),), Option("effort", 7)),
}
OPTIONS = ("speed", "method", "effort")
# What a row records as its encoder (the library that made the bytes), per spec encoder name.
LIBRARIES = {e.name: e.library for f in FORMATS.values() for e in f.encoders}
# ... and back: the spec encoder name of every library a row may record.
ENCODER_OF = {lib: e.name for f in FORMATS.values() for e in f.encoders for lib in (e.library, e.gpu) if lib}

# File suffixes of the formats a row's bytes can be in: the stored formats', and the sources' own (kept
# as they are for source/passthrough rows).
_SOURCE_SUFFIXES = {"jpg": ".jpg", "png": ".png", "tiff": ".tif", "bmp": ".bmp", "gif": ".gif", "jpeg2000": ".jp2",
                    "ppm": ".ppm"}


def file_suffix(fmt: str) -> str:
    """The file suffix (with its dot) for bytes in format ``fmt`` (a row's ``format``); ``.bin`` if unknown."""
    fmt = fmt.lower()
    info = FORMATS.get(fmt)
    return info.suffix if info is not None else _SOURCE_SUFFIXES.get(fmt, ".bin")

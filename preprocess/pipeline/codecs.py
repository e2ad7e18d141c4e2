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
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import NDArray

from preprocess.pipeline.formats.sniff import sniff as sniff_format
from preprocess.rows.formats import ENCODER_OF, FORMATS, OPTIONS, Format, FormatInfo

if TYPE_CHECKING:
    from PIL import Image

type Picture = NDArray[np.uint8] | Image.Image  # HWC uint8 RGB on the host, or a PIL RGB image


class Encode(Protocol):
    """What this module reads of a spec's ``[encode]`` (:class:`preprocess.pipeline.spec.Encode`)."""

    @property
    def format(self) -> str: ...
    @property
    def encoders(self) -> Sequence[str]: ...
    @property
    def chroma_subsampling(self) -> Sequence[str]: ...
    @property
    def progressive(self) -> bool: ...
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
    if info.name == "jpeg" and not encode.progressive and "jpegli" in encode.encoders:
        raise ValueError("encode.progressive: baseline JPEG (false) is stored as encoded, and jpegli does not "
                         'optimize its Huffman tables (20-40% larger): use encoders = ["libjpeg"] for baseline JPEG')


def _check_encoders(info: FormatInfo, encode: Encode) -> None:
    if not encode.encoders:
        raise ValueError("encode.encoders: name at least one encoder")
    for name in encode.encoders:
        if info.encoder(name) is None:
            raise ValueError(f"encode.encoders: {name!r} is not an encoder of format {info.name!r} "
                             f"(it has: {', '.join(e.name for e in info.encoders)})")
    if len(set(encode.encoders)) != len(encode.encoders):
        raise ValueError("encode.encoders: an encoder is listed twice")


def _check_chroma(info: FormatInfo, encode: Encode) -> None:
    listed = list(encode.chroma_subsampling)
    for chroma in listed:
        if chroma not in info.chroma:
            have = ", ".join(info.chroma) if info.chroma else "none: leave it out"
            raise ValueError(f"encode.chroma_subsampling: {chroma!r} is not a subsampling of format "
                             f"{info.name!r} (it has: {have})")
    if len(set(listed)) != len(listed):
        raise ValueError("encode.chroma_subsampling: a subsampling is listed twice")
    if info.chroma and not listed:
        raise ValueError("encode.chroma_subsampling: name at least one subsampling")
    encoders = [e for e in info.encoders if e.name in encode.encoders]
    for e in encoders:
        if e.chroma and not set(e.chroma) & set(listed):
            raise ValueError(f"encode.chroma_subsampling: {e.name} encodes {', '.join(e.chroma)} only, which is not "
                             f"listed" + _other_encoders(info, listed))
    unused = [c for c in listed if not any(c in e.chroma for e in encoders)]
    if unused:
        raise ValueError(f"encode.chroma_subsampling: no listed encoder makes {', '.join(unused)}"
                         + _other_encoders(info, unused))


def _other_encoders(info: FormatInfo, chroma: Sequence[str]) -> str:
    able = [e.name for e in info.encoders if set(chroma) <= set(e.chroma)]
    return f" (for {', '.join(chroma)}: encoders = {able})" if able else ""


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

    def made(self, library: str, chroma: str) -> bool:
        """Whether a stored row whose ``encoder`` and ``chroma`` columns read so came from this variant."""
        return ENCODER_OF.get(library) == self.encoder and chroma == self.chroma


@dataclass(frozen=True)
class Candidate:
    """What the gate asks an engine to make: a variant at a quality."""

    variant: Variant
    quality: int

    @property
    def label(self) -> str:
        """E.g. ``jpegli 4:2:0 q35`` (what rows' ``tried`` and error messages name)."""
        return f"{self.variant.label} q{self.quality}"


@dataclass(frozen=True, eq=False)
class Encoded:
    """A candidate's bytes. ``library`` names the library that made them when it is not the engine's
    usual one for the variant (:meth:`~preprocess.pipeline.engines.base.Engine.library`), e.g. libjpeg-turbo on
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


def _as_array(pixels: Picture) -> NDArray[np.uint8]:
    """HWC uint8 RGB, C-contiguous (a PIL image or an array)."""
    return np.ascontiguousarray(np.asarray(pixels, dtype=np.uint8))


_SUBSAMPLING = {"444": 0, "422": 1, "420": 2}


def encode_pillow_jpeg(image: Picture, quality: int, chroma: str, *, optimize: bool = True) -> bytes:
    """libjpeg-turbo through Pillow, baseline; ``optimize``: optimal Huffman tables (the same
    coefficients and pixels, a smaller file; not needed when :func:`finish` rewrites them anyway)."""
    from PIL import Image

    img = image if isinstance(image, Image.Image) else Image.fromarray(_as_array(image), "RGB")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality), subsampling=_SUBSAMPLING[chroma], optimize=optimize)
    return buf.getvalue()


def encode(pixels: Picture, candidate: Candidate, *, level: int | None = None, optimize: bool = True) -> bytes:
    """``pixels`` (HWC uint8 RGB, or a PIL RGB image) encoded as ``candidate`` on the CPU; ``level`` is
    the format's effort option (avif speed, webp method, jxl effort), else its default; ``optimize``:
    libjpeg's optimal Huffman tables (see :func:`encode_pillow_jpeg`)."""
    import imagecodecs

    v, q = candidate.variant, int(candidate.quality)
    if v.encoder == "libjpeg":
        return encode_pillow_jpeg(pixels, q, v.chroma or "420", optimize=optimize)
    arr = _as_array(pixels)
    if v.encoder == "jpegli":
        import pyjpegli

        return bytes(pyjpegli.encode(arr, arr.shape[1], arr.shape[0], q))
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


def decode_image(data: bytes, fmt: str) -> Image.Image:
    """One of our own encoded candidates -> an RGB PIL image (no orientation, no colour management:
    candidates carry neither). JPEG through Pillow (pillow-simd's libjpeg-turbo, as the sources; no
    conversion copy when already RGB), the others through :func:`decode`."""
    from PIL import Image

    if fmt != "jpeg":
        return Image.fromarray(decode(data, fmt), "RGB")
    img = Image.open(io.BytesIO(data))
    img.load()
    return img if img.mode == "RGB" else img.convert("RGB")


def decode(data: bytes, fmt: str) -> NDArray[np.uint8]:
    """One of our own encoded candidates -> HWC uint8 RGB (see :func:`decode_image`)."""
    if fmt == "jpeg":
        return np.asarray(decode_image(data, fmt))
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
    fmt = (sniff_format(data) or "").lower()
    return fmt if fmt in FORMATS else None


def variants(encode: Encode) -> list[Variant]:
    """The (encoder, chroma) variants an ``[encode]`` section allows, the primary first: each encoder with
    each listed subsampling it offers."""
    info = FORMATS[encode.format]
    out: list[Variant] = []
    for name in encode.encoders:
        offered = info.encoder(name)
        chromas: list[str] = [c for c in encode.chroma_subsampling if offered and c in offered.chroma] or [""]
        out.extend(Variant(info.name, name, c) for c in chromas)
    return out

"""Header parsers for the formats Pillow cannot open here (WebP, AVIF, JPEG XL) and for JPEG 2000's
sample depth: size, channels, bit depth, orientation, frames and the embedded ICC profile, read from
the container without decoding a pixel (the decompression-bomb guard runs on these numbers).

Each parser reads only declared sizes and fixed fields and raises :class:`HeaderError` (``truncated``
when the data ends inside a header field) for anything it cannot make sense of.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from PIL import Image

from preprocess.core import errors
from preprocess.core.errors import InputError, input_error
from preprocess.pipeline.formats import av1, colour, jpeg, orientations, sniff


class HeaderError(Exception):
    def __init__(self, message: str, *, truncated: bool = False) -> None:
        super().__init__(message)
        self.truncated = truncated


@dataclass(frozen=True)
class Header:
    """What a container says about its image (sizes as stored, before orientation)."""

    format: str
    width: int
    height: int
    channels: int
    bits: int = 8  # bits per sample as stored (a decoder may return them in a wider type)
    frames: int = 1
    orientation: int = 1  # as an EXIF orientation; applied by the caller unless the decoder does
    icc: bytes = b""
    exif: bytes = b""
    complete: bool = True  # every size the container declares fits in the data (else: cut off)
    coded_pixels: int = 0  # the largest frame the decoder may make whatever the size box says (AVIF), or 0
    coded: tuple[int, int] | None = None  # the primary image's coded frame (AVIF), when it is one frame
    compression: int = 0  # TIFF's compression tag
    min_is_white: bool = False  # TIFF's Photometric 0: the decoder gives the samples as stored, 0 is white
    separate_planes: bool = False  # TIFF's PlanarConfiguration 2
    extra_samples: int = -1  # TIFF's first ExtraSamples value (0 unspecified, 1 premultiplied alpha), -1 none
    icc_coded: bool = False  # JPEG XL: its pixels are in an ICC profile coded inside the codestream (not read here)
    jpeg_inside: bool = False  # JPEG XL: a jbrd box, so the JPEG it was transcoded from can be rebuilt

    @property
    def pixels(self) -> int:
        """What the decoder allocates at most: the image's size, or a larger coded frame."""
        return max(self.width * self.height, self.coded_pixels)

    @property
    def mode(self) -> str:
        """The Pillow mode the decoded samples map to."""
        return {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}.get(self.channels, "RGB")


def parse(fmt: str, data: bytes) -> Header:
    parsers = {sniff.WEBP: webp, sniff.AVIF: avif, sniff.JXL: jxl, sniff.JPEG2000: jpeg2000}
    try:
        return parsers[fmt](data)
    except IndexError:
        raise HeaderError(f"{fmt} header ends early", truncated=True) from None
    except (KeyError, ValueError) as exc:  # a required box or field is missing or malformed
        raise HeaderError(f"{fmt} header is malformed ({type(exc).__name__}: {exc})") from None


Order = Literal["big", "little"]


def _u16(data: bytes, pos: int, order: Order = "big") -> int:
    if pos + 2 > len(data):
        raise IndexError(pos)
    return int.from_bytes(data[pos:pos + 2], order)


def _u32(data: bytes, pos: int, order: Order = "big") -> int:
    if pos + 4 > len(data):
        raise IndexError(pos)
    return int.from_bytes(data[pos:pos + 4], order)


# -- WebP (RIFF) -------------------------------------------------------------------------------


def webp(data: bytes) -> Header:
    end = 8 + _u32(data, 4, "little")
    w = h = 0
    alpha, frames, icc, exif = False, 0, b"", b""
    pos = 12
    while pos + 8 <= min(end, len(data)):
        fourcc, size = data[pos:pos + 4], _u32(data, pos + 4, "little")
        body = data[pos + 8:pos + 8 + size]
        if fourcc in (b"VP8X", b"VP8 ", b"VP8L") and not (w and fourcc != b"VP8X"):
            w, h, alpha = _webp_frame(fourcc, body, alpha)
        elif fourcc == b"ICCP":
            icc = body
        elif fourcc == b"EXIF":
            exif = body
        elif fourcc == b"ANMF":
            frames += 1
        pos += 8 + size + (size & 1)
    if not w:
        raise HeaderError("WebP: no image header", truncated=len(data) < end)
    return Header(sniff.WEBP, w, h, 4 if alpha else 3, frames=max(frames, 1), icc=icc, exif=exif,
                  complete=len(data) >= end, orientation=orientations.from_exif(exif))


def _webp_frame(fourcc: bytes, body: bytes, alpha: bool) -> tuple[int, int, bool]:
    """(width, height, alpha) from a VP8X, VP8 or VP8L chunk."""
    if fourcc == b"VP8X":
        return (1 + int.from_bytes(body[4:7], "little"), 1 + int.from_bytes(body[7:10], "little"),
                bool(body[0] & 0x10))
    if fourcc == b"VP8 ":
        if body[3:6] != b"\x9d\x01\x2a":
            raise HeaderError("WebP: bad VP8 frame start code")
        return _u16(body, 6, "little") & 0x3FFF, _u16(body, 8, "little") & 0x3FFF, alpha
    if body[0] != 0x2F:
        raise HeaderError("WebP: bad VP8L signature")
    bits = _u32(body, 1, "little")
    return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool(bits >> 28 & 1)


# -- ISO BMFF boxes (AVIF, the JPEG XL and JP2 containers) ----------------------------------------


def boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, body start, body end) of each box in ``data[start:end]``; the last may end past the data."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind, head = _u32(data, pos), data[pos + 4:pos + 8], 8
        if size == 1:
            size, head = int.from_bytes(data[pos + 8:pos + 16], "big"), 16
        elif size == 0:
            size = end - pos
        if size < head:
            raise HeaderError(f"box {kind!r} has an invalid size {size}")
        yield kind, pos + head, pos + size
        pos += size


def _children(data: bytes, body: tuple[int, int], *, full: bool = False) -> dict[bytes, list[tuple[int, int]]]:
    out: dict[bytes, list[tuple[int, int]]] = {}
    start = body[0] + (4 if full else 0)
    for kind, s, e in boxes(data, start, min(body[1], len(data))):
        out.setdefault(kind, []).append((s, e))
    return out


def avif(data: bytes) -> Header:
    top = {kind: (s, e) for kind, s, e in boxes(data)}
    complete = all(e <= len(data) for _, e in top.values())
    if b"meta" not in top:
        raise HeaderError("AVIF: no meta box", truncated=not complete)
    meta = _children(data, top[b"meta"], full=True)
    ipco = _primary_properties(data, meta)
    sizes = [(_u32(data, s + 4), _u32(data, s + 8)) for s, _ in ipco.get(b"ispe", [])]
    if not sizes:
        raise HeaderError("AVIF: no image size (ispe)", truncated=not complete)
    w, h = max(sizes, key=lambda wh: wh[0] * wh[1])
    frames = av1.frame_sizes(data, meta)
    coded = frames.get(av1.primary_item(data, meta) or -1)
    icc = next((data[s + 4:e] for s, e in ipco.get(b"colr", []) if data[s:s + 4] in (b"prof", b"rICC")), b"")
    for s, _ in ipco.get(b"colr", []) if not icc else ():
        if data[s:s + 4] == b"nclx":  # the colour as code points (P3, BT.2020, linear ...): made a profile
            icc = colour.from_encoding(_u16(data, s + 4), _u16(data, s + 6), "AVIF")
    bits = 8
    for s, _ in ipco.get(b"av1C", [])[:1]:
        flags = data[s + 2]
        bits = 12 if flags & 0x20 and flags & 0x40 else 10 if flags & 0x40 else 8
    ops: list[Image.Transpose] = []
    for s, _ in ipco.get(b"irot", [])[:1]:  # MIAF order: rotate (counter-clockwise), then mirror
        ops += [Image.Transpose.ROTATE_90] * (data[s] & 3)
    for s, _ in ipco.get(b"imir", [])[:1]:
        ops.append(Image.Transpose.FLIP_TOP_BOTTOM if data[s] & 1 else Image.Transpose.FLIP_LEFT_RIGHT)
    channels = 4 if any(b"alpha" in data[s:e] for s, e in ipco.get(b"auxC", [])) else 3
    return Header(sniff.AVIF, w, h, channels, bits=bits, icc=icc, complete=complete,
                  orientation=orientations.of_ops(ops),
                  coded_pixels=max((fw * fh for fw, fh in frames.values()), default=0), coded=coded)


def _primary_properties(data: bytes, meta: dict[bytes, list[tuple[int, int]]]) -> dict[bytes, list[tuple[int, int]]]:
    """The ``ipco`` properties of the primary item, by type (a gain map's colour is not the image's), plus
    every item's size and auxiliary type (an alpha plane is another item). Every property where ``ipma`` or
    ``pitm`` is missing."""
    if b"iprp" not in meta:
        return {}
    iprp = _children(data, meta[b"iprp"][0])
    ordered = list(boxes(data, *iprp[b"ipco"][0]))
    primary = av1.primary_item(data, meta)
    mine = (av1.item_properties(data, iprp[b"ipma"][0], primary) if primary is not None and b"ipma" in iprp
            else set(range(1, len(ordered) + 1)))
    out: dict[bytes, list[tuple[int, int]]] = {}
    for index, (kind, s, e) in enumerate(ordered, 1):
        if index in mine or kind in (b"ispe", b"auxC"):  # every size (the limit takes the largest); an alpha item
            out.setdefault(kind, []).append((s, e))
    return out


# -- JPEG XL -------------------------------------------------------------------------------------


class _Bits:
    """LSB-first bit reader (the JPEG XL codestream's bit order)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def u(self, n: int) -> int:
        v = 0
        for i in range(n):
            v |= (self.data[self.pos >> 3] >> (self.pos & 7) & 1) << i
            self.pos += 1
        return v

    def size(self, div8: bool) -> int:
        if div8:
            return (self.u(5) + 1) * 8
        return self.u((9, 13, 18, 30)[self.u(2)]) + 1

    def metadata(self) -> tuple[int, int, bytes | None]:
        """(orientation, bits per sample, an ICC profile for its colour encoding) from the ImageMetadata
        after the SizeHeader; bits 0 for float samples. Integer samples come from libjxl at this depth
        (10-bit: 0..1023 in uint16), in the colour encoding the header names (Display P3, linear ...). The
        profile is b"" for sRGB, None when the pixels are in an ICC profile coded later (see :meth:`colour`)."""
        orientation = 1
        if self.u(1):  # all_default: 8-bit sRGB
            return orientation, 8, b""
        if self.u(1):  # extra_fields: the orientation, then what may come before the bit depth
            orientation = 1 + self.u(3)
            for skip in (self.skip_size, self.skip_preview, self.skip_animation):
                if self.u(1):  # have_intrinsic_size, have_preview, have_animation, each read in turn
                    skip()
        depth = 0 if self.u(1) else self.u32((0, 8), (0, 10), (0, 12), (6, 1))
        if not depth:
            self.u32((0, 32), (0, 16), (0, 24), (6, 1))
            self.u(4)
        try:
            return orientation, depth, self.colour()
        except IndexError:  # a header this short is the decoder's to judge; its colour is then taken as sRGB
            return orientation, depth, b""

    def enum(self) -> int:
        return self.u32((0, 0), (0, 1), (4, 2), (6, 18))

    def xy(self) -> tuple[float, float]:
        """A CustomXY: two signed millionths."""
        got = [self.u32((19, 0), (19, 524288), (20, 1048576), (21, 2097152)) for _ in range(2)]
        x, y = ((v >> 1) if v % 2 == 0 else -((v + 1) >> 1) for v in got)
        return x / 1e6, y / 1e6

    def skip_extra_channel(self) -> None:
        """An ExtraChannelInfo."""
        if self.u(1):  # d_alpha: the default alpha channel
            return
        kind = self.enum()
        if self.u(1):  # float samples
            self.u32((0, 32), (0, 16), (0, 24), (6, 1))
            self.u(4)
        else:
            self.u32((0, 8), (0, 10), (0, 12), (6, 1))
        self.u32((0, 0), (0, 3), (0, 4), (3, 1))  # dim_shift
        self.u(8 * self.u32((0, 0), (4, 0), (5, 16), (10, 48)))  # its name
        if kind == 0:  # alpha: whether it is premultiplied
            self.u(1)
        elif kind == 2:  # a spot colour: four F16
            self.u(64)
        elif kind == 5:  # CFA channel
            self.u32((0, 1), (2, 0), (4, 3), (8, 19))

    def colour(self) -> bytes | None:
        """The ColourEncoding after the bit depth, its extra channels and the XYB flag, as an ICC profile;
        b"" for sRGB. An ICC profile coded later (want_icc, not read here): None when the pixels are in it (not
        XYB: lossless, a JPEG transcoded), b"" under XYB (libjxl gives integer samples in sRGB then)."""
        self.u(1)  # modular_16_bit_buffer_sufficient
        for _ in range(self.u32((0, 0), (0, 1), (4, 2), (12, 1))):
            self.skip_extra_channel()
        xyb = self.u(1)
        if self.u(1):  # all_default: sRGB
            return b""
        if self.u(1):  # want_icc
            return b"" if xyb else None
        space = self.enum()
        if space not in (0, 1):  # XYB or unknown: nothing to convert from here
            return b""
        white = {1: colour.D65, 10: (1 / 3, 1 / 3), 11: colour.DCI_WHITE}.get(point := self.enum(), colour.D65)
        white = self.xy() if point == 2 else white
        rgb = None
        if space == 0:
            rgb = {9: colour.BT2020, 11: colour.P3}.get(prims := self.enum(), colour.SRGB_PRIMARIES)
            rgb = (self.xy(), self.xy(), self.xy()) if prims == 2 else rgb
        gamma = 1e7 / max(self.u(24), 1) if self.u(1) else None
        transfer = self.enum() if gamma is None else 0
        if transfer in colour.HDR:
            raise colour.hdr("JPEG XL", transfer)
        gamma = colour.GAMMA.get(transfer, gamma)
        if rgb in (None, colour.SRGB_PRIMARIES) and white == colour.D65 and gamma is None:
            return b""  # sRGB, or grey with sRGB's curve
        return colour.profile(rgb, white, gamma)

    def u32(self, *choices: tuple[int, int]) -> int:
        """The spec's U32: a 2-bit selector, then (bits, offset) of the chosen distribution."""
        n, offset = choices[self.u(2)]
        return self.u(n) + offset

    def skip_size(self) -> None:
        """A SizeHeader (the intrinsic size)."""
        div8 = bool(self.u(1))
        self.size(div8)
        if not self.u(3):
            self.size(div8)

    def skip_preview(self) -> None:
        """A PreviewHeader."""
        side = ((0, 16), (0, 32), (5, 1), (9, 33)) if self.u(1) else ((6, 1), (8, 65), (10, 321), (12, 1345))
        self.u32(*side)
        if not self.u(3):
            self.u32(*side)

    def skip_animation(self) -> None:
        """An AnimationHeader."""
        self.u32((0, 100), (0, 1000), (10, 1), (30, 1))
        self.u32((0, 1), (0, 1001), (8, 1), (10, 1))
        self.u32((0, 0), (3, 0), (16, 0), (32, 0))
        self.u(1)


_JXL_RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}


def jxl(data: bytes) -> Header:
    (complete, jpeg_inside), code, exif = (True, False), data, b""
    if not data.startswith(b"\xff\x0a"):  # the container: the codestream is in jxlc, or starts in the first jxlp
        found = b""
        for kind, s, e in boxes(data):
            complete &= e <= len(data)
            if kind == b"jxlc" and not found:
                found = data[s:e]
            elif kind == b"jxlp" and not found:
                found = data[s + 4:e]
            elif kind == b"Exif":
                exif = data[s + 4:e]  # after the 4-byte offset to the TIFF header
            elif kind == b"jbrd":
                jpeg_inside = True
        if not found:
            raise HeaderError("JPEG XL: no codestream box", truncated=not complete)
        code = found
    bits = _Bits(code[2:])
    div8 = bool(bits.u(1))
    height = bits.size(div8)
    ratio = bits.u(3)
    if ratio:
        num, den = _JXL_RATIOS[ratio]
        width = height * num // den
    else:
        width = bits.size(div8)
    orientation, depth, icc = bits.metadata()
    # libjxl applies the orientation while decoding: report it, the caller must not apply it again
    return Header(sniff.JXL, width, height, 3, bits=depth or 8, orientation=orientation, icc=icc or b"", exif=exif,
                  complete=complete, icc_coded=icc is None, jpeg_inside=jpeg_inside)


# -- JPEG 2000 -----------------------------------------------------------------------------------


def jpeg2000(data: bytes) -> Header:
    """Size, components and bit depth from the codestream's SIZ marker; the ICC profile from a JP2's
    colour specification box (method 2 or 3)."""
    at = data.find(b"\xff\x4f\xff\x51")
    if at < 0:
        raise HeaderError("JPEG 2000: no SIZ marker", truncated=True)
    siz = at + 2
    width = _u32(data, siz + 6) - _u32(data, siz + 14)
    height = _u32(data, siz + 10) - _u32(data, siz + 18)
    components = _u16(data, siz + 38)
    depth = (data[siz + 40] & 0x7F) + 1
    icc, complete, extra = b"", data.rstrip(b"\x00").endswith(b"\xff\xd9"), -1
    if at > 0:
        for kind, s, e in boxes(data):
            complete &= e <= len(data)
            if kind == b"jp2h":
                inside = _children(data, (s, e))
                colr = inside.get(b"colr", [])[:1]  # readers use the first colour specification (15444-1 I.5.3.3)
                icc = next((data[cs + 3:ce] for cs, ce in colr if data[cs] in (2, 3)), b"")
                _check_jp2_space(data, colr, icc)
                extra = -1 if _opacity(data, inside.get(b"cdef", [])) else 0  # only cdef makes a component opacity
    if width <= 0 or height <= 0 or not 1 <= components <= 16384:
        raise HeaderError(f"JPEG 2000: invalid size {width}x{height} with {components} components")
    return Header(sniff.JPEG2000, width, height, min(components, 4), bits=depth, icc=icc, complete=complete,
                  extra_samples=extra)


# A JP2's enumerated colour spaces (ISO 15444-1 and -2): the decoder gives sRGB, grey and sYCC (which it
# converts) as they should be seen; any other would be stored as if it were RGB (CMYK's K as alpha: white).
_JP2_SPACES = {16: "sRGB", 17: "greyscale", 18: "sYCC"}
_JP2_OTHER = {12: "CMYK", 13: "YCCK", 14: "CIELab", 15: "bi-level", 19: "YCC", 20: "e-sRGB", 21: "ROMM-RGB",
              22: "YPbPr 1125/60", 23: "YPbPr 1250/50", 24: "e-sYCC"}


def _opacity(data: bytes, cdef: list[tuple[int, int]]) -> bool:
    """Whether a JP2's channel definition box names a component opacity (type 1) or premultiplied (type 2)."""
    for cs, ce in cdef[:1]:
        n = _u16(data, cs)
        if any(_u16(data, cs + 2 + 6 * i + 2) in (1, 2) for i in range(n) if cs + 8 + 6 * i <= ce):
            return True
    return False


def _check_jp2_space(data: bytes, colr: list[tuple[int, int]], icc: bytes) -> None:
    """``E_UNSUPPORTED`` for a JP2 whose colour specification names a space no decoder here converts."""
    if icc:
        return  # a profile says what the samples are (colour.describe checks it against the pixels)
    for cs, _ in colr:
        if data[cs] == 1 and (space := _u32(data, cs + 3)) not in _JP2_SPACES:
            name = _JP2_OTHER.get(space, f"enumerated colour space {space}")
            raise input_error(errors.UNSUPPORTED, f"JPEG 2000 in {name}: no decoder here converts it to RGB")


# -- TIFF samples Pillow has no mode for --------------------------------------------------------------


def header_error(fmt: str, data: bytes, exc: Exception) -> InputError:
    """The error for a header Pillow's parser (or ours) could not read: E_TRUNCATED where the file ends inside
    it, E_UNSUPPORTED for a valid layout no decoder here takes, else E_CORRUPT; in words, never a parser's."""
    cause = exc.__cause__ or exc
    text = str(exc)
    if fmt == sniff.TIFF and isinstance(cause, KeyError):
        return input_error(errors.UNSUPPORTED, f"TIFF with an unknown compression or layout ({text})")
    ended = isinstance(cause, EOFError | struct.error) or any(w in text.lower() for w in ("truncated", "end of", "eof"))
    if fmt == sniff.JPEG:
        ended = jpeg.header_end(data) is None
    elif fmt == sniff.TIFF and data[2:4] in (b"*\x00", b"\x00*"):  # the first IFD lies past the end
        ended = ended or int.from_bytes(data[4:8], "little" if data[:1] == b"I" else "big") + 2 > len(data)
    if "cannot handle" in text:  # Pillow: "cannot handle 12-bit layers" (a 12-bit JPEG): valid, not ours
        return input_error(errors.UNSUPPORTED, f"{fmt}: {text}")
    if "not identified by this driver" in text:
        text = "no image mode, or a zero width or height"
    if ended:  # in words, not the parser's ("unpack_from requires a buffer of at least 4 bytes ...")
        text = f"the file ends inside it ({len(data)} bytes)"
    return input_error(errors.TRUNCATED if ended else errors.CORRUPT, f"unreadable {fmt} header: {text}")

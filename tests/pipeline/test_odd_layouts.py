"""Valid files in unusual layouts decode to their pixels, or are refused as E_UNSUPPORTED, never stored
wrong: what a sweep of 452 valid odd files against independent writers and decoders found (2026-12-06).
Every file is made here by an independent writer (a raw TIFF/PNG/PGM writer below, tifffile, imagecodecs)
with its intended pixels computed beside it."""

from __future__ import annotations

import io
import struct
import zlib

import imagecodecs
import numpy as np
import pytest
import tifffile

from preprocess.core.errors import InputError
from preprocess.pipeline.images import decode_rgb, probe

RAMP = np.tile(np.arange(64, dtype=np.uint8) * 4, (16, 1))  # a 64x16 grey ramp 0..252
DEEP = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (16, 1))
RGB = np.dstack([RAMP, RAMP[:, ::-1], np.full_like(RAMP, 128)])
ALPHA = np.tile(np.linspace(0, 255, 64).round().astype(np.uint8), (16, 1))


def decoded(data: bytes) -> np.ndarray | str:
    """The decoded RGB pixels, or the failure code."""
    try:
        probe(data, max_pixels=10**9)
        return np.asarray(decode_rgb(data))
    except InputError as exc:
        return exc.code


def grey(a: np.ndarray) -> np.ndarray:
    return np.repeat(a[..., None], 3, 2)


def on_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None] / 255.0
    return np.round(colour * a + 255 * (1 - a)).astype(np.uint8)


def display_p3() -> bytes:
    """Display P3 (P3 primaries, D65, the sRGB curve) as an ICC profile built by LittleCMS, not by the code
    under test."""
    x = np.linspace(0, 1, 4096)
    curve = np.round(np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4) * 65535).astype(np.uint16)
    primaries = [0.68, 0.32, 1, 0.265, 0.69, 1, 0.15, 0.06, 1]
    return bytes(imagecodecs.cms_profile("rgb", whitepoint=[0.3127, 0.3290, 1], primaries=primaries,
                                         transferfunction=curve))


def in_srgb(rgb: np.ndarray, profile: bytes) -> np.ndarray:
    """``rgb`` read in ``profile``, converted to sRGB (LittleCMS's default intent)."""
    return np.asarray(imagecodecs.cms_transform(rgb, profile, bytes(imagecodecs.cms_profile("srgb")),
                                                colorspace="rgb", outcolorspace="rgb"))


def tif(arr: np.ndarray, **kw: object) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **kw)  # type: ignore[arg-type]
    return buf.getvalue()


def raw_tiff(w: int, h: int, strip: bytes, tags: dict[int, list[int]]) -> bytes:
    """A one-strip little-endian TIFF with SHORT ``tags`` (what tifffile will not write: 4-bit LZW, Lab ...)."""
    every = {**{t: (3, v) for t, v in tags.items()}, 256: (4, [w]), 257: (4, [h]), 278: (4, [h]), 273: (4, [8]),
             279: (4, [len(strip)])}
    out = bytearray(b"II*\0" + struct.pack("<I", 8 + len(strip) + (len(strip) & 1))) + strip + b"\0" * (len(strip) & 1)
    extra, entries = bytearray(), b""
    base = len(out) + 2 + 12 * len(every) + 4
    for tag in sorted(every):
        kind, values = every[tag]
        payload = b"".join(struct.pack("<H" if kind == 3 else "<I", v) for v in values)
        if len(payload) <= 4:
            entries += struct.pack("<HHI", tag, kind, len(values)) + payload.ljust(4, b"\0")
        else:
            entries += struct.pack("<HHII", tag, kind, len(values), base + len(extra))
            extra += payload
    return bytes(out + struct.pack("<H", len(every)) + entries + b"\0\0\0\0" + extra)


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(arr: np.ndarray, depth: int, colour_type: int, extra: bytes = b"", width: int | None = None) -> bytes:
    rows = b"".join(b"\0" + r.tobytes() for r in arr.reshape(arr.shape[0], -1))
    head = struct.pack(">IIBBBBB", width or arr.shape[1], arr.shape[0], depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + extra + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def test_compressed_tiffs_of_few_bits_are_scaled() -> None:
    """4-bit grey LZW: imagecodecs gives 0..15, which went to the store as 0..15 (black)."""
    v4 = RAMP >> 4
    packed = np.packbits(np.unpackbits(v4[..., None].astype(np.uint8), axis=2)[..., 4:].reshape(16, -1), axis=1)
    lzw = bytes(imagecodecs.lzw_encode(packed.tobytes()))
    got = decoded(raw_tiff(64, 16, lzw, {258: [4], 259: [5], 262: [1], 277: [1]}))
    assert np.array_equal(got, grey(v4 * 17))


def test_tiff_extra_samples_are_what_they_say() -> None:
    """Premultiplied alpha was composited as straight alpha (21-25 levels off); an unspecified extra
    sample was taken as alpha (washed to white)."""
    premultiplied = np.round(RGB * (ALPHA[..., None] / 255.0)).astype(np.uint8)
    got = decoded(tif(np.dstack([premultiplied, ALPHA]), photometric="rgb", extrasamples=["assocalpha"],
                      compression="lzw"))
    assert np.abs(np.asarray(got).astype(int) - on_white(RGB, ALPHA)).max() <= 1
    got = decoded(tif(np.dstack([RGB, ALPHA]), photometric="rgb", extrasamples=["unspecified"], compression="lzw"))
    assert np.array_equal(got, RGB)


@pytest.mark.parametrize("compression", [None, "lzw"])
def test_signed_and_32_bit_grey_tiffs_decode_alike_whatever_the_compression(compression: str | None) -> None:
    """Uncompressed, Pillow read 32-bit unsigned samples as signed (high values wrapped) and signed 8-bit ones
    as unsigned (128 levels off); libtiff reads both right, compressed or not."""
    u32 = DEEP.astype(np.uint32) * 65537
    assert np.array_equal(decoded(tif(u32, compression=compression)), grey(np.round(u32 / (2**32 - 1) * 255)))
    s8 = (RAMP.astype(np.int16) - 128).astype(np.int8)
    stretched = np.round((s8.astype(float) + 128) * 255 / 252).astype(np.uint8)  # no nominal range: min..max
    assert np.array_equal(decoded(tif(s8, compression=compression)), grey(stretched))


def test_a_dark_deep_image_is_not_taken_for_an_8_bit_one() -> None:
    """A 16-bit PGM (and PNG) whose samples are all <= 255 came out 256x too bright: the depth is the
    header's, not a guess from the values."""
    dark = DEEP // 256
    want = grey(np.round(dark / 65535 * 255).astype(np.uint8))
    assert np.array_equal(decoded(b"P5\n64 16\n65535\n" + dark.astype(">u2").tobytes()), want)
    assert np.array_equal(decoded(png(dark.astype(">u2"), 16, 0)), want)


def test_a_png_colour_key_is_transparent() -> None:
    """tRNS on a grey or RGB PNG (one value is transparent) was ignored: the key's pixels kept their colour."""
    want = grey(RAMP).copy()
    want[RAMP == 8] = 255
    assert np.array_equal(decoded(png(RAMP, 8, 0, chunk(b"tRNS", struct.pack(">H", 8)))), want)
    deep = (RAMP.astype(np.uint16) * 257).astype(">u2")
    assert np.array_equal(decoded(png(deep, 16, 0, chunk(b"tRNS", struct.pack(">H", 8 * 257)))), want)
    want = RGB.copy()
    want[(RGB == (8, 244, 128)).all(axis=2)] = 255
    assert np.array_equal(decoded(png(RGB, 8, 2, chunk(b"tRNS", struct.pack(">HHH", 8, 244, 128)))), want)
    two_bit = RAMP >> 6  # 0..3, four to a byte
    packed = np.packbits(np.unpackbits(two_bit[..., None].astype(np.uint8), axis=2)[..., 6:].reshape(16, -1), axis=1)
    want = grey(two_bit * 85)
    want[two_bit == 1] = 255
    assert np.array_equal(decoded(png(packed, 2, 0, chunk(b"tRNS", struct.pack(">H", 1)), width=64)), want)
    rgb16 = (RGB.astype(np.uint16) * 257).astype(">u2")
    rgb16[0, 0] += 1  # the key's high bytes, not its low ones: opaque (Pillow keeps only the high bytes)
    want = RGB.copy()
    want[(RGB == (8, 244, 128)).all(axis=2)] = 255
    want[0, 0] = RGB[0, 0]
    key16 = chunk(b"tRNS", struct.pack(">HHH", 8 * 257, 244 * 257, 128 * 257))
    assert np.array_equal(decoded(png(rgb16, 16, 2, key16)), want)
    linear = bytes(imagecodecs.cms_profile("gray", gamma=1.0))  # a grey profile does not lose the key
    got = decoded(png(RAMP, 8, 0, chunk(b"iCCP", b"linear\0\0" + zlib.compress(linear)) + chunk(b"tRNS", b"\0\x08")))
    assert (np.asarray(got)[RAMP == 8] == 255).all() and (np.asarray(got)[RAMP == 12] < 255).all()


def test_layouts_without_a_decoder_here_are_unsupported_not_corrupt_nor_wrong() -> None:
    """CIELab TIFF: an ImportError escaped (uncompressed) or the Lab numbers were stored as RGB (LZW);
    16-bit CMYK LZW and 12-bit JPEG, valid files, were E_CORRUPT."""
    lab = np.dstack([RAMP, np.zeros_like(RAMP), np.zeros_like(RAMP)])
    tags = {258: [8, 8, 8], 259: [1], 262: [8], 277: [3]}
    assert decoded(raw_tiff(64, 16, lab.tobytes(), tags)) == "E_UNSUPPORTED"
    lzw = bytes(imagecodecs.lzw_encode(lab.tobytes()))
    assert decoded(raw_tiff(64, 16, lzw, {**tags, 259: [5]})) == "E_UNSUPPORTED"
    cmyk = np.dstack([RAMP, RAMP, RAMP, np.zeros_like(RAMP)]).astype(np.uint16) * 257
    assert decoded(tif(cmyk, photometric="separated", compression="lzw")) == "E_UNSUPPORTED"
    twelve = imagecodecs.jpeg8_encode(RGB.astype(np.uint16) * 16, level=95, bitspersample=12)
    assert decoded(bytes(twelve)) == "E_UNSUPPORTED"


def test_an_uncompressed_ycbcr_tiff_decodes() -> None:
    """Pillow read it at 4 bytes a pixel: E_TRUNCATED (the LZW one decoded)."""
    ycc = np.dstack([RAMP, np.full_like(RAMP, 128), np.full_like(RAMP, 128)])
    tags = {258: [8, 8, 8], 259: [1], 262: [6], 277: [3], 530: [1, 1]}
    assert np.array_equal(decoded(raw_tiff(64, 16, ycc.tobytes(), tags)), grey(RAMP))


def test_a_12_bit_min_is_white_tiff_decodes() -> None:
    """Photometric 0 was read as "absent" (-1): E_UNSUPPORTED "photometric -1"."""
    v12 = DEEP >> 4
    bits = np.unpackbits((4095 - v12).astype(">u2").view(np.uint8).reshape(16, 64, 2), axis=2)[..., 4:]
    packed = np.packbits(bits.reshape(16, -1), axis=1).tobytes()
    got = decoded(raw_tiff(64, 16, packed, {258: [12], 259: [1], 262: [0], 277: [1]}))
    assert np.array_equal(got, grey(np.round(v12 / 4095 * 255).astype(np.uint8)))


def test_a_deep_jpeg_xl_keeps_its_contrast() -> None:
    """The header's depth was never read (8), so deep samples were stretched min..max (a low-contrast photo
    came out 0..255)."""
    low = (DEEP // 2 + 8000).astype(np.uint16)  # (imagecodecs declares 16-bit samples linear unless told)
    got = decoded(bytes(imagecodecs.jpegxl_encode(low, lossless=True, transfer="srgb")))
    assert np.array_equal(got, grey(np.round(low / 65535 * 255).astype(np.uint8)))
    for depth in (10, 12):  # libjxl gives these as 0..1023 and 0..4095: the depth comes from the header
        samples = (low >> (16 - depth)).astype(np.uint16)
        got = decoded(bytes(imagecodecs.jpegxl_encode(samples, lossless=True, bitspersample=depth, transfer="srgb")))
        assert np.array_equal(got, grey(np.round(samples / ((1 << depth) - 1) * 255).astype(np.uint8))), depth


def test_a_grey_profile_applies_to_deep_grey() -> None:
    """A 16-bit grey PNG's grey ICC profile was ignored (8-bit grey was converted)."""
    linear = bytes(imagecodecs.cms_profile("gray", gamma=1.0))
    eight = np.round(DEEP / 257).astype(np.uint8)
    want = np.asarray(imagecodecs.cms_transform(eight, linear, bytes(imagecodecs.cms_profile("srgb")),
                                                colorspace="gray", outcolorspace="rgb"))
    got = decoded(png(DEEP.astype(">u2"), 16, 0, chunk(b"iCCP", b"linear\0\0" + zlib.compress(linear))))
    assert np.abs(np.asarray(got).astype(int) - want).max() <= 1


def test_an_avif_colour_encoding_is_converted_to_srgb() -> None:
    """AVIF gives its colour as H.273 code points (nclx) more often than as an ICC profile: a Display P3 one
    was stored as if it were sRGB (11.6 levels off, 76 at most). An HDR transfer (PQ, HLG) is refused."""
    want = in_srgb(RGB, display_p3())
    avif = imagecodecs.AVIF

    def encoded(primaries: int, transfer: int) -> bytes:
        return bytes(imagecodecs.avif_encode(RGB, level=100, pixelformat=avif.PIXEL_FORMAT.YUV444,
                                             primaries=primaries, transfer=transfer))

    p3_avif = encoded(avif.COLOR_PRIMARIES.SMPTE432, avif.TRANSFER_CHARACTERISTICS.SRGB)
    assert np.abs(np.asarray(decoded(p3_avif)).astype(int) - want).max() <= 2
    srgb_avif = encoded(avif.COLOR_PRIMARIES.BT709, avif.TRANSFER_CHARACTERISTICS.SRGB)
    assert np.abs(np.asarray(decoded(srgb_avif)).astype(int) - RGB).max() <= 2  # sRGB: as it is
    assert decoded(encoded(avif.COLOR_PRIMARIES.BT2020, 16)) == "E_UNSUPPORTED"  # PQ


def test_a_jpeg_xl_colour_encoding_is_converted_to_srgb() -> None:
    """JPEG XL names its colour in its codestream (no ICC box): a Display P3 or linear one was stored as if
    it were sRGB (P3: 6.5 levels off on average, linear: 40). libjxl gives the pixels in that encoding,
    lossless or not; the header's encoding is read (past an alpha channel's description) and converted."""
    p3 = display_p3()
    bt709 = [0.64, 0.33, 1, 0.30, 0.60, 1, 0.15, 0.06, 1]
    linear = bytes(imagecodecs.cms_profile("rgb", whitepoint=[0.3127, 0.3290, 1], primaries=bt709, gamma=1.0))
    for profile, encoding in ((p3, {"primaries": "p3"}), (linear, {"transfer": "linear"})):
        want = in_srgb(RGB, profile)
        for kind in ({"lossless": True}, {"level": 95}):
            got = decoded(bytes(imagecodecs.jpegxl_encode(RGB, **kind, **encoding)))  # type: ignore[arg-type]
            assert np.abs(np.asarray(got).astype(int) - want).mean() < 2.0, (encoding, kind)
    opaque = np.dstack([RGB, np.full_like(RAMP, 255)])  # an alpha channel's description comes before the colour
    want = in_srgb(RGB, p3)
    got = decoded(bytes(imagecodecs.jpegxl_encode(opaque, lossless=True, primaries="p3")))
    assert np.abs(np.asarray(got).astype(int) - want).max() <= 1
    assert np.array_equal(decoded(bytes(imagecodecs.jpegxl_encode(RGB, lossless=True))), RGB)  # sRGB: as it is
    assert decoded(bytes(imagecodecs.jpegxl_encode(RGB, lossless=True, transfer="pq"))) == "E_UNSUPPORTED"


def test_a_jpeg_transcoded_to_jpeg_xl_keeps_its_colour_profile() -> None:
    """A JPEG losslessly transcoded to JPEG XL (cjxl's default for a JPEG) keeps its ICC profile inside the
    codestream, where imagecodecs does not give it out: a Display P3 photo was stored as if it were sRGB,
    11.6 levels off on average. The profile is now read from the JPEG the file rebuilds; a codestream that
    cannot rebuild one is refused, not stored wrong."""
    from PIL import Image

    from preprocess.pipeline.formats import containers

    p3 = display_p3()
    wide = np.asarray(Image.fromarray(RGB).resize((256, 64)))
    buf = io.BytesIO()
    Image.fromarray(wide).save(buf, "JPEG", quality=95, icc_profile=p3)
    jxl = bytes(imagecodecs.jpegxl_encode_jpeg(buf.getvalue()))
    want = in_srgb(np.asarray(imagecodecs.jpegxl_decode(jxl)), p3)  # libjxl's pixels, read in their profile
    assert np.abs(np.asarray(decoded(jxl)).astype(int) - want).max() <= 1
    assert probe(jxl, max_pixels=10**9).profile  # named in the row, as a JPEG's profile is
    boxes = list(containers.boxes(jxl))
    bare = b"".join(jxl[s + 4:e] for kind, s, e in boxes if kind == b"jxlp")  # the codestream alone: no jbrd
    assert decoded(bare) == "E_UNSUPPORTED"
    s = next(s for kind, s, _ in boxes if kind == b"jbrd")
    assert decoded(jxl[:s + 5] + b"\xff" * 35 + jxl[s + 40:]) == "E_CORRUPT"  # a damaged jbrd box
    buf = io.BytesIO()
    Image.fromarray(wide).save(buf, "JPEG", quality=95)  # no profile: sRGB, decoded as before
    plain = bytes(imagecodecs.jpegxl_encode_jpeg(buf.getvalue()))
    assert np.array_equal(decoded(plain), imagecodecs.jpegxl_decode(plain))


def test_a_png_cicp_colour_encoding_is_converted_to_srgb() -> None:
    """PNG's third edition names the colour as H.273 code points (cICP), over any iCCP: it was ignored."""
    want = in_srgb(RGB, display_p3())
    got = decoded(png(RGB, 8, 2, chunk(b"cICP", bytes([12, 13, 0, 1]))))  # Display P3, the sRGB curve
    assert np.abs(np.asarray(got).astype(int) - want).max() <= 1
    assert np.array_equal(decoded(png(RGB, 8, 2, chunk(b"cICP", bytes([1, 13, 0, 1])))), RGB)  # sRGB
    assert decoded(png(RGB, 8, 2, chunk(b"cICP", bytes([9, 16, 0, 1])))) == "E_UNSUPPORTED"  # BT.2100 PQ


def test_float_and_32_bit_tiffs_take_their_planes_and_extra_samples() -> None:
    """TIFFs without a Pillow mode (float, 32-bit) were read without their PlanarConfiguration (E_CORRUPT)
    and ExtraSamples (premultiplied colour 38 levels off; an unspecified sample taken as alpha)."""
    unit = RGB.astype(np.float32) / 255
    planes = tif(np.moveaxis(unit, -1, 0).copy(), photometric="rgb", planarconfig="separate", compression="zlib")
    assert np.array_equal(decoded(planes), RGB)
    alpha = ALPHA.astype(np.float32)[..., None] / 255
    premultiplied = tif(np.dstack([unit * alpha, alpha]), photometric="rgb", extrasamples=["assocalpha"])
    assert np.abs(np.asarray(decoded(premultiplied)).astype(int) - on_white(RGB, ALPHA)).max() <= 1
    unspecified = tif(np.dstack([unit, alpha]), photometric="rgb", extrasamples=["unspecified"])
    assert np.array_equal(decoded(unspecified), RGB)


def test_a_colour_encoding_that_makes_no_profile_is_corrupt() -> None:
    """A JPEG XL header may give any chromaticities: LittleCMS's CmsError escaped the probe (a crash of the
    run, not a failure row)."""
    from preprocess.pipeline.formats import colour

    for rgb, white in ((((0.3, 0.3),) * 3, colour.D65), (colour.P3, (0.0, 0.0)), (colour.P3, (-0.1, 0.3))):
        with pytest.raises(InputError) as caught:
            colour.profile(rgb, white, None)
        assert caught.value.code == "E_CORRUPT"


def test_a_header_parser_failure_is_a_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a header parser raises on hostile bytes is E_CORRUPT with the file's path, never an exception
    that ends the run. Test double: a parser that fails as a bug would (no real file makes one fail today)."""
    from preprocess.pipeline.formats import containers

    def broken(fmt: str, data: bytes) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(containers, "parse", broken)
    with pytest.raises(InputError) as caught:
        probe(bytes(imagecodecs.avif_encode(RGB, level=90)), max_pixels=10**9, path="x.avif")
    assert caught.value.code == "E_CORRUPT" and caught.value.path == "x.avif" and "RuntimeError" in caught.value.message


def test_an_avif_takes_its_primary_images_colour_only() -> None:
    """Every item's properties were read: a gain map's colour box (libavif writes PQ there) made an SDR
    photo E_UNSUPPORTED, or converted it with another item's primaries (152 levels off)."""
    base = bytes(imagecodecs.avif_encode(RGB, level=100, pixelformat=imagecodecs.AVIF.PIXEL_FORMAT.YUV444))
    for primaries, transfer in ((9, 16), (9, 13)):
        body = b"colr" + b"nclx" + struct.pack(">HHHB", primaries, transfer, 9, 0x80)
        other = _with_property(base, struct.pack(">I", len(body) + 4) + body)  # associated with no item
        assert np.abs(np.asarray(decoded(other)).astype(int) - RGB).max() <= 2


def _with_property(data: bytes, prop: bytes) -> bytes:
    """``data`` (an AVIF with its meta before its mdat) with ``prop`` appended to ipco, which no item uses;
    the sizes of the boxes around it and the item offsets after it are moved by its length."""
    def children(start: int, end: int) -> dict[bytes, tuple[int, int]]:
        out, pos = {}, start
        while pos + 8 <= end:
            size = struct.unpack(">I", data[pos:pos + 4])[0]
            out[data[pos + 4:pos + 8]] = (pos, pos + size)
            pos += size
        return out

    meta = children(0, len(data))[b"meta"]
    kids = children(meta[0] + 12, meta[1])
    iprp = kids[b"iprp"]
    ipco = children(iprp[0] + 8, iprp[1])[b"ipco"]
    out = bytearray(data)
    for at in (meta[0], iprp[0], ipco[0]):
        struct.pack_into(">I", out, at, struct.unpack(">I", data[at:at + 4])[0] + len(prop))
    start = kids[b"iloc"][0]
    version, pos = data[start + 8], start + 12
    offset_size, length_size, base_size = data[pos] >> 4, data[pos] & 15, data[pos + 1] >> 4
    index_size = data[pos + 1] & 15 if version in (1, 2) else 0
    pos += 2
    count = struct.unpack(">H", data[pos:pos + 2])[0] if version < 2 else struct.unpack(">I", data[pos:pos + 4])[0]
    pos += 2 if version < 2 else 4
    for _ in range(count):
        pos += (2 if version < 2 else 4) + (2 if version in (1, 2) else 0) + 2
        for size in (base_size,):
            _bump(out, pos, size, ipco[1], len(prop))
            pos += size
        extents = struct.unpack(">H", data[pos:pos + 2])[0]
        pos += 2
        for _ in range(extents):
            pos += index_size
            _bump(out, pos, offset_size, ipco[1], len(prop))
            pos += offset_size + length_size
    out[ipco[1]:ipco[1]] = prop
    return bytes(out)


def _bump(out: bytearray, pos: int, size: int, after: int, by: int) -> None:
    if size:
        value = int.from_bytes(out[pos:pos + size], "big")
        if value >= after:
            out[pos:pos + size] = (value + by).to_bytes(size, "big")


@pytest.mark.parametrize("deep", [False, True])
def test_a_tiff_whose_first_page_is_a_thumbnail_is_unsupported_not_stored_small(deep: bool) -> None:
    """A TIFF whose first page is marked a reduced-resolution copy (NewSubfileType 1), its full image after,
    was stored as the 90x60 thumbnail with the thumbnail's size recorded as the source's (a hostile-input
    round, 2026-12-07). It is E_UNSUPPORTED, saying why; a float TIFF (no Pillow mode) alike."""
    full = RGB.astype(np.float32) / 255 if deep else RGB
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as t:
        t.write(full[::4, ::4].copy(), photometric="rgb", subfiletype=1)
        t.write(full, photometric="rgb")
    with pytest.raises(InputError) as e:
        probe(buf.getvalue(), max_pixels=10**8)
    assert e.value.code == "E_UNSUPPORTED" and "reduced-resolution" in e.value.message
    assert decoded(buf.getvalue()) == "E_UNSUPPORTED"
    one = io.BytesIO()
    tifffile.imwrite(one, full, photometric="rgb")  # the full image alone (NewSubfileType 0): read
    assert probe(one.getvalue(), max_pixels=10**8).width == full.shape[1]
    assert np.array_equal(decoded(one.getvalue()), RGB)
    alone = io.BytesIO()  # one page marked reduced (some writers mislabel it): its only page is the image
    tifffile.imwrite(alone, full, photometric="rgb", subfiletype=1)
    assert np.array_equal(decoded(alone.getvalue()), RGB)

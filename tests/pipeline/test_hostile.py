"""Hostile and odd inputs to the decoders (issue 25 items 2, 3, 8 and 15), all generated from a real photo:
a header that lies about the size (AVIF's size box, a TIFF that names its width twice), a TIFF of
80,000 pages, float and 32-bit RGB TIFFs, NaN and infinities, PNGs with large text and ICC chunks."""

from __future__ import annotations

import io
import struct
import zlib

import imagecodecs
import numpy as np
import pytest
from PIL import Image, TiffImagePlugin

from preprocess.core.errors import InputError
from preprocess.pipeline.images import decode_rgb, probe
from tests.pipeline.test_images import tifffile_bytes

MAX = 120_000_000


def refused(data: bytes, *, max_pixels: int = MAX, decode: bool = False) -> InputError:
    """The error of the probe, or (``decode``) of the decode that follows a probe that passed."""
    if decode:
        probe(data, max_pixels=max_pixels, path="x")
    with pytest.raises(InputError) as caught:
        decode_rgb(data, path="x") if decode else probe(data, max_pixels=max_pixels, path="x")
    return caught.value


def _set_ispe(avif: bytes, width: int, height: int) -> bytes:
    """The AVIF with its size box (``ispe``) saying ``width`` x ``height``; the AV1 frame unchanged."""
    at = avif.index(b"ispe")
    out = bytearray(avif)
    struct.pack_into(">II", out, at + 8, width, height)
    return bytes(out)


# -- item 2: the size a header claims is checked against what the decoder makes --------------------------


def test_a_lying_avif_size_box_is_corrupt_before_any_decode(rgb: np.ndarray) -> None:
    """A 64x48 photo whose size box says 1x1 was decoded, cropped by libavif to the box and stored as 1x1,
    status ok: the AV1 sequence header says 64x48, so it is E_CORRUPT at the probe and at the decode."""
    real = bytes(imagecodecs.avif_encode(rgb, level=80))
    assert probe(real, max_pixels=MAX).width == 64
    lying = _set_ispe(real, 1, 1)
    assert imagecodecs.avif_decode(lying).shape[:2] == (1, 1)  # what libavif does with it: a silent crop
    error = refused(lying)
    assert error.code == "E_CORRUPT" and "64x48" in error.message and "1x1" in error.message, error.message
    with pytest.raises(InputError, match="64x48") as caught:
        decode_rgb(lying)  # also without a probe first
    assert caught.value.code == "E_CORRUPT"


def test_the_pixel_limit_holds_whatever_the_size_box_says(rgb: np.ndarray) -> None:
    """The 12000x11000 AVIF whose box said 100x100 was decoded whole (132 MP over a 120 MP limit): the same
    file at a smaller scale, a 640x480 frame behind a 10x10 box under a 1,000-pixel limit, is E_TOO_LARGE
    from its headers alone."""
    frame = np.asarray(Image.fromarray(rgb).resize((640, 480)))
    lying = _set_ispe(bytes(imagecodecs.avif_encode(frame, level=50, speed=9)), 10, 10)
    error = refused(lying, max_pixels=1_000)
    assert error.code == "E_TOO_LARGE" and "0.3 MP" in error.message, error.message


def _deflate_tiff(rgb: np.ndarray, widths: tuple[int, ...], heights: tuple[int, ...]) -> bytes:
    """A Deflate RGB TIFF (libtiff decodes it) whose one IFD gives ImageWidth once per ``widths`` (and
    ImageLength per ``heights``): Pillow reads the last of a repeated tag, libtiff the first."""
    strip = zlib.compress(rgb.tobytes())
    entries = ([(256, 3, w) for w in widths] + [(257, 3, h) for h in heights]
               + [(258, 3, 8), (259, 3, 8), (262, 3, 2), (273, 4, 8), (277, 3, 3), (278, 3, rgb.shape[0]),
                  (279, 4, len(strip))])
    ifd_at = 8 + len(strip) + (len(strip) & 1)
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_at) + strip)
    out += b"\x00" * (ifd_at - len(out)) + struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        out += struct.pack("<HHII", tag, kind, 1, value) if kind == 4 else struct.pack("<HHIHH", tag, kind, 1, value, 0)
    return bytes(out + struct.pack("<I", 0))


def test_a_tiff_whose_decoder_makes_another_size_than_its_header_is_corrupt(rgb: np.ndarray) -> None:
    """ImageWidth given as 64 then 1: the header (Pillow) says 1x48, libtiff decodes 64x48, and a 1x48
    image was stored from those pixels. The decoded size is checked against the header: E_CORRUPT."""
    assert decode_rgb(_deflate_tiff(rgb, (64,), (48,))).size == (64, 48)
    twice = _deflate_tiff(rgb, (64, 1), (48,))
    info = probe(twice, max_pixels=MAX)
    assert info.width == 1 and info.ambiguous  # what the header says, and that it says two things
    assert not probe(_deflate_tiff(rgb, (64,), (48,)), max_pixels=MAX).ambiguous
    error = refused(twice, decode=True)
    assert error.code == "E_CORRUPT" and "64x48" in error.message and "1x48" in error.message, error.message


def test_a_jpeg_tiff_whose_header_lies_about_its_strips_is_corrupt(rgb: np.ndarray) -> None:
    """A JPEG-compressed TIFF whose ImageWidth says 10000 (its strips are 64 px wide JPEGs): libtiff decoded
    the strips into 10000 px rows, no error, and both engines stored stripes on black (a differential sweep
    found it). The first strip's (or tile's) JPEG frame is checked against the header."""
    strips = bytes(imagecodecs.tiff_encode(rgb[:48, :64], compression="jpeg", rowsperstrip=16))
    tiles = bytes(imagecodecs.tiff_encode(rgb[:48, :64], compression="jpeg", tile=(16, 16)))
    for good in (strips, tiles):
        assert np.asarray(decode_rgb(good)).shape == (48, 64, 3)
    lied = bytearray(strips)
    order = "<" if lied[:2] == b"II" else ">"
    at = struct.unpack(order + "I", lied[4:8])[0]
    for k in range(struct.unpack(order + "H", lied[at:at + 2])[0]):
        entry = at + 2 + 12 * k
        tag, kind = struct.unpack(order + "HH", lied[entry:entry + 4])
        if tag == 256:
            struct.pack_into(order + ("H" if kind == 3 else "I"), lied, entry + 8, 10000)
    error = refused(bytes(lied))  # the header probe's verdict, before any decode
    assert error.code == "E_CORRUPT" and "64x16" in error.message and "10000x16" in error.message, error.message


def test_the_pixel_limit_takes_the_largest_size_a_tiff_claims(rgb: np.ndarray) -> None:
    error = refused(_deflate_tiff(rgb, (60000, 1), (48,)), max_pixels=10_000)
    assert error.code == "E_TOO_LARGE", error.message


# -- item 3: a TIFF's pages are never counted -----------------------------------------------------------


def many_pages(n: int) -> bytes:
    """A little-endian TIFF of ``n`` 1x1 grey pages, each IFD pointing at the next (9 MB for 80,000)."""
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    size = 2 + 12 * 9 + 4 + 2  # nine entries, the next IFD's offset, the page's one pixel (padded)
    for i in range(n):
        at = 8 + i * size
        ifd = bytearray(struct.pack("<H", 9))
        for tag, kind, value in ((256, 3, 1), (257, 3, 1), (258, 3, 8), (259, 3, 1), (262, 3, 1),
                                 (273, 4, at + size - 2), (277, 3, 1), (278, 3, 1), (279, 4, 1)):
            ifd += struct.pack("<HHII", tag, kind, 1, value) if kind == 4 else struct.pack("<HHIHH", tag, kind, 1,
                                                                                          value, 0)
        out += ifd + struct.pack("<I", at + size if i + 1 < n else 0) + bytes([(i * 37 + 200) % 256, 0])
    return bytes(out)


@pytest.fixture
def ifd_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many TIFF IFDs Pillow parses: a spy around the real parser (it still runs), because the time a
    40 s walk of 80,000 pages takes is not something a test may assert."""
    reads: list[int] = []
    real = TiffImagePlugin.ImageFileDirectory_v2.load

    def counting(self: TiffImagePlugin.ImageFileDirectory_v2, fp: object) -> None:
        reads.append(1)
        real(self, fp)  # type: ignore[arg-type]

    monkeypatch.setattr(TiffImagePlugin.ImageFileDirectory_v2, "load", counting)
    return reads


def test_the_first_page_of_an_80000_page_tiff_reads_a_few_ifds_not_all(ifd_reads: list[int]) -> None:
    data = many_pages(80_000)
    info = probe(data, max_pixels=MAX)
    img = decode_rgb(data)
    assert (info.width, info.height, info.frames) == (1, 1, 2)  # "more than one", never counted
    assert img.size == (1, 1) and img.getpixel((0, 0)) == (200, 200, 200)  # the first page
    assert len(ifd_reads) <= 8, len(ifd_reads)  # probe and decode (6 here): 80,000 before


# -- item 8: float and 32-bit RGB TIFFs, NaN and infinities -----------------------------------------------


@pytest.mark.parametrize("kind", ["float16", "float32", "float64", "uint32", "float32-deflate"])
def test_float_and_32_bit_rgb_tiffs_convert_to_their_pixels(rgb: np.ndarray, kind: str) -> None:
    dtype, _, compression = kind.partition("-")
    arr = rgb.astype(np.uint32) * 16843009 if dtype == "uint32" else (rgb / 255.0).astype(dtype)
    data = tifffile_bytes(arr, compression or None, photometric="rgb")
    info = probe(data, max_pixels=MAX)
    assert (info.mode, info.width, info.height) == ("RGB", 64, 48)
    got = np.asarray(decode_rgb(data)).astype(int)
    assert np.abs(got - rgb).max() <= 1, kind


def test_infinities_are_white_and_black_and_nan_is_refused(rgb: np.ndarray) -> None:
    grey = (rgb[:, :, 1] / 255.0).astype(np.float32)
    inf = grey.copy()
    inf[0, :8], inf[1, :8] = np.inf, -np.inf
    got = np.asarray(decode_rgb(tifffile_bytes(inf, None)))[:, :, 0].astype(int)
    assert (got[0, :8] == 255).all() and (got[1, :8] == 0).all()  # +inf was stored black
    assert np.abs(got[2:] - rgb[2:, :, 1]).max() <= 1  # the finite samples keep their scale
    nan = grey.copy()
    nan[0, :8] = np.nan
    error = refused(tifffile_bytes(nan, None), decode=True)
    assert error.code == "E_CORRUPT" and "NaN" in error.message, error.message


# -- item 15: PNG chunks over 1 MB ------------------------------------------------------------------------


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_pngs_with_large_text_and_icc_chunks_decode(rgb: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    png = buf.getvalue()
    text = b"x" * 2_000_000
    noise = np.random.default_rng(25).integers(0, 256, 2_000_000, dtype=np.uint8).tobytes()
    icc = bytearray(bytes(imagecodecs.cms_profile("srgb")) + noise)  # sRGB with a large private tail
    struct.pack_into(">I", icc, 0, len(icc))
    chunks = {"zTXt": _chunk(b"zTXt", b"XML:com.adobe.xmp\x00\x00" + zlib.compress(text)),
              "iTXt": _chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x01\x00\x00\x00" + zlib.compress(text)),
              "iCCP": _chunk(b"iCCP", b"big sRGB\x00\x00" + zlib.compress(bytes(icc)))}
    for name, chunk in chunks.items():
        data = png[:33] + chunk + png[33:]  # after IHDR
        assert probe(data, max_pixels=MAX).mode == "RGB", name
        assert np.array_equal(np.asarray(decode_rgb(data)), rgb), name


# -- round 3 (a newcomer's hostile sweep): PNG image data that disagrees with its header -----------------


def _png(rows: list[bytes], width: int, height: int, *, exif: bytes = b"") -> bytes:
    """An RGB PNG of ``rows`` (each a filter byte + its samples) whose IHDR says ``width`` x ``height``;
    every CRC valid."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    after = chunk(b"eXIf", exif) if exif else b""
    return b"\x89PNG\r\n\x1a\n" + ihdr + chunk(b"IDAT", zlib.compress(b"".join(rows))) + after + chunk(b"IEND", b"")


def test_png_image_data_that_disagrees_with_its_header_is_corrupt(rgb: np.ndarray) -> None:
    """Stored as ok with their missing rows black: a bad filter byte (Pillow's getexif() decoded the image at
    the probe and its error was taken for a damaged EXIF), data for 20 of 48 rows, and a header that says
    128x96 or 32x24 over 64x48 data. Now E_CORRUPT at the probe (so on every engine) or the decode."""
    rows = [b"\x00" + rgb[y].tobytes() for y in range(48)]
    assert np.array_equal(np.asarray(decode_rgb(_png(rows, 64, 48))), rgb)  # the honest file
    bad_filter = [*rows[:10], b"\x09" + rows[10][1:], *rows[11:]]
    for data, decode in ((_png(bad_filter, 64, 48), True), (_png(rows[:20], 64, 48), False),
                         (_png(rows, 128, 96), False), (_png(rows, 32, 24), False)):
        error = refused(data, decode=decode)
        assert error.code == "E_CORRUPT" and error.path == "x", error.message
    assert "ends after" in refused(_png(rows[:20], 64, 48)).message
    assert "more than" in refused(_png(rows, 32, 24)).message


def test_a_png_exif_block_after_the_pixels_is_read_without_decoding_them(rgb: np.ndarray) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: width and height swap
    data = _png([b"\x00" + rgb[y].tobytes() for y in range(48)], 64, 48, exif=exif.tobytes())
    info = probe(data, max_pixels=MAX)
    assert (info.orientation, info.width, info.height) == (6, 48, 64)
    assert decode_rgb(data).size == (48, 64)


# -- round 3: a harmless JPEG header warning no longer switches off the checks of the scan ---------------


def _segment(data: bytes | bytearray, marker: int) -> int:
    i = 2
    while data[i + 1] != marker:
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return i


def test_a_harmless_header_warning_leaves_the_scan_checked(rgb: np.ndarray) -> None:
    """A JFIF 2.01 header, and a baseline scan whose SOS says Se=62, are warnings about header fields that
    do not touch the pixels: decoded as the honest file is. But the first made the file E_CORRUPT (libjpeg
    warns while reading the header, even when lenient), and the second switched to a lenient decode that
    took any garbage in the scan after it: stored as ok, 50 levels off on average."""
    buf = io.BytesIO()
    Image.fromarray(rgb).resize((256, 192)).save(buf, "JPEG", quality=90)
    good = buf.getvalue()
    want = np.asarray(decode_rgb(good))
    jfif2, sos = bytearray(good), bytearray(good)
    jfif2[_segment(jfif2, 0xE0) + 9] = 2
    at = _segment(sos, 0xDA)
    sos[at + 5 + 2 * sos[at + 4] + 1] = 62
    scan = at + 2 + int.from_bytes(sos[at + 2:at + 4], "big")
    rng = np.random.default_rng(1)
    for lied in (jfif2, sos):
        assert np.array_equal(np.asarray(decode_rgb(bytes(lied))), want)
        damaged = bytearray(lied)
        middle = scan + (len(damaged) - scan) // 3
        for k in range(middle, middle + 300):
            if damaged[k] != 0xFF and damaged[k - 1] != 0xFF:
                damaged[k] = int(rng.integers(0, 0xFF))  # garbage without a marker
        assert refused(bytes(damaged), decode=True).code == "E_CORRUPT"


def test_a_header_cut_short_says_so_in_words() -> None:
    """A PNG of its 8 signature bytes said "unpack_from requires a buffer of at least 4 bytes for unpacking 4
    bytes at offset 0 (actual buffer size is 0)"; a PPM cut in its header was E_CORRUPT."""
    for data in (b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM\x00\x00", b"\xff\xd8\xff", b"II*\x00", b"P6\n"):
        error = refused(data)
        assert error.code == "E_TRUNCATED" and "the file ends inside it" in error.message, (data, error.message)
        assert "buffer" not in error.message and "unpack" not in error.message


def test_an_uncompressed_tiff_whose_size_lies_about_its_strips_is_corrupt(rgb: np.ndarray) -> None:
    """A 64x48 uncompressed TIFF whose width and height say 32x24 was stored striped (Pillow reads each row
    at the wrong width, no error): its strips hold 4x the bytes that size needs."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "TIFF")
    data = bytearray(buf.getvalue())
    at = struct.unpack("<I", data[4:8])[0]
    for k in range(struct.unpack("<H", data[at:at + 2])[0]):
        entry = at + 2 + 12 * k
        tag, kind = struct.unpack("<HH", data[entry:entry + 4])
        if tag in (256, 257):
            struct.pack_into("<H" if kind == 3 else "<I", data, entry + 8, 32 if tag == 256 else 24)
    error = refused(bytes(data))
    assert error.code == "E_CORRUPT" and "more than its 32x24 needs" in error.message, error.message
    planar = io.BytesIO()  # strips of planes and a short last strip are what their size needs
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(planar, np.ascontiguousarray(rgb.transpose(2, 0, 1)), photometric="rgb",
                     planarconfig="separate", rowsperstrip=7)
    assert np.array_equal(np.asarray(decode_rgb(planar.getvalue())), rgb)


def _scan_bomb(side: int, rounds: int) -> bytes:
    """A valid progressive grey JPEG of a flat ``side`` x ``side`` image in 1 + 63 * (rounds + 1) scans: every
    AC coefficient first at Al=13, then refined bit by bit; each scan is a few end-of-band runs."""
    def seg(marker: int, body: bytes) -> bytes:
        return struct.pack(">BBH", 0xFF, marker, len(body) + 2) + body

    blocks = (-(-side // 8)) ** 2
    eob = bytearray()
    acc = n = 0
    for v, bits in _eob_symbols(blocks):
        for i in range(bits - 1, -1, -1):
            acc, n = (acc << 1) | ((v >> i) & 1), n + 1
            if n == 8:
                eob += bytes([acc]) + (b"\x00" if acc == 0xFF else b"")
                acc = n = 0
    if n:
        eob.append((acc << (8 - n)) | ((1 << (8 - n)) - 1))
    out = bytearray(b"\xff\xd8" + seg(0xDB, b"\x00" + b"\x01" * 64))
    out += seg(0xC2, struct.pack(">BHHB", 8, side, side, 1) + b"\x01\x11\x00")
    out += seg(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00")
    out += seg(0xC4, b"\x10" + bytes([0, 0, 0, 15] + [0] * 12) + bytes(r << 4 for r in range(15)))
    dc = b"\x00" * (blocks // 8) + (bytes([(1 << (8 - blocks % 8)) - 1]) if blocks % 8 else b"")  # category 0
    out += seg(0xDA, b"\x01\x01\x00\x00\x00\x00") + dc
    for k in range(1, 64):  # each AC coefficient's first scan, at Al = 13
        out += seg(0xDA, bytes([1, 1, 0x00, k, k, 0x0D])) + bytes(eob)
    for a in range(13, 13 - rounds, -1):  # then refined one bit at a time
        for k in range(1, 64):
            out += seg(0xDA, bytes([1, 1, 0x00, k, k, (a << 4) | (a - 1)])) + bytes(eob)
    return bytes(out + b"\xff\xd9")


def _eob_symbols(n: int) -> list[tuple[int, int]]:
    """End-of-band runs covering ``n`` blocks, as (value, bits) pairs of the Huffman table above."""
    out = []
    while n > 0:
        r = min(14, n.bit_length() - 1)
        chunk = min(n, (1 << (r + 1)) - 1)
        out.append((r, 4))
        if r:
            out.append((chunk - (1 << r), r))
        n -= chunk
    return out


def test_a_progressive_jpeg_of_hundreds_of_scans_is_refused_before_decoding(rgb: np.ndarray) -> None:
    """883 scans of a 120 MP flat grey image (421 KB) took 18-20 s of CPU to decode, at any DCT scale (a
    hostile-input sweep, 2026-12-06). Encoders write at most a few dozen scans."""
    bomb = _scan_bomb(64, 13)
    assert bomb.count(b"\xff\xda") == 1 + 63 * 14
    assert refused(bomb).code == "E_TOO_LARGE" and "scans" in refused(bomb).message
    modest = _scan_bomb(64, 0)  # 64 scans: unusual but allowed, and it decodes
    assert probe(modest, max_pixels=MAX).width == 64 and decode_rgb(modest).size == (64, 64)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=80, progressive=True)
    from preprocess.pipeline.codecs import optimize_jpeg
    trailer = np.random.default_rng(1).bytes(8_000_000)  # a Motion Photo's video: ~120 FF DA byte pairs, no scans
    for ok in (buf.getvalue(), optimize_jpeg(buf.getvalue()), buf.getvalue() + trailer):
        assert probe(ok, max_pixels=MAX).width == rgb.shape[1]  # libjpeg's and mozjpeg's progressive scripts


def test_valid_jpegs_libjpeg_cannot_decode_are_unsupported_not_corrupt(rgb: np.ndarray) -> None:
    """A JPEG-LS file and a JPEG whose height is given by a DNL marker (both valid, neither decoded by
    libjpeg-turbo) were E_CORRUPT, "no image mode, or a zero width or height" (hostile input, round 5)."""
    jpeg_ls = bytes(imagecodecs.jpegls_encode(rgb))
    assert jpeg_ls.startswith(b"\xff\xd8") and b"\xff\xf7" in jpeg_ls
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90)
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">H", data, sof + 5, 0)  # height 0 in the frame header: given after the first scan
    dnl = bytes(data[:-2]) + b"\xff\xdc\x00\x04" + struct.pack(">H", rgb.shape[0]) + b"\xff\xd9"
    for valid, what in ((jpeg_ls, "JPEG-LS"), (dnl, "DNL")):
        error = refused(valid)
        assert error.code == "E_UNSUPPORTED" and what in error.message, error.message
    assert refused(bytes(data)).code == "E_CORRUPT"  # height 0 and no DNL: damage


def _webp_with_exif(rgb: np.ndarray, exif: bytes) -> bytes:
    """A lossy WebP (imagecodecs) in the extended layout: VP8X with the EXIF flag, the image, an EXIF chunk."""
    simple = bytes(imagecodecs.webp_encode(rgb, level=80))
    image = simple[12:]  # the VP8 chunk of a simple-layout file
    h, w = int(rgb.shape[0]), int(rgb.shape[1])
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0x08, 0, 0, 0]) + (w - 1).to_bytes(3, "little") \
        + (h - 1).to_bytes(3, "little")
    chunk = b"EXIF" + struct.pack("<I", len(exif)) + exif + b"\x00" * (len(exif) & 1)
    body = b"WEBP" + vp8x + image + chunk
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])  # Pillow's header reader, and ours
@pytest.mark.parametrize("value", [b"6", b"x"])
def test_an_orientation_written_as_text_is_ignored(value: bytes, fmt: str) -> None:
    """EXIF says Orientation is a SHORT. Written as ASCII, "6" was applied (Pillow's exif_transpose ignores
    it, so the engines could disagree) and "x" made a JPEG E_CORRUPT (int("x") in the header read): both
    are now ignored, as Pillow does, and the pixels are the file's (a hostile-input sweep, 2026-12-07)."""
    tiff = (b"MM\x00*" + struct.pack(">IH", 8, 1) + struct.pack(">HHI", 0x0112, 2, 2) + value + b"\x00\x00\x00"
            + struct.pack(">I", 0))
    pixels = np.full((20, 40, 3), (200, 10, 10), np.uint8)
    if fmt == "WEBP":
        data = _webp_with_exif(pixels, tiff)
    else:
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, fmt, exif=b"Exif\x00\x00" + tiff)
        data = out.getvalue()
    info = probe(data, max_pixels=MAX, path="x")
    assert info.format.upper() == fmt and info.orientation == 1 and (info.width, info.height) == (40, 20)
    assert decode_rgb(data, path="x").size == (40, 20)


def test_an_orientation_written_as_a_whole_rational_is_applied_as_pillow_does() -> None:
    """A RATIONAL 6/1 is 6 to Pillow's exif_transpose: the text rule must not turn it off (a review)."""
    from PIL import ImageOps

    tiff = (b"MM\x00*" + struct.pack(">IH", 8, 1) + struct.pack(">HHII", 0x0112, 5, 1, 26) + struct.pack(">I", 0)
            + struct.pack(">II", 6, 1))
    out = io.BytesIO()
    Image.new("RGB", (40, 20), (200, 10, 10)).save(out, "JPEG", exif=b"Exif\x00\x00" + tiff)
    info = probe(out.getvalue(), max_pixels=MAX, path="x")
    assert info.orientation == 6 and (info.width, info.height) == (20, 40)
    assert decode_rgb(out.getvalue(), path="x").size == ImageOps.exif_transpose(Image.open(out)).size == (20, 40)

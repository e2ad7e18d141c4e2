"""The AV1 frames inside an AVIF, sized from their sequence headers without decoding a pixel.

An AVIF's size box (``ispe``) is only a claim: libavif decodes the AV1 frame whatever its size (a
12000x11000 frame behind a box that says 100x100 is decoded whole, then cropped to the box). The
size a decoder really allocates is in each AV1 image item's *sequence header*
(``max_frame_width_minus_1``, ``max_frame_height_minus_1``; AV1 spec 5.5): these are read here, item
by item (``iinf`` for the item types, ``iloc`` for where each item's bytes are), so that the pixel
limit and the size check hold whatever the box says.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

Boxes = Mapping[bytes, list[tuple[int, int]]]  # a box's children: type -> [(body start, body end)]

_SEQUENCE_HEADER = 1  # obu_type of a sequence header OBU


class _Bits:
    """MSB-first bit reader (the AV1 bitstream's order); reading past the end raises IndexError."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def u(self, n: int) -> int:
        v = 0
        for _ in range(n):
            v = v << 1 | (self.data[self.pos >> 3] >> (7 - (self.pos & 7)) & 1)
            self.pos += 1
        return v

    def uvlc(self) -> int:
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros >= 32:
                return (1 << 32) - 1
        return self.u(zeros) + (1 << zeros) - 1


def _int(data: bytes, pos: int, size: int) -> int:
    if pos + size > len(data):
        raise IndexError(pos)
    return int.from_bytes(data[pos:pos + size], "big")


def item_types(data: bytes, meta: Boxes) -> dict[int, bytes]:
    """Item id -> item type (``av01``, ``grid``, ``Exif``, ...) from the ``iinf`` box."""
    out: dict[int, bytes] = {}
    for start, end in meta.get(b"iinf", [])[:1]:
        pos = start + (6 if data[start] == 0 else 8)  # version, flags, entry_count (16 or 32 bits)
        while pos + 8 <= min(end, len(data)):
            size = _int(data, pos, 4)
            if size < 8:
                raise ValueError(f"infe box of size {size}")
            if data[pos + 4:pos + 8] == b"infe" and data[pos + 8] >= 2:
                id_size = 2 if data[pos + 8] == 2 else 4
                item = _int(data, pos + 12, id_size)
                kind_at = pos + 12 + id_size + 2  # after item_ID and item_protection_index
                out[item] = data[kind_at:kind_at + 4]
            pos += size
    return out


def item_starts(data: bytes, meta: Boxes) -> dict[int, int]:
    """Item id -> the offset in ``data`` where the item's bytes start (``iloc``; ``idat`` items included)."""
    out: dict[int, int] = {}
    idat = meta.get(b"idat", [(0, 0)])[0][0]
    for start, _ in meta.get(b"iloc", [])[:1]:
        version = data[start]
        sizes = _int(data, start + 4, 2)
        offset_size, length_size, base_size = sizes >> 12, sizes >> 8 & 15, sizes >> 4 & 15
        index_size = sizes & 15 if version in (1, 2) else 0
        pos = start + 6
        count = _int(data, pos, 4 if version == 2 else 2)
        pos += 4 if version == 2 else 2
        for _ in range(count):
            id_size = 4 if version == 2 else 2
            item, pos = _int(data, pos, id_size), pos + id_size
            method = 0
            if version in (1, 2):
                method, pos = _int(data, pos, 2) & 15, pos + 2
            pos += 2  # data_reference_index
            base, pos = _int(data, pos, base_size), pos + base_size
            extents, pos = _int(data, pos, 2), pos + 2
            first = None
            for _ in range(extents):
                pos += index_size
                offset, pos = _int(data, pos, offset_size), pos + offset_size + length_size
                first = offset if first is None else first
            out[item] = base + (first or 0) + (idat if method == 1 else 0)
    return out


def _obus(data: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(obu_type, payload start, payload end) of the OBUs from ``pos``."""
    while pos < end:
        header = data[pos]
        kind, extension, has_size = header >> 3 & 15, header >> 2 & 1, header >> 1 & 1
        pos += 1 + extension
        size = end - pos
        if has_size:
            size, shift = 0, 0
            while True:  # leb128
                byte = data[pos]
                size |= (byte & 0x7F) << shift
                pos, shift = pos + 1, shift + 7
                if not byte & 0x80 or shift >= 56:
                    break
        yield kind, pos, pos + size
        pos += size


def sequence_size(header: bytes) -> tuple[int, int]:
    """(max frame width, max frame height) from a sequence header OBU's payload (AV1 spec 5.5.1)."""
    r = _Bits(header)
    r.u(4)  # seq_profile, still_picture
    if r.u(1):  # reduced_still_picture_header
        r.u(5)  # seq_level_idx[0]
    else:
        model, delay_bits = 0, 0
        if r.u(1):  # timing_info_present_flag
            r.u(64)  # num_units_in_display_tick, time_scale
            if r.u(1):  # equal_picture_interval
                r.uvlc()
            model = r.u(1)  # decoder_model_info_present_flag
            if model:
                delay_bits = r.u(5) + 1
                r.u(42)  # num_units_in_decoding_tick, buffer_removal_time_length, frame_presentation_time_length
        initial_delay = r.u(1)
        for _ in range(r.u(5) + 1):  # operating points
            r.u(12)  # operating_point_idc
            if r.u(5) > 7:  # seq_level_idx
                r.u(1)  # seq_tier
            if model and r.u(1):
                r.u(2 * delay_bits + 1)  # decoder_buffer_delay, encoder_buffer_delay, low_delay_mode_flag
            if initial_delay and r.u(1):
                r.u(4)
    width_bits, height_bits = r.u(4) + 1, r.u(4) + 1
    return r.u(width_bits) + 1, r.u(height_bits) + 1


def frame_sizes(data: bytes, meta: Boxes) -> dict[int, tuple[int, int]]:
    """Item id -> (width, height) of the largest frame each AV1 image item can hold, from the first
    sequence header in its bytes; ``ValueError`` when an AV1 item has none."""
    starts = item_starts(data, meta)
    out: dict[int, tuple[int, int]] = {}
    for item, kind in item_types(data, meta).items():
        if kind != b"av01":
            continue
        if item not in starts:
            raise ValueError(f"AV1 item {item} has no location")
        at = starts[item]
        found = next(((s, e) for k, s, e in _obus(data, at, min(len(data), at + 4096)) if k == _SEQUENCE_HEADER), None)
        if found is None:
            raise ValueError(f"AV1 item {item} has no sequence header")
        out[item] = sequence_size(data[found[0]:found[1]])
    return out


def item_properties(data: bytes, ipma: tuple[int, int], item: int) -> set[int]:
    """The 1-based ``ipco`` property indices the ``ipma`` box (body ``ipma``) associates with ``item``."""
    start, end = ipma
    version, flags = data[start], _int(data, start + 1, 3)
    pos, count = start + 8, _int(data, start + 4, 4)
    for _ in range(count):
        id_size = 2 if version < 1 else 4
        this, n = _int(data, pos, id_size), _int(data, pos + id_size, 1)
        pos += id_size + 1
        size = 2 if flags & 1 else 1
        found = {_int(data, pos + k * size, size) & (0x7FFF if size == 2 else 0x7F) for k in range(n)}
        pos += n * size
        if this == item:
            return found
        if pos > end:
            break
    return set()


def primary_item(data: bytes, meta: Boxes) -> int | None:
    """The primary item's id (``pitm``), or None."""
    for start, _ in meta.get(b"pitm", [])[:1]:
        return _int(data, start + 4, 2 if data[start] == 0 else 4)
    return None

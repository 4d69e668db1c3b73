"""Bit-packing of b-bit signed codes into a uint8 stream, pure numpy.

A code c in [-2^(b-1), 2^(b-1)) is stored as its b-bit two's complement u = c mod 2^b. The u's
are written one after another, most significant bit first, into exactly ceil(n·b / 8) bytes;
only the last byte may hold padding (zero bits): ``pack_codes`` / ``unpack_codes``.

The compact format puts several weights' codes in one stream, one segment each
(``pack_segment``), and the ONNX function of :mod:`inq_onnx.export.decode_op` reads it in
fields of m codes (``Fields``), one table lookup per field: ONNX Runtime's constant folding pays
per lookup, so a big stream is read in wide fields of up to 16 bits (``WIDE_CODES_PER_FIELD``; a
table of 2^16 rows), a small one in narrow fields of about a byte (``CODES_PER_FIELD``), whose
table costs less to build than the lookups it saves (``choose_fields``). A field of 8 or 16 bits
is one element of the stored stream (uint8, or uint16 holding two stream bytes, the first as
its high byte). Big streams take element fields instead (``element_layouts``, ``element_fields``):
each field a whole uint8 or uint16, so that a Cast reads them. ``field_indices`` and
``field_table`` are the decode functions' numpy reference; the two must change together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from inq_onnx.codebook import check_bits


PACK_CHUNK = 1 << 20  # codes packed at a time (a multiple of 8), so temporaries stay small


def packed_size(count: int, bits: int) -> int:
    """Bytes that ``count`` codes of ``bits`` bits take: ceil(count·bits / 8)."""
    return (int(count) * check_bits(bits) + 7) // 8


def code_range(bits: int) -> tuple[int, int]:
    """The smallest and largest code a b-bit two's complement field holds."""
    half = 1 << (check_bits(bits) - 1)
    return -half, half - 1


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """The flattened ``codes`` (C order) as a uint8 stream of ceil(n·b/8) bytes, MSB first.

    Raises ValueError if a code does not fit in ``bits`` bits.
    """
    bits = check_bits(bits)
    flat = np.asarray(codes).reshape(-1)
    low, high = code_range(bits)
    if flat.size and (flat.min() < low or flat.max() > high):
        raise ValueError(f"codes must lie in [{low}, {high}] for {bits} bits, got [{flat.min()}, {flat.max()}]")
    if flat.size > PACK_CHUNK:  # 8 codes of b bits end on a byte boundary: chunks pack independently
        return np.concatenate([pack_codes(flat[i:i + PACK_CHUNK], bits) for i in range(0, flat.size, PACK_CHUNK)])
    unsigned = (flat.astype(np.int16) & ((1 << bits) - 1)).astype(np.uint8)
    # each code's b low bits, MSB first: unpackbits gives 8 bits per byte, keep the last b
    bit_rows = np.unpackbits(unsigned[:, None], axis=1)[:, 8 - bits:]
    return np.packbits(bit_rows.reshape(-1))  # pads the last byte with zeros


def unpack_codes(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``count`` int8 codes read from the stream."""
    bits = check_bits(bits)
    packed = np.asarray(packed, dtype=np.uint8).reshape(-1)
    if packed.size != packed_size(count, bits):
        raise ValueError(f"{count} codes of {bits} bits take {packed_size(count, bits)} bytes, got {packed.size}")
    stream = np.unpackbits(packed, count=int(count) * bits).reshape(-1, bits)
    unsigned = _rows_to_uint(stream, bits)
    signed = unsigned.astype(np.int16)
    signed[signed >= (1 << (bits - 1))] -= 1 << bits
    return signed.astype(np.int8)


def _rows_to_uint(stream: np.ndarray, bits: int) -> np.ndarray:
    """Rows of b bits (MSB first) as unsigned integers: left-align them in a byte, then pack."""
    padded = np.zeros((stream.shape[0], 8), dtype=np.uint8)
    padded[:, :bits] = stream
    return np.packbits(padded, axis=1).reshape(-1) >> (8 - bits)


@dataclass(frozen=True)
class Fields:
    """How the decode function reads a b-bit stream: ``m`` codes per table index.

    The stream is cut into groups of ``group_bytes`` bytes holding ``fields`` fields of
    ``width`` bits each. A field starts at bit r of some byte and ends within the two bytes
    after it (r + width <= 24), so a 24-bit window of three bytes always holds it (exact in
    float32). A field of 8 or 16 bits is one element of the stored stream (``whole``): a uint8,
    or a uint16 of two stream bytes.

    A field holds its m codes side by side (m·b bits), or with ``radix`` as the m digits of one
    number in base K = 2^(b-1) + 1, digit c + 2^(b-2) for code c: the codebook's codes are
    -2^(b-2) .. 2^(b-2), K values, so b bits waste some (4 bits hold 9 values; 3 codes take
    10 bits instead of 12). Radix streams cannot hold the code of a negative zero.

    With ``element`` (radix only) a field is one whole uint8 or uint16 of the stream even when
    K^m needs fewer bits (4 codes of 4 bits, 6561 values, in 16 bits): the decode is then a Cast,
    where a field across bytes costs ONNX Runtime several full passes over the stream.
    """

    bits: int
    m: int
    radix: bool = False
    element: bool = False

    def __post_init__(self):
        if self.element and not self.radix:
            raise ValueError("element fields are radix fields")

    @property
    def base(self) -> int:
        return (1 << (self.bits - 1)) + 1 if self.radix else 1 << self.bits

    @property
    def rows(self) -> int:
        """Rows of the lookup table: every value a field can hold."""
        return self.base ** self.m

    @property
    def width(self) -> int:
        bits = (self.rows - 1).bit_length()
        return (8 if bits <= 8 else 16) if self.element else bits

    @property
    def group_bytes(self) -> int:
        return math.lcm(8, self.width) // 8

    @property
    def fields(self) -> int:
        return math.lcm(8, self.width) // self.width

    @property
    def group_codes(self) -> int:
        return self.fields * self.m

    @property
    def byte_aligned(self) -> bool:
        return self.width == 8

    @property
    def whole(self) -> bool:
        """Each field is one element of the stored stream (uint8 or uint16)."""
        return self.width in (8, 16)

    @property
    def dtype(self) -> np.dtype:
        """The stored stream's element type."""
        return np.dtype(np.uint16 if self.width == 16 else np.uint8)

    @property
    def wide(self) -> bool:
        return self.m != (RADIX_CODES_PER_FIELD if self.radix else CODES_PER_FIELD)[self.bits]

    @property
    def bits_per_code(self) -> float:
        return self.width / self.m


CODES_PER_FIELD = {2: 4, 3: 4, 4: 2, 5: 2, 6: 2, 7: 1, 8: 1}
WIDE_CODES_PER_FIELD = {2: 8, 3: 5, 4: 4, 5: 3, 6: 2, 7: 2, 8: 2}  # width <= 16: a 2^16-row table at most
RADIX_CODES_PER_FIELD = {2: 5, 3: 3, 4: 3, 5: 2, 6: 2, 7: 2, 8: 2}  # tables of 125 to 16,641 rows
RADIX_WIDE_CODES_PER_FIELD = {2: 10, 3: 6, 4: 5, 5: 3, 6: 3, 7: 2, 8: 2}  # K^m < 2^16


def fields_of(bits: int, wide: bool = False, radix: bool = False) -> Fields:
    table = {(False, False): CODES_PER_FIELD, (True, False): WIDE_CODES_PER_FIELD,
             (False, True): RADIX_CODES_PER_FIELD, (True, True): RADIX_WIDE_CODES_PER_FIELD}[(wide, radix)]
    return Fields(check_bits(bits), table[bits], radix)


def choose_fields(bits: int, count: int, tables: int = 1, negative_zero: bool = False) -> Fields:
    """The field layout for ``count`` codes of ``bits`` bits read by one unpack call that needs
    ``tables`` copies of its table (one per exponent n2 its weights share, plus the unscaled one).

    Radix fields unless a code is a negative zero's: fewer bytes, as many codes per lookup or
    more and smaller tables than side by side. Wide fields when the lookups they save outnumber
    the table entries they build: at session creation ONNX Runtime pays about as much per lookup
    as per table entry it computes (measured on 320n and a 200 MB model: a 2^16-row table per
    exponent outweighs the saved lookups on the first, and not on the second).
    """
    narrow, wide = fields_of(bits, radix=not negative_zero), fields_of(bits, wide=True, radix=not negative_zero)
    saved = count // narrow.m - count // wide.m
    return wide if saved >= wide.rows * wide.m * tables else narrow


MAX_WIDTH = 16  # the decode function reads fields of at most 16 bits (tables of 2^16 rows at most)


TABLE_SHARE = 8
"""Element layouts build at most 1/TABLE_SHARE as many table entries (rows · m · tables) as they
decode codes: at session creation a table entry costs ONNX Runtime several times a code."""
TABLE_COST = 3
"""Lookups a table entry costs at session creation (measured on 320n: 8 codes in 16 bits at 2 b,
6561 rows for 7 exponents, lost to 4 codes in 8 bits; at 4 b 4 codes in 16 bits won over 2 in 8)."""
SLICE_SLACK = 1.0
"""A weight whose size no layout of about b bits per code divides may take one of up to this many
more bits per code that does: slicing padding codes off costs ONNX Runtime two more passes over
its values at session creation (3 bits: 4 codes in 16 bits for a 1x1 kernel of 256 x 512)."""


def element_layouts(bits: int, count: int, tables: int = 1) -> list[Fields]:
    """The element layouts for ``count`` codes of ``bits`` bits whose weights share ``tables``
    tables: m codes in one uint8 or uint16, tables within the budget (``TABLE_SHARE``), at most
    max(b, the fewest any layout reaches) bits per code (5 and 6 bits: 3 codes in 16 bits) plus
    ``SLICE_SLACK`` (``element_fields`` takes those only to avoid a slice). Empty when none is
    left (7 bits: none below 8 bits per code)."""
    if about_b(bits) > bits + 0.5:
        return []
    layouts = [f for f in _elements(bits) if f.bits_per_code <= about_b(bits) + SLICE_SLACK
               and f.rows * f.m * tables * TABLE_SHARE <= count]
    return [f for f in layouts if all(worth_its_table(f, g, count, tables) for g in layouts)]


def worth_its_table(wide: Fields, narrow: Fields, count: int, tables: int) -> bool:
    """Whether ``wide`` saves more than its bigger table costs, against ``narrow`` of as many bits
    per code (2 bits: 8 codes in 16 bits, 6561 rows, or 4 in 8 bits, 81 rows). At session creation
    ONNX Runtime pays about TABLE_COST lookups per table entry it builds."""
    if narrow.bits_per_code != wide.bits_per_code or narrow.m >= wide.m:
        return True
    saved = count // narrow.m - count // wide.m
    return saved >= TABLE_COST * (wide.rows * wide.m - narrow.rows * narrow.m) * tables


def _elements(bits: int) -> list[Fields]:
    layouts = [Fields(check_bits(bits), m, radix=True, element=True) for m in range(1, 11)]
    return [f for f in layouts if f.rows <= 1 << MAX_WIDTH]


def about_b(bits: int) -> float:
    """The most bits per code an element layout of about b bits takes: b, or the fewest any takes."""
    return max(bits, min(f.bits_per_code for f in _elements(bits)))


def element_fields(layouts: list[Fields], shape: tuple[int, ...]) -> Fields:
    """The element layout for one weight of ``shape``, of ``layouts`` (``element_layouts``).

    Of those of about b bits per code, one whose m is the weight's last dimension first: one
    lookup then gives the weight in its shape, without a reshape. Else one whose m divides the
    weight's size (no padding code to slice off), then the fewest bits per code, then the most
    codes per field (fewer lookups); the wider layouts only where none of about b bits divides it.
    """
    count, limit = math.prod(shape), about_b(layouts[0].bits)
    direct = [f for f in layouts if len(shape) >= 2 and f.m == shape[-1] and f.bits_per_code <= limit]
    if direct:
        return direct[0]
    return min(layouts, key=lambda f: (count % f.m != 0, f.bits_per_code > limit, f.bits_per_code, -f.m))


def _as_layout(layout: Fields | int) -> Fields:
    return layout if isinstance(layout, Fields) else fields_of(layout)


def pack_segment(codes: np.ndarray, layout: Fields | int) -> np.ndarray:
    """One tensor's codes as it sits in a shared stream (``layout``, or the narrow layout of a
    bit-width), as elements of ``layout.dtype``: zero codes fill its last group.

    For 8-bit fields that is ceil(n·b/8) bytes (padding only in the last byte); otherwise
    ceil(n / group_codes) whole groups, so the next tensor starts on a group boundary.
    """
    layout = _as_layout(layout)
    flat = np.asarray(codes).reshape(-1)
    total = -(-flat.size // layout.group_codes) * layout.group_codes
    padded = flat if layout.byte_aligned and not layout.radix else np.concatenate([flat, np.zeros(total - flat.size, flat.dtype)])
    packed = pack_radix(padded, layout) if layout.radix else pack_codes(padded, layout.bits)
    return packed.view(">u2").astype(np.uint16) if layout.width == 16 else packed


def pack_radix(codes: np.ndarray, layout: Fields) -> np.ndarray:
    """Codes (a whole number of fields) as one base-K number per field, ``width`` bits each, MSB
    first, as a uint8 stream. Raises ValueError for a code outside the codebook's range."""
    half = levels(layout.bits)
    flat = np.asarray(codes).reshape(-1, layout.m).astype(np.int64)
    if flat.size and (flat.min() < -half or flat.max() > half):
        raise ValueError(f"radix fields hold codes in [{-half}, {half}], got [{flat.min()}, {flat.max()}]")
    numbers = (flat + half) @ (layout.base ** np.arange(layout.m - 1, -1, -1, dtype=np.int64))
    bit_rows = np.unpackbits(numbers.astype(">u2").view(np.uint8).reshape(-1, 2), axis=1)[:, 16 - layout.width:]
    return np.packbits(bit_rows.reshape(-1))


def levels(bits: int) -> int:
    """Codes of a b-bit codebook lie in [-levels, levels]: 2^(b-2) powers of two per sign."""
    return 1 << (bits - 2)


def segment_indices(size: int, layout: Fields | int) -> int:
    """How many table indices (fields) a segment of ``size`` stream elements yields."""
    layout = _as_layout(layout)
    nbytes = size * layout.dtype.itemsize
    return nbytes // layout.group_bytes * layout.fields


def padded_fields(count: int, layout: Fields | int) -> int:
    """How many fields a segment of ``count`` codes takes (``pack_segment``: whole groups, or whole
    fields for 8- and 16-bit fields)."""
    layout = _as_layout(layout)
    unit = layout.m if layout.whole else layout.group_codes
    return -(-count // unit) * unit // layout.m


def segment_rows(size: int, layout: Fields | int) -> int:
    """How many rows of the function's ``indices`` a segment of ``size`` stream elements yields:
    its fields for 8- and 16-bit fields, else its groups."""
    layout = _as_layout(layout)
    return segment_indices(size, layout) // (1 if layout.whole else layout.fields)


def field_indices(packed: np.ndarray, layout: Fields | int) -> np.ndarray:
    """Reference for the function's first output: each field's m codes as one integer (int32),
    [fields] for 8- and 16-bit fields, else [groups, fields per group]."""
    layout = _as_layout(layout)
    packed = np.asarray(packed).reshape(-1)
    if packed.dtype != layout.dtype:
        raise ValueError(f"a stream of {layout.width}-bit fields is {layout.dtype}, got {packed.dtype}")
    if layout.whole:
        return packed.astype(np.int32)
    if packed.size % layout.group_bytes:
        raise ValueError(f"a {layout.bits}-bit stream holds whole groups of {layout.group_bytes} bytes, "
                         f"got {packed.size} bytes")
    rows = np.unpackbits(packed).reshape(-1, layout.width)
    weights = np.left_shift(1, np.arange(layout.width - 1, -1, -1)).astype(np.int32)
    return (rows.astype(np.int32) @ weights).reshape(-1, layout.fields)


def field_table(layout: Fields | int, units: np.ndarray) -> np.ndarray:
    """Reference for the second output: [rows, m], row y = the unit values of y's m codes."""
    layout = _as_layout(layout)
    y = np.arange(layout.rows)[:, None]
    if layout.radix:  # digit d is code d - levels, whose b-bit two's complement indexes units
        digits = y // layout.base ** np.arange(layout.m - 1, -1, -1) % layout.base
        return np.asarray(units)[(digits - levels(layout.bits)) % (1 << layout.bits)]
    shifts = layout.bits * np.arange(layout.m - 1, -1, -1)
    return np.asarray(units)[(y >> shifts) & ((1 << layout.bits) - 1)]

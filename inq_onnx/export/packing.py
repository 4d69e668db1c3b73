"""Bit-packing of b-bit signed codes into a uint8 stream, pure numpy.

A code c in [-2^(b-1), 2^(b-1)) is stored as its b-bit two's complement u = c mod 2^b. The u's
are written one after another, most significant bit first, into exactly ceil(n·b / 8) bytes;
only the last byte may hold padding (zero bits): ``pack_codes`` / ``unpack_codes``.

The compact format puts several weights' codes in one stream, one segment each
(``pack_segment``), and the ONNX function of :mod:`inq_onnx.export.decode_op` reads it in
fields of m codes (``Fields``), one table lookup per field: ONNX Runtime's constant folding pays
per lookup, so fields are as wide as a two-byte window allows. ``field_indices`` and
``field_table`` are that function's numpy reference; the two must change together.
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
    ``m`` codes (``width`` = m·b bits) each. A field starts at bit r of some byte and ends
    within the next one (r + width <= 16), so a 16-bit window of two bytes always holds it.
    For b in {2, 4, 8} a field is a whole byte (one group = one byte).
    """

    bits: int
    m: int

    @property
    def width(self) -> int:
        return self.m * self.bits

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


CODES_PER_FIELD = {2: 4, 3: 4, 4: 2, 5: 2, 6: 2, 7: 1, 8: 1}


def fields_of(bits: int) -> Fields:
    return Fields(check_bits(bits), CODES_PER_FIELD[bits])


def pack_segment(codes: np.ndarray, bits: int) -> np.ndarray:
    """One tensor's codes as it sits in a shared stream: zero codes fill its last group.

    For b in {2, 4, 8} that is ceil(n·b/8) bytes (padding only in the last byte); otherwise
    ceil(n / group_codes) whole groups, so the next tensor starts on a group boundary.
    """
    layout = fields_of(bits)
    flat = np.asarray(codes).reshape(-1)
    total = -(-flat.size // layout.group_codes) * layout.group_codes
    padded = flat if layout.byte_aligned else np.concatenate([flat, np.zeros(total - flat.size, flat.dtype)])
    return pack_codes(padded, bits)


def segment_indices(nbytes: int, bits: int) -> int:
    """How many table indices (fields) a segment of ``nbytes`` bytes yields."""
    layout = fields_of(bits)
    return nbytes // layout.group_bytes * layout.fields


def field_indices(packed: np.ndarray, bits: int) -> np.ndarray:
    """Reference for the function's first output: each field's m codes as one integer (int32)."""
    layout = fields_of(bits)
    packed = np.asarray(packed, dtype=np.uint8).reshape(-1)
    if layout.byte_aligned:
        return packed.astype(np.int32)
    if packed.size % layout.group_bytes:
        raise ValueError(f"a {bits}-bit stream holds whole groups of {layout.group_bytes} bytes, "
                         f"got {packed.size} bytes")
    rows = np.unpackbits(packed).reshape(-1, layout.width)
    weights = np.left_shift(1, np.arange(layout.width - 1, -1, -1)).astype(np.int32)
    return rows.astype(np.int32) @ weights


def field_table(bits: int, units: np.ndarray) -> np.ndarray:
    """Reference for the second output: [2^width, m], row y = the unit values of y's m codes."""
    layout = fields_of(bits)
    y = np.arange(1 << layout.width)[:, None]
    shifts = bits * np.arange(layout.m - 1, -1, -1)
    return np.asarray(units)[(y >> shifts) & ((1 << bits) - 1)]

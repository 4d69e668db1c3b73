"""Bit-packing: exact sizes, MSB-first layout, round trips, and the field layout's invariants."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inq_onnx.export import decode_op, packing


@st.composite
def codes_and_bits(draw):
    bits = draw(st.integers(2, 8))
    low, high = packing.code_range(bits)
    codes = draw(st.lists(st.integers(low, high), min_size=0, max_size=70))
    return np.array(codes, dtype=np.int8), bits


@settings(max_examples=150, deadline=None)
@given(codes_and_bits())
def test_pack_unpack_round_trip_with_no_padding_beyond_the_last_byte(case):
    codes, bits = case
    packed = packing.pack_codes(codes, bits)
    assert packed.dtype == np.uint8 and packed.size == (codes.size * bits + 7) // 8
    np.testing.assert_array_equal(packing.unpack_codes(packed, bits, codes.size), codes)
    spare = packed.size * 8 - codes.size * bits
    if spare:
        assert packed[-1] & ((1 << spare) - 1) == 0  # the padding bits are zeros


def test_layout_is_msb_first_twos_complement():
    # 3 bits: 1 -> 001, -1 -> 111, 3 -> 011, -4 -> 100 ; stream 001 111 011 100 (+ 4 zero bits)
    packed = packing.pack_codes(np.array([1, -1, 3, -4]), 3)
    assert packed.tolist() == [0b00111101, 0b11000000]
    assert packing.pack_codes(np.array([-1, 1, 0, -2]), 2).tolist() == [0b11010010]


def test_codes_that_do_not_fit_are_refused():
    with pytest.raises(ValueError, match=r"\[-4, 3\]"):
        packing.pack_codes(np.array([4]), 3)
    with pytest.raises(ValueError, match="take 1 bytes"):
        packing.unpack_codes(np.zeros(2, np.uint8), 4, 2)


def test_a_million_codes_round_trip():
    codes = np.random.default_rng(0).integers(-16, 16, size=1_000_001).astype(np.int8)
    packed = packing.pack_codes(codes, 5)
    assert packed.size == 625_001
    assert np.array_equal(packing.unpack_codes(packed, 5, codes.size), codes)


@pytest.mark.parametrize("bits", range(2, 9))
def test_every_field_fits_a_two_byte_window(bits):
    layout = packing.fields_of(bits)
    assert layout.group_codes * bits == layout.group_bytes * 8
    for t in range(layout.fields):
        start = t * layout.width
        assert start % 8 + layout.width <= 16
    if bits in (2, 4, 8):
        assert layout.byte_aligned and layout.group_bytes == 1


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("count", [1, 7, 8, 9, 100])
def test_segments_and_field_indices(bits, count):
    rng = np.random.default_rng(count)
    low, high = packing.code_range(bits)
    codes = rng.integers(low, high + 1, size=count)
    segment = packing.pack_segment(codes, bits)
    layout = packing.fields_of(bits)
    if layout.byte_aligned:
        assert segment.size == (count * bits + 7) // 8  # padding only in the last byte
    else:
        assert segment.size == -(-count // layout.group_codes) * layout.group_bytes  # whole groups
    indices = packing.field_indices(segment, bits).reshape(-1)
    assert indices.size == packing.segment_indices(segment.size, bits)
    # each index holds m codes, MSB first: splitting it again gives the codes back
    unsigned = (indices[:, None] >> (bits * np.arange(layout.m - 1, -1, -1))) & ((1 << bits) - 1)
    back = np.where(unsigned >= 1 << (bits - 1), unsigned - (1 << bits), unsigned).reshape(-1)
    np.testing.assert_array_equal(back[:count], codes)
    assert not back[count:].any()


@pytest.mark.parametrize("bits", [3, 5, 8])
def test_chunked_packing_equals_packing_at_once(monkeypatch, bits):
    codes = np.random.default_rng(bits).integers(-(1 << (bits - 2)), (1 << (bits - 2)) + 1, size=1001).astype(np.int8)
    whole = packing.pack_codes(codes, bits)
    monkeypatch.setattr(packing, "PACK_CHUNK", 64)
    np.testing.assert_array_equal(packing.pack_codes(codes, bits), whole)


def test_wide_fields_only_where_the_saved_lookups_outweigh_the_tables():
    nz = dict(negative_zero=True)  # streams with a negative zero's code: fields side by side
    assert packing.choose_fields(4, 1000, **nz) == packing.fields_of(4)  # a small model: narrow
    assert packing.choose_fields(4, 50_000_000, tables=4, **nz) == packing.fields_of(4, wide=True)
    assert packing.choose_fields(4, 3_000_000, tables=9, **nz) == packing.fields_of(4)  # many exponents
    assert packing.choose_fields(6, 50_000_000, **nz) == packing.fields_of(6)  # 6 bits: no wider field
    assert packing.choose_fields(4, 1000) == packing.fields_of(4, radix=True)
    assert packing.choose_fields(4, 50_000_000, tables=4) == packing.fields_of(4, wide=True, radix=True)
    for bits in range(2, 9):
        for radix in (False, True):
            narrow, wide = packing.fields_of(bits, radix=radix), packing.fields_of(bits, wide=True, radix=radix)
            assert wide.width <= 16 and wide.m >= narrow.m
        binary, radix = packing.fields_of(bits), packing.fields_of(bits, radix=True)
        assert radix.width / radix.m < bits and radix.m >= binary.m - 1  # fewer bits per code
        assert packing.fields_of(bits, wide=True, radix=True).width / packing.fields_of(bits, wide=True, radix=True).m < bits


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("count", [1, 7, 100])
def test_radix_fields_give_every_code_back(bits, wide, count):
    layout = packing.fields_of(bits, wide=wide, radix=True)
    half = 1 << (bits - 2)
    codes = np.random.default_rng(count).integers(-half, half + 1, size=count)
    codes[:2] = [-half, half][:count]
    segment = packing.pack_segment(codes, layout)
    assert segment.dtype == layout.dtype
    assert segment.size * segment.itemsize == -(-count // layout.group_codes) * layout.group_bytes
    indices = packing.field_indices(segment, layout).reshape(-1)
    assert indices.max() < layout.rows
    units = decode_op.unit_table(bits)
    values = packing.field_table(layout, units)[indices].reshape(-1)
    expected = units[codes % (1 << bits)]
    assert values[:count].tobytes() == expected.astype(np.float32).tobytes() and not values[count:].any()
    with pytest.raises(ValueError, match="radix fields hold codes"):
        packing.pack_segment(np.array([-half - 1]), layout)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_sixteen_bit_fields_are_two_stream_bytes_the_first_high(bits):
    layout = packing.fields_of(bits, wide=True)
    codes = np.random.default_rng(bits).integers(*packing.code_range(bits), size=37)
    words = packing.pack_segment(codes, layout)
    assert words.dtype == np.uint16 and words.size * 2 * 8 >= 37 * bits
    stream = packing.pack_codes(np.concatenate([codes, np.zeros(words.size * layout.m - 37, int)]), bits)
    np.testing.assert_array_equal(words, stream[0::2].astype(np.uint16) * 256 + stream[1::2])


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("count", [1, 7, 100])
def test_element_fields_are_whole_stream_elements_and_give_every_code_back(bits, count):
    layouts = packing.element_layouts(bits, 1 << 40)
    assert (layouts == []) == (bits == 7)  # 7 bits: no element layout below 8 bits per code
    for layout in layouts:
        assert layout.whole and layout.rows <= 1 << layout.width and layout.bits_per_code <= max(bits, 16 / 3)
        half = 1 << (bits - 2)
        codes = np.random.default_rng(count).integers(-half, half + 1, size=count)
        codes[:2] = [-half, half][:count]
        segment = packing.pack_segment(codes, layout)
        assert segment.dtype == layout.dtype and segment.size == -(-count // layout.m)
        indices = packing.field_indices(segment, layout)
        units = decode_op.unit_table(bits)
        values = packing.field_table(layout, units)[indices].reshape(-1)
        assert values[:count].tobytes() == units[codes % (1 << bits)].tobytes() and not values[count:].any()


def test_element_layouts_keep_their_tables_small_and_prefer_one_lookup_per_last_axis():
    assert [f.m for f in packing.element_layouts(4, 50_000_000, tables=3)] == [2, 4, 5]
    assert [f.m for f in packing.element_layouts(4, 3_000_000, tables=7)] == [2, 4]  # 59,049 rows: too big
    assert packing.element_layouts(6, 3_000_000, tables=7) == []
    # 2 bits, 2 codes per bit: 8 in 16 bits saves fewer lookups than its 6561-row tables cost, 4 in 8 bits
    assert [f.m for f in packing.element_layouts(2, 3_000_000, tables=7) if f.bits_per_code == 2] == [4]
    assert [f.m for f in packing.element_layouts(2, 50_000_000, tables=3) if f.bits_per_code == 2] == [4, 8]
    layouts = packing.element_layouts(3, 50_000_000, tables=3)
    assert packing.element_fields(layouts, (64, 32, 3, 3)).m == 3  # the last axis: no reshape
    assert packing.element_fields(layouts, (64, 48, 1, 1)).m == 6  # 8/3 bits, then the most codes
    # no layout of about 3 bits divides 2048 codes: 4 in 16 bits rather than a slice
    assert packing.element_fields(layouts, (64, 32, 1, 1)).m == 4
    assert packing.element_fields(layouts, (7, 7)).m == 6  # nothing divides 49: the fewest bits, sliced
    layouts = packing.element_layouts(4, 50_000_000, tables=3)
    assert packing.element_fields(layouts, (4096, 4096)).m == 4  # 5 does not divide: no slice
    assert packing.element_fields(layouts, (4000, 1000)).m == 5
    with pytest.raises(ValueError, match="radix"):
        packing.Fields(4, 2, element=True)

"""Codebook math against an independent reference written from INQ.md's formulas."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from inq_onnx import codebook

finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, width=32)
weights = arrays(np.float32, st.integers(1, 60), elements=finite).filter(lambda w: np.any(w != 0))
bits = st.integers(2, 8)


def reference_n1(w):
    return math.floor(math.log2(4 * float(np.max(np.abs(w))) / 3))


def reference_round(x: float, n1: int, b: int) -> float:
    """Eq. 4 written out: walk the sorted non-negative codebook and test each interval."""
    n2 = n1 + 1 - 2 ** (b - 1) // 2
    levels = [0.0] + [2.0**k for k in range(n2, n1 + 1)]
    a = abs(x)
    if a >= 1.5 * levels[-1]:
        return math.copysign(levels[-1], x)
    for alpha, beta in zip(levels, levels[1:]):
        if (alpha + beta) / 2 <= a < 1.5 * beta:
            return math.copysign(beta, x)
    return 0.0


def test_paper_table():
    cb = codebook.Codebook(bits=5, n1=np.array(0))
    assert cb.values().size == 17 and int(cb.n1 - cb.n2) == 7
    for b, size in ((4, 9), (3, 5), (2, 3)):
        assert codebook.Codebook(bits=b, n1=np.array(-1)).values().size == size


@settings(max_examples=200, deadline=None)
@given(w=weights, b=bits)
def test_matches_reference(w, b):
    cb = codebook.make_codebook(w, b)
    assert int(cb.n1.reshape(())) == reference_n1(w)
    q = codebook.quantize(w, cb)
    expected = [reference_round(float(x), reference_n1(w), b) for x in w]
    np.testing.assert_array_equal(q.astype(np.float64), np.array(expected))


@settings(max_examples=100, deadline=None)
@given(w=weights, b=bits)
def test_outputs_in_codebook_nearest_and_idempotent(w, b):
    cb = codebook.make_codebook(w, b)
    q = codebook.quantize(w, cb)
    values = cb.values()
    assert np.all(np.isin(q, values))
    assert np.all(codebook.in_codebook(q, cb))
    dist = np.abs(w.astype(np.float64)[:, None] - values[None, :])
    chosen = np.abs(w.astype(np.float64) - q)
    assert np.all(chosen <= dist.min(axis=1) + 1e-12 * np.abs(w))  # nearest (ties resolved upwards)
    np.testing.assert_array_equal(codebook.quantize(q, cb), q)


@settings(max_examples=100, deadline=None)
@given(w=weights, b=bits)
def test_codes_round_trip(w, b):
    cb = codebook.make_codebook(w, b)
    q = codebook.quantize(w, cb)
    codes = codebook.encode(q, cb)
    assert codes.dtype == np.int8 and np.abs(codes).max() <= 2 ** (b - 2)
    np.testing.assert_array_equal(codebook.decode(codes, cb, q.dtype), q)


def test_tie_rule_midpoints_go_up_and_small_values_vanish():
    cb = codebook.Codebook(bits=4, n1=np.array(0))  # P = 0, ±1/8 .. ±1
    w = np.array([0.75, 0.7499, 0.0625, 0.0624, 3/16, -0.75, 1.5, 7.0])
    np.testing.assert_array_equal(codebook.quantize(w, cb), [1, 0.5, 0.125, 0, 0.25, -1, 1, 1])


def test_per_channel_has_one_n1_per_output_channel():
    w = np.stack([np.full((2, 3), 0.9), np.full((2, 3), 0.1), np.zeros((2, 3))])
    cb = codebook.make_codebook(w, 4, channel_axes=(0,))
    assert cb.n1.shape == (3, 1, 1)
    assert cb.n1.ravel().tolist() == [0, -3, 0]  # the zero channel falls back to the tensor's n1
    np.testing.assert_array_equal(codebook.quantize(w, cb)[:, 0, 0], [1.0, 0.125, 0.0])


def test_encode_rejects_values_off_the_codebook():
    cb = codebook.Codebook(bits=3, n1=np.array(0))
    with pytest.raises(ValueError, match="not in the codebook"):
        codebook.encode(np.array([0.5, 0.3]), cb)


@pytest.mark.parametrize("bad", [1, 9, 0, -3, "four", 4.0, True])
def test_bits_out_of_range(bad):
    with pytest.raises(ValueError, match="from 2 to 8"):
        codebook.check_bits(bad)


def test_all_zero_and_nonfinite_tensors_are_refused():
    with pytest.raises(ValueError, match="all zeros"):
        codebook.make_codebook(np.zeros(4), 4)
    with pytest.raises(ValueError, match="NaN"):
        codebook.make_codebook(np.array([1.0, np.nan]), 4)


def test_float16_keeps_dtype_and_values():
    w = np.array([0.3, -0.01, 2.0], np.float16)
    q = codebook.quantize(w, codebook.make_codebook(w, 5))
    assert q.dtype == np.float16 and q.tolist() == [0.25, -0.015625, 2.0]  # n2 = -6: 0.01 >= 2^-7 rounds up to 2^-6


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("axes", [(), (0,)])
def test_float32_rounding_is_bit_identical_to_the_float64_path(bits, axes):
    """quantize rounds float32 on its bit pattern; the float64 frexp path must give the same bits,
    on midpoints, clamps, tiny values, signed zeros and subnormals (which round to +0 on the bit pattern)."""
    rng = np.random.default_rng(bits)
    w = (rng.standard_normal((64, 300)) * np.exp2(rng.integers(-20, 20, size=(64, 1)))).astype(np.float32)
    top = np.max(np.abs(w))
    n2 = int(codebook.compute_n1(w).reshape(())) + 1 - codebook.levels_per_sign(bits)
    half = 2.0 ** (n2 - 1)  # the midpoint between 0 and 2^n2: goes up
    edges = [0.0, -0.0, top, -top, 1.5 * 2.0 ** np.floor(np.log2(top)), 0.75 * 2.0 ** -3,
             3 * 2.0 ** -9, half, -half, np.nextafter(np.float32(half), np.float32(0)), 1.5 * 2.0 ** n2]
    w[0, :len(edges)] = np.array(edges, np.float32)
    w[1, :2] = np.array([1e-45, -1e-40], np.float32)  # subnormals
    for sample in (w, np.delete(w, 1, axis=0)):  # with subnormals and without
        book = codebook.make_codebook(sample, bits, axes)
        fast = codebook.quantize(sample, book)
        slow = codebook.quantize(sample.astype(np.float64), book).astype(np.float32)
        assert fast.dtype == np.float32 and fast.view(np.uint32).tolist() == slow.view(np.uint32).tolist()
    scalar = np.array(-0.3, np.float32)  # a 0-d weight
    book = codebook.make_codebook(scalar, bits)
    assert codebook.quantize(scalar, book).shape == () and float(codebook.quantize(scalar, book)) == -0.25

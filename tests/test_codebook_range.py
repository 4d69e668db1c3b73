"""The n1 rules: the paper's and least rounding error, against a brute-force reference."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from inq_onnx import codebook
from inq_onnx.codebook_range import (
    SEARCH_DEPTH, RangeRule, candidate_errors, lowest_exponent, make_codebook_by, smallest_exponents,
)
from inq_onnx.errors import InvalidOptionError
from inq_onnx.export.encoding import recover_codebook
from inq_onnx.options import QuantizeOptions

finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, width=32)


def brute_errors(w: np.ndarray, paper: codebook.Codebook, depth: int = SEARCH_DEPTH, norm: int = 2) -> np.ndarray:
    """sum |W - Q(W)|^norm per candidate n1_paper - j and channel, by rounding with each candidate."""
    reduced = codebook.reduce_axes(w.ndim, paper.channel_axes)
    rows = []
    for j in range(depth + 1):
        q = codebook.quantize(w, codebook.Codebook(paper.bits, paper.n1 - j, paper.channel_axes))
        error = np.abs(w.astype(np.float64) - q.astype(np.float64)) ** norm
        rows.append(error.sum(axis=reduced, keepdims=True).ravel())
    return np.array(rows)


def test_module_imports_no_onnx():
    import inq_onnx.codebook_range as module

    assert not re.search(r"^\s*(import|from)\s+onnx", Path(module.__file__).read_text(), re.MULTILINE)


@settings(max_examples=150, deadline=None)
@example(w=np.array([[6.6e-44]], np.float32), bits=2, axes=(), norm=1)  # a subnormal: most candidates underflow
@given(w=arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 9)), elements=finite),
       bits=st.integers(2, 8), axes=st.sampled_from([(), (0,), (1,)]), norm=st.sampled_from([1, 2]))
def test_errors_per_candidate_match_rounding_with_each_candidate(w, bits, axes, norm):
    if not np.any(w):
        return
    paper = codebook.make_codebook(w, bits, axes)
    scale = np.ldexp(1.0, norm * paper.n1.astype(np.int64)).ravel()  # in units of 2^(norm n1_paper)
    expected = brute_errors(w, paper, norm=norm)
    got = candidate_errors(w, paper, norm=norm) * scale
    held = lowest_exponent(w) <= smallest_exponents(paper, SEARCH_DEPTH)  # candidates float32 can hold
    expected, got = np.where(held, expected, 0.0), np.where(held, got, 0.0)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12 * float(np.max(expected, initial=0.0)))
    chosen = make_codebook_by(w, bits, axes, RangeRule.MSE if norm == 2 else RangeRule.MAE)
    best = expected[(paper.n1 - chosen.n1).ravel(), np.arange(expected.shape[1])]
    least = np.where(held, expected, np.inf).min(axis=0)  # of the candidates the dtype holds
    assert np.all(best <= least * (1 + 1e-9) + 1e-300)  # the least error of the candidates
    assert np.all(best <= expected[0] * (1 + 1e-9))  # never worse than the paper's n1
    assert np.all(chosen.n1 <= paper.n1) and np.all(chosen.n1 >= paper.n1 - SEARCH_DEPTH)


def test_one_outlier_no_longer_zeroes_the_tensor():
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, size=(64, 64)).astype(np.float32)
    w[3, 7] = 3.0  # 30 sigma: the codebook's top follows it under the paper's rule
    paper = make_codebook_by(w, 4, rule=RangeRule.PAPER)
    mse = make_codebook_by(w, 4, rule=RangeRule.MSE)
    q_paper, q_mse = codebook.quantize(w, paper), codebook.quantize(w, mse)
    assert np.mean(q_paper == 0) > 0.98
    assert np.mean(q_mse == 0) < 0.3 and q_mse[3, 7] == 2.0 ** int(mse.n1.reshape(()))  # the outlier clamps
    assert np.sum((w - q_mse) ** 2) < np.sum((w - q_paper) ** 2)


def test_ties_keep_the_paper_n1():
    w = np.array([1.0, -0.5, 0.25, 0.0])  # on the paper's codebook: error 0, as low as any can be
    assert make_codebook_by(w, 4, rule=RangeRule.MSE).n1.item() == codebook.make_codebook(w, 4).n1.item() == 0
    assert make_codebook_by(w, 4, rule=RangeRule.MAE).n1.item() == 0
    with pytest.raises(ValueError, match="norm must be 1 or 2"):
        candidate_errors(w, codebook.make_codebook(w, 4), norm=3)


def test_a_quantized_tensor_still_tells_its_n1():
    """Export and verify read n1 back from max|Q|: the largest weight always rounds to 2^n1."""
    rng = np.random.default_rng(1)
    w = rng.standard_t(2, size=(8, 3, 5)).astype(np.float32)
    w[5] = 0  # an all-zero channel
    for bits, rule in ((2, RangeRule.MSE), (3, RangeRule.MAE), (4, RangeRule.MSE), (5, RangeRule.MAE)):
        for axes in ((), (0,), (1,)):
            book = make_codebook_by(w, bits, axes, rule)
            q = codebook.quantize(w, book)
            recovered = recover_codebook(q, bits, axes)
            nonzero = np.max(np.abs(q), axis=codebook.reduce_axes(q.ndim, axes), keepdims=True) > 0
            np.testing.assert_array_equal(np.where(nonzero, recovered.n1, 0), np.where(nonzero, book.n1, 0))
            assert np.all(codebook.in_codebook(q, recovered))


def test_blockwise_equals_whole(monkeypatch):
    rng = np.random.default_rng(2)
    w = rng.standard_t(3, size=(40, 30)).astype(np.float32)
    whole = {axes: make_codebook_by(w, 3, axes, RangeRule.MSE).n1 for axes in ((), (0,), (1,))}
    monkeypatch.setattr(codebook, "BLOCK", 64)  # rows of 30: two rows a block
    for axes, n1 in whole.items():
        np.testing.assert_array_equal(make_codebook_by(w, 3, axes, RangeRule.MSE).n1, n1)


def test_float16_and_the_dtype_cap():
    w = np.array([60000.0, 0.5, -0.25, 0.125], np.float16)  # n1 capped at 15 for float16
    book = make_codebook_by(w, 5, rule=RangeRule.MSE)
    q = codebook.quantize(w, book)
    assert q.dtype == np.float16 and np.all(np.isfinite(q)) and book.n1.item() <= 15


def test_all_zero_and_nonfinite_tensors_are_refused_as_before():
    with pytest.raises(ValueError, match="all zeros"):
        make_codebook_by(np.zeros(4), 4, rule=RangeRule.MSE)
    with pytest.raises(ValueError, match="NaN"):
        make_codebook_by(np.array([1.0, np.inf]), 4, rule=RangeRule.MSE)


def test_the_option_is_typed_and_recorded():
    assert QuantizeOptions(range="mse").range is RangeRule.MSE
    assert QuantizeOptions(range=RangeRule.PAPER).as_dict()["range"] == "paper"
    with pytest.raises(InvalidOptionError, match="range must be one of"):
        QuantizeOptions(range="median")


def test_no_candidate_has_values_the_dtype_cannot_hold():
    w = np.array([1e-45, 0.0], np.float32)  # the smallest float32 subnormal: 2^-149
    assert make_codebook_by(w, 2, rule=RangeRule.MAE).n1.item() == codebook.make_codebook(w, 2).n1.item() == -149
    w16 = np.array([2.0**-14, 2.0**-17, 2.0**-18, 2.0**-18], np.float16)  # float16 holds down to 2^-24
    assert codebook.make_codebook(w16, 5).n2.item() == -21
    assert make_codebook_by(w16, 5, rule=RangeRule.MAE).n2.item() >= -24

"""Error feedback rounding: Conv patches and Gram matrices, and the GPTQ update onto P."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from inq_onnx import feedback
from inq_onnx.codebook import Codebook, in_codebook, make_codebook, quantize
from inq_onnx.runtime import session
from tests.conftest import make_model, tensor


def correlated_inputs(n=400, k=24, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, k)) @ rng.normal(size=(k, k))


def output_error(w, q, x) -> float:
    return float(np.sum(((q - w) @ x.T) ** 2))


@pytest.mark.parametrize("strides,pads,dilations,group", [((1, 1), (0, 0, 0, 0), (1, 1), 1),
                                                         ((2, 1), (1, 2, 0, 1), (1, 2), 1),
                                                         ((1, 2), (1, 1, 1, 1), (1, 1), 2)])
def test_patches_times_the_kernel_are_the_conv_output(strides, pads, dilations, group):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 4, 7, 8)).astype(np.float32)
    w = rng.normal(size=(6, 4 // group, 3, 2)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], strides=strides, pads=pads, dilations=dilations, group=group)
    model = make_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [tensor("w", w)])
    y = session(model).run(None, {"x": x})[0]
    patches = feedback.conv_patches(x, (3, 2), strides=strides, pads=pads, dilations=dilations)
    per_group = patches.reshape(len(patches), group, -1)
    rows = w.reshape(group, 6 // group, -1)
    out = np.concatenate([per_group[:, g] @ rows[g].T for g in range(group)], axis=1)
    assert np.allclose(out, y.transpose(0, 2, 3, 1).reshape(-1, 6), atol=1e-4)


def test_a_row_limit_draws_that_many_patches_of_the_full_set():
    x = np.random.default_rng(2).normal(size=(3, 2, 6, 6)).astype(np.float32)
    full = feedback.conv_patches(x, (3,) * 2, strides=(1, 1), pads=(1,) * 4, dilations=(1, 1))
    some = feedback.conv_patches(x, (3,) * 2, strides=(1, 1), pads=(1,) * 4, dilations=(1, 1), rows=10,
                                 rng=np.random.default_rng(0))
    assert len(some) == 10
    assert all(any(np.array_equal(p, f) for f in full) for p in some)


def test_one_dimensional_conv_patches():
    x = np.arange(10, dtype=np.float32).reshape(1, 1, 10)
    p = feedback.conv_patches(x, (3,), strides=(3,), pads=(0, 0), dilations=(1,))
    assert p.reshape(-1, 3).tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


def test_gram_splits_channels_as_groups():
    x = np.random.default_rng(3).normal(size=(50, 4, 2)).astype(np.float32)
    h = feedback.gram(x, groups=2)
    flat = x.reshape(50, -1).astype(np.float64)
    assert h.shape == (2, 4, 4)
    assert np.allclose(h[1], flat[:, 4:].T @ flat[:, 4:], rtol=1e-5)


def test_dense_rows_keep_the_last_axis_as_features():
    assert feedback.dense_rows(np.zeros((2, 3, 5))).shape == (6, 5)


def test_feedback_lowers_the_output_error_of_rounding():
    rng = np.random.default_rng(4)
    x, w = correlated_inputs(), rng.normal(size=(8, 24)) * 0.3
    book = make_codebook(w, 4)
    q = feedback.feedback_round(w, x.T @ x, book)
    assert np.all(in_codebook(q, book))
    assert output_error(w, q, x) < 0.7 * output_error(w, quantize(w, book), x)


def test_frozen_entries_keep_their_bits_and_only_fresh_ones_are_rounded():
    rng = np.random.default_rng(5)
    x, w = correlated_inputs(), rng.normal(size=(6, 24))
    book = make_codebook(w, 3)
    frozen = rng.random(w.shape) < 0.3
    w[frozen] = quantize(w, book)[frozen]
    fresh = (rng.random(w.shape) < 0.5) & ~frozen
    q = feedback.feedback_round(w, x.T @ x, book, frozen=frozen, fresh=fresh)
    assert np.array_equal(q[frozen], w[frozen])
    assert np.all(in_codebook(q[fresh], book))
    float_left = ~frozen & ~fresh
    assert not np.array_equal(q[float_left], w[float_left])  # they absorbed the error
    partly = np.where(frozen | fresh, q, w)
    assert output_error(w, q, x) < output_error(w, partly, x)


def test_nothing_fresh_changes_nothing():
    w = np.random.default_rng(6).normal(size=(3, 24))
    x = correlated_inputs()
    q = feedback.feedback_round(w, x.T @ x, make_codebook(w, 4), fresh=np.zeros(w.shape, bool))
    assert np.array_equal(q, w)


def test_an_input_that_never_varies_is_still_rounded_without_nan():
    rng = np.random.default_rng(7)
    x = correlated_inputs(k=6)
    x[:, 2] = 0.0
    w = rng.normal(size=(4, 6))
    book = make_codebook(w, 4)
    q = feedback.feedback_round(w, x.T @ x, book)
    assert np.all(np.isfinite(q)) and np.all(in_codebook(q, book))


def test_each_row_rounds_to_its_own_channel_codebook():
    rng = np.random.default_rng(8)
    w = rng.normal(size=(2, 24)) * np.array([[1.0], [0.01]])
    book = make_codebook(w, 4, (0,))
    x = correlated_inputs()
    q = feedback.feedback_round(w, x.T @ x, Codebook(4, book.n1, (0,)))
    assert np.all(in_codebook(q, book))
    assert np.max(np.abs(q[1])) < 0.1


def test_a_stack_of_small_matrices_is_inverted_like_lapack_does():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(40, 30, 9))
    h = np.einsum("gnk,gnl->gkl", x, x)
    h[3, 2, :], h[3, :, 2] = 0.0, 0.0  # an input that never varies
    upper = feedback.inverse_cholesky(h, 0.01)
    one_by_one = np.concatenate([feedback.inverse_cholesky(h[g:g + 1], 0.01) for g in range(len(h))])
    assert np.allclose(upper, one_by_one, rtol=1e-9, atol=1e-12)
    assert np.allclose(np.triu(upper), upper)


def test_the_better_row_of_two_roundings_is_kept():
    x = correlated_inputs(k=4)
    h = (x.T @ x)[None]
    w = np.array([[[1.0, 0.3, -0.2, 0.7], [0.5, 0.5, 0.5, 0.5]]])
    close, far = w + 0.01, w + 0.5
    best, b_won = feedback.better_rows(w, np.stack([close[0, 0], far[0, 1]])[None], np.stack([far[0, 0], close[0, 1]])[None], h)
    assert b_won.tolist() == [[False, True]]
    assert np.array_equal(best, close)

"""Masked SGD and AdamW (Eq. 8): frozen entries bit-identical, the rest as the textbook update."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inq_onnx.optim import MaskedAdamW, MaskedSGD, trainable_mask


def test_optim_module_imports_no_onnx():
    import inq_onnx.optim as module

    assert not re.search(r"^\s*(import|from)\s+onnx", Path(module.__file__).read_text(), re.MULTILINE)


def make_problem(n: int, seed: int):
    rng = np.random.default_rng(seed)
    params = rng.standard_normal(n).astype(np.float32)
    frozen = rng.random(n) < 0.5
    params[frozen & (rng.random(n) < 0.2)] = -0.0  # frozen negative zeros must keep their sign
    return rng, params, frozen


def optimizers(trainable):
    return [
        MaskedSGD(trainable, lr=0.1, momentum=0.9, weight_decay=5e-4),
        MaskedSGD(trainable, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True),
        MaskedAdamW(trainable, lr=0.01, weight_decay=1e-2),
    ]


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 400), st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 2]))
def test_frozen_entries_are_bit_identical_after_100_steps(n, seed, which):
    rng, params, frozen = make_problem(n, seed)
    before = params.copy()
    opt = optimizers(trainable_mask([frozen]))[which]
    for _ in range(100):
        grads = rng.standard_normal(n).astype(np.float32) * 10
        grads[frozen & (rng.random(n) < 0.1)] = np.inf  # even a blown-up gradient cannot leak in
        opt.step(params, grads)
    assert np.array_equal(params[frozen].view(np.uint32), before[frozen].view(np.uint32))
    assert np.all(np.isfinite(params[~frozen]))
    assert np.all(params[~frozen] != before[~frozen])  # and the float group did train
    for name, value in opt.state_dict().items():
        if isinstance(value, np.ndarray) and name != "trainable":
            assert np.all(value[frozen] == 0.0), name


def reference_sgd(w, grads, lr, mom, wd, nesterov):
    v = np.zeros_like(w)
    for g in grads:
        g = g + wd * w
        v = mom * v + g
        w = w - lr * (g + mom * v if nesterov else v)
    return w


def reference_adamw(w, grads, lr, b1, b2, eps, wd):
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, 1):
        w = w * (1 - lr * wd)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return w


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_matches_the_textbook_update_on_trainable_entries(nesterov):
    rng, params, frozen = make_problem(300, 1)
    grads = [rng.standard_normal(300).astype(np.float32) for _ in range(20)]
    expected = reference_sgd(params.astype(np.float64), grads, 0.05, 0.9, 5e-4, nesterov)
    opt = MaskedSGD(trainable_mask([frozen]), lr=0.05, nesterov=nesterov)
    for g in grads:
        opt.step(params, g)
    np.testing.assert_allclose(params[~frozen], expected[~frozen], rtol=1e-4, atol=1e-5)


def test_adamw_matches_the_textbook_update_on_trainable_entries():
    rng, params, frozen = make_problem(300, 2)
    grads = [rng.standard_normal(300).astype(np.float32) for _ in range(20)]
    expected = reference_adamw(params.astype(np.float64), grads, 0.01, 0.9, 0.999, 1e-8, 1e-2)
    opt = MaskedAdamW(trainable_mask([frozen]), lr=0.01)
    for g in grads:
        opt.step(params, g)
    np.testing.assert_allclose(params[~frozen], expected[~frozen], rtol=1e-4, atol=1e-5)


def test_reset_and_state_dict_round_trip():
    rng, params, frozen = make_problem(50, 3)
    grads = [rng.standard_normal(50).astype(np.float32) for _ in range(6)]
    a = MaskedAdamW(trainable_mask([frozen]), lr=0.01)
    for g in grads[:3]:
        a.step(params, g)
    saved, p_saved = a.state_dict(), params.copy()
    for g in grads[3:]:
        a.step(params, g)
    b = MaskedAdamW(np.ones(1, np.float32), lr=0.5)
    b.load_state_dict(saved)
    assert b.t == 3 and b.lr == 0.01 and np.array_equal(b.trainable, trainable_mask([frozen]))
    for g in grads[3:]:
        b.step(p_saved, g)
    assert np.array_equal(params, p_saved)
    a.reset()
    assert a.t == 0 and all(not np.any(v) for k, v in a.state_dict().items() if k in ("exp_avg", "exp_avg_sq"))
    with pytest.raises(ValueError, match="lacks"):
        b.load_state_dict({"lr": 0.1})


def test_freezing_more_entries_zeroes_their_momentum_and_never_thaws():
    _, params, frozen = make_problem(100, 4)
    opt = MaskedSGD(trainable_mask([frozen]), lr=0.1)
    opt.step(params, np.ones(100, np.float32))
    more = frozen | (np.arange(100) < 50)
    opt.set_trainable(trainable_mask([more]))
    assert np.all(opt.state_dict()["momentum_buffer"][more] == 0) and np.any(opt.state_dict()["momentum_buffer"])
    with pytest.raises(ValueError, match="masks only grow"):
        opt.set_trainable(trainable_mask([frozen]))


def test_trainable_mask_lays_out_quantized_and_float_parameters():
    t = trainable_mask([np.array([[True, False]]), 3, np.array([False])])
    assert t.dtype == np.float32 and t.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_bad_arguments_raise():
    t = np.ones(4, np.float32)
    for bad in [lambda: MaskedSGD(t, lr=-1), lambda: MaskedSGD(t, lr=0.1, momentum=1.0),
                lambda: MaskedAdamW(t, lr=0.1, betas=(0.9, 1.0)), lambda: MaskedSGD(np.full(4, 0.5), lr=0.1)]:
        with pytest.raises(ValueError):
            bad()
    opt = MaskedSGD(t, lr=0.1)
    with pytest.raises(ValueError, match="float32"):
        opt.step(np.ones(4, np.float64), np.ones(4, np.float32))
    with pytest.raises(ValueError, match="4 entries"):
        opt.step(np.ones(5, np.float32), np.ones(5, np.float32))


"""The whole zoo of ../shared/models at 2-5 bits, per tensor and per channel (slow).

For each model and setting: quantize, verify (onnx.checker, codebook membership, ONNX Runtime
runs it), check every quantized value against an independent reference written from INQ.md's
formulas, check that nothing else changed, and score the result against the float model on
real inputs (tests/zoo.py). The least-error n1 rule (``range="mse"``) is checked to round every
tensor with no more error than the paper's n1; it and ``range="mae"`` verify and export exactly. The fidelity table is printed at the end of the run (conftest's
terminal summary); `python bench/zoo_fidelity.py` prints the same table without the checks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import inq_onnx
from inq_onnx.graph.tensors import read_tensor, tensor_proto
from inq_onnx.graph.uses import build_use_index
from inq_onnx.graph.weights import select_weights
from inq_onnx.export import decode, to_compact
from inq_onnx.verify import off_codebook, verify
from tests import zoo
from tests.conftest import SHARED_MODELS, float_models
from tests.test_codebook import reference_round
from tests.test_quantize import reference_quantize

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SHARED_MODELS.is_dir(), reason=f"{SHARED_MODELS} is absent: the zoo test needs ../shared/models"),
]

FIXED = {  # tensors that are on a weight input but were never learned, and why they are skipped
    "320n.onnx": {"model.22.dfl.conv.weight": "a fixed arange 0..15 (e.g. a DFL decoder), not a learned weight"},
    "silero_vad.onnx": {"If_0_then_branch__Inline_0__stft.forward_basis_buffer": "looks like a fixed DFT/STFT basis",
                        "If_0_else_branch__Inline_0__stft.forward_basis_buffer": "looks like a fixed DFT/STFT basis"},
    "silero_vad_half.onnx": {"stft.forward_basis_buffer": "looks like a fixed DFT/STFT basis"},
}
NO_SMOKE_RUN = {"silero_vad.onnx"}  # random feeds set sr = 0, which the model rejects; real inputs run below
SMALL = 4096  # tensors up to this size are checked against the scalar reference in full
SUBSAMPLE = 256


# --- the independent reference ---------------------------------------------------------------

def reference_values(w: np.ndarray, bits: int, channel_axes: tuple[int, ...]) -> np.ndarray:
    """INQ.md section 1, vectorised: n1 = floor(log2(4 s / 3)) per tensor or per channel, then
    Eq. 4 interval by interval: |w| in [(a + b) / 2, 3 b / 2) -> b, clamped to 2^n1 above."""
    w = w.astype(np.float64)
    keep = {a % w.ndim for a in channel_axes}
    axes = tuple(a for a in range(w.ndim) if a not in keep)
    s = np.max(np.abs(w), axis=axes, keepdims=True) if keep else np.max(np.abs(w))
    s = np.where(s > 0, s, 1.0)  # an all-zero channel rounds to zeros whatever its n1
    n1 = np.floor(np.log2(4 * s / 3))
    n2 = n1 + 1 - 2 ** (bits - 1) / 2
    a = np.abs(w)
    out = np.zeros_like(w)
    levels = 2 ** (bits - 2)
    for j in range(levels):
        beta = 2.0 ** (n2 + j)
        alpha = 0.0 if j == 0 else 2.0 ** (n2 + j - 1)
        upper = np.inf if j == levels - 1 else 1.5 * beta
        out = np.where((a >= (alpha + beta) / 2) & (a < upper), beta, out)
    return np.sign(w) * out


def check_against_reference(w: np.ndarray, q: np.ndarray, bits: int, axes: tuple[int, ...], name: str) -> None:
    expected = reference_values(w, bits, axes)
    np.testing.assert_array_equal(q.astype(np.float64), expected, err_msg=name)
    if w.size <= SMALL and len(axes) <= 1:  # the scalar reference of tests/test_quantize.py, in full
        np.testing.assert_array_equal(q.astype(np.float64), reference_quantize(w, bits, axes[0] if axes else None), err_msg=name)
        return
    rng = np.random.default_rng(w.size)  # the scalar Eq. 4 of tests/test_codebook.py on a sample
    for flat in rng.choice(w.size, size=min(SUBSAMPLE, w.size), replace=False):
        index = np.unravel_index(flat, w.shape)
        channel = tuple(i if d in {a % w.ndim for a in axes} else slice(None) for d, i in enumerate(index))
        s = float(np.max(np.abs(w[channel])))
        if s == 0:
            assert q[index] == 0, name
            continue
        n1 = math.floor(math.log2(4 * s / 3))
        assert float(q[index]) == reference_round(float(w[index]), n1, bits), f"{name}{index}"


# --- the test --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def selections():
    return {}


@pytest.mark.parametrize("per_channel", [False, True], ids=["tensor", "channel"])
@pytest.mark.parametrize("bits", zoo.BITS)
@pytest.mark.parametrize("file", float_models())
def test_zoo(file, bits, per_channel, selections):
    original = zoo.float_model(file)
    if file not in selections:
        selections[file] = select_weights(original)
    candidates = selections[file]

    result = inq_onnx.quantize(original, bits=bits, per_channel=per_channel, range="paper")  # the reference's n1

    report = verify(result.model, reference=original)
    assert report.checked_tensors == len(result.quantized)
    assert report.run_shapes or file in NO_SMOKE_RUN

    chosen = {c.name: c for c in candidates if c.selected}
    assert {t.name for t in result.quantized} == set(chosen)
    for t in result.quantized:
        c = chosen[t.name]
        axes = (c.channel_axes or ()) if per_channel else ()
        assert t.channel_axes == axes
        check_against_reference(read_tensor(original, c.site), read_tensor(result.model, c.site), bits, axes, t.name)
    chosen_sites = {c.site for c in chosen.values()}
    for site in build_use_index(original).sites:  # every other constant is byte-identical
        if site not in chosen_sites:
            assert tensor_proto(result.model, site) == tensor_proto(original, site), site.name

    fixed = zoo.fixed_skips(result)
    assert set(fixed) == set(FIXED.get(file, {}))
    for name, reason in FIXED.get(file, {}).items():
        assert fixed[name].startswith(reason)

    note = ""
    if file == "common_old.onnx":
        integer = [t for t in result.skipped if t.dtype in ("uint8", "int8") and t.name.endswith("_quantized")]
        assert not result.quantized
        assert len(integer) == 24  # 21 ConvInteger, the DynamicQuantizeLSTM's W and R, 1 MatMulInteger
        assert all(t.skip_reason.startswith("already quantized: feeds ") for t in integer)
        note = f"nothing quantized: its {len(integer)} integer weights are reported 'already quantized'"
    elif fixed:
        note = zoo.fixed_note(fixed)

    score = zoo.score(file, result.model)
    if score is not None:
        assert np.isfinite(score.sqnr_db) or score.sqnr_db == float("inf")
    zoo.RESULTS.append(zoo.Row(file, bits, per_channel, len(result.quantized), len(result.quantized) + len(fixed),
                               score, note))


@pytest.mark.parametrize("per_channel", [False, True], ids=["tensor", "channel"])
@pytest.mark.parametrize("bits", zoo.BITS)
@pytest.mark.parametrize("file", [f for f in float_models() if f != "common_old.onnx"])
def test_zoo_least_error_rules_never_round_worse_and_export_exactly(file, bits, per_channel):
    original = zoo.float_model(file)
    paper = inq_onnx.quantize(original, bits=bits, per_channel=per_channel, range="paper")
    mse = inq_onnx.quantize(original, bits=bits, per_channel=per_channel, range="mse")
    errors = {t.name: t.rel_l2_error for t in paper.quantized}
    assert [t.name for t in mse.quantized] == list(errors)
    for t in mse.quantized:
        assert t.range_rule == "mse" and t.rel_l2_error <= errors[t.name] * (1 + 1e-9), t.name
    for result in (mse, inq_onnx.quantize(original, bits=bits, per_channel=per_channel, range="mae")):
        assert off_codebook(result.model) == []  # verify's check: every value on its codebook
        compact, report = to_compact(result.model)
        assert not report.kept_float
        assert decode(compact).SerializeToString() == result.model.SerializeToString()

"""The fixed-tensor detector on synthetic tensors, and its wiring into weight selection.

What it must find: index ramps (YOLOv8's DFL vector 0..15) and windowed DFT bases (an STFT as a
Conv or MatMul). What it must leave alone: anything learned, stood in for here by Gaussian
tensors, smooth random filter banks, Gabor and sinc banks with mel-spaced centre frequencies,
and the weights of the bundled fixture.
"""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import inq_onnx
from inq_onnx.fixed_tensors import fixed_tensor_reason
from inq_onnx.graph.weights import select_weights
from tests.conftest import FIXTURE, make_model, tensor


def hann(n):  # periodic, as torch.hann_window
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)


def stft_basis(n_fft, window=hann, win_length=None):
    """[2 (n_fft/2 + 1), 1, n_fft]: real then imaginary DFT rows under a centred window, as
    torch-style STFT-as-Conv modules (silero-vad's ``forward_basis_buffer``) build it."""
    win_length = win_length or n_fft
    left = (n_fft - win_length) // 2
    w = np.pad(window(win_length), (left, n_fft - win_length - left))
    dft = np.fft.fft(np.eye(n_fft))[: n_fft // 2 + 1]
    return np.concatenate([dft.real * w, dft.imag * w])[:, None, :].astype(np.float32)


def mel_centres(n, low=60.0, high=7800.0):
    mel = lambda f: 2595 * np.log10(1 + f / 700)
    return 700 * (10 ** (np.linspace(mel(low), mel(high), n) / 2595) - 1)


SR, TAPS = 16000, 401
T = (np.arange(TAPS) - TAPS // 2) / SR


def gabor_bank(centres):
    return np.stack([np.hanning(TAPS) * np.cos(2 * np.pi * c * T) for c in centres])[:, None, :].astype(np.float32)


def sinc_bank(n=80):
    low = np.linspace(30, 7000, n)
    high = low + 200
    rows = [(2 * h / SR * np.sinc(2 * h * T) - 2 * lo / SR * np.sinc(2 * lo * T)) * np.hamming(TAPS)
            for lo, h in zip(low, high)]
    return np.stack(rows)[:, None, :].astype(np.float32)


# --- index ramps ----------------------------------------------------------------------------

def test_dfl_vector_is_a_fixed_arange():
    reason = fixed_tensor_reason(np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1), (0,))
    assert reason == "a fixed arange 0..15 (e.g. a DFL decoder), not a learned weight"


@pytest.mark.parametrize("values, expected", [
    (np.arange(3, 13, 2), "a fixed arange 3..11 step 2 (an index ramp)"),
    (np.arange(7, -1, -1), "a fixed arange 7..0 (an index ramp)"),
    (np.linspace(-1, 1, 11), "a fixed linspace -1..1 (11 values)"),
    (np.arange(32).reshape(4, 8), "a fixed arange 0..31"),
])
def test_other_ramps(values, expected):
    assert fixed_tensor_reason(values.astype(np.float32)).startswith(expected)


@pytest.mark.parametrize("values", [
    np.arange(3), np.ones(16), np.zeros(16), np.full((3, 3), 1 / 9), np.array([0.0, 1, 2, 3.5]),
    np.arange(16) + np.r_[np.zeros(15), 1e-3], np.array([], np.float32),
])
def test_not_a_ramp(values):
    assert fixed_tensor_reason(np.asarray(values, np.float32)) is None


def test_integer_arrays_are_not_judged():
    assert fixed_tensor_reason(np.arange(16)) is None


# --- DFT / STFT bases -----------------------------------------------------------------------

@pytest.mark.parametrize("basis", [
    stft_basis(256),  # silero-vad 16 kHz
    stft_basis(128),  # silero-vad 8 kHz
    stft_basis(512, np.hanning),
    stft_basis(400, np.hamming),
    stft_basis(512, np.blackman),
    stft_basis(64, np.ones),
    stft_basis(512, hann, 400),  # win_length < n_fft: zero-padded window
    stft_basis(512, hann, 256),
], ids=["hann256", "hann128", "hann-sym512", "hamming400", "blackman512", "rect64", "hann400in512", "hann256in512"])
def test_stft_bases_are_recognised(basis):
    reason = fixed_tensor_reason(basis, (0,))
    assert reason and reason.startswith("looks like a fixed DFT/STFT basis")
    assert f"{basis.shape[0]} windowed sinusoids of length {basis.shape[2]}" in reason


def test_a_dft_matrix_on_a_matmul_is_recognised_along_its_output_axis():
    matrix = stft_basis(256)[:, 0, :].T.copy()  # [n_fft, bins], MatMul's right operand
    assert "DFT/STFT basis" in fixed_tensor_reason(matrix, (1,))
    assert "DFT/STFT basis" in fixed_tensor_reason(matrix)  # no hint: both axes of a matrix are tried
    assert fixed_tensor_reason(matrix, (0,)) is None


def test_half_a_basis_still_counts_but_a_thinned_one_does_not():
    basis = stft_basis(256)
    assert "DFT/STFT basis" in fixed_tensor_reason(basis[:64], (0,))  # the lowest 64 bins
    assert fixed_tensor_reason(basis[:129:3], (0,)) is None  # every third bin: not a gap-free grid


@pytest.mark.parametrize("bank", [
    gabor_bank(mel_centres(40)),
    gabor_bank(np.linspace(100, 7900, 64) + 13.7),  # evenly spaced but off the DFT grid
    sinc_bank(),
], ids=["gabor-mel", "gabor-offgrid", "sinc"])
def test_learnable_filterbanks_are_not_fixed(bank):
    assert fixed_tensor_reason(bank, (0,)) is None


@pytest.mark.parametrize("shape", [(258, 1, 256), (64, 1, 400), (256, 128, 3, 3), (512, 512), (40, 1, 1024),
                                   (16,), (1, 16, 1, 1), (4, 512, 128)])
def test_gaussian_tensors_are_never_fixed(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(10):
        assert fixed_tensor_reason(rng.normal(size=shape).astype(np.float32)) is None
        assert fixed_tensor_reason(rng.normal(size=shape).astype(np.float32), (0,)) is None


def test_smooth_random_filters_are_not_a_basis():
    """Low-pass learned-looking filters are band-limited, but all near DC: no frequency grid."""
    rng = np.random.default_rng(0)
    kernel = np.hanning(15) / np.hanning(15).sum()
    bank = np.stack([np.convolve(rng.normal(size=256), kernel, mode="same") for _ in range(64)])
    assert fixed_tensor_reason(bank[:, None, :].astype(np.float32), (0,)) is None


def test_fixture_weights_are_learned():
    model = onnx.load(str(FIXTURE))
    weights = [numpy_helper.to_array(i) for i in model.graph.initializer]
    assert weights and all(fixed_tensor_reason(w) is None and fixed_tensor_reason(w, (0,)) is None for w in weights)


# --- wiring into the weight table -----------------------------------------------------------

def stft_and_dfl_model() -> onnx.ModelProto:
    """x[1,1,576] -> Conv(STFT basis) -> Conv(learned) ... and a DFL-style 1x1 Conv over 16 bins."""
    rng = np.random.default_rng(0)
    f = TensorProto.FLOAT
    inits = [tensor("stft.basis", stft_basis(256)), tensor("enc.w", rng.normal(size=(16, 258, 3)).astype(np.float32)),
             tensor("dfl.w", np.arange(16, dtype=np.float32).reshape(1, 16, 1))]
    nodes = [helper.make_node("Conv", ["x", "stft.basis"], ["s"], name="stft", strides=[128]),
             helper.make_node("Conv", ["s", "enc.w"], ["e"], name="enc", pads=[1, 1]),
             helper.make_node("Softmax", ["e"], ["p"], name="softmax", axis=1),
             helper.make_node("Conv", ["p", "dfl.w"], ["y"], name="dfl")]
    return make_model(nodes, [helper.make_tensor_value_info("x", f, [1, 1, 576])],
                      [helper.make_tensor_value_info("y", f, [1, 1, 3])], inits)


def test_fixed_weights_are_skipped_with_a_readable_reason():
    found = {c.name: c for c in select_weights(stft_and_dfl_model())}
    assert found["enc.w"].selected
    assert found["stft.basis"].skip_reason.startswith("looks like a fixed DFT/STFT basis (258 windowed sinusoids")
    assert found["dfl.w"].skip_reason == "a fixed arange 0..15 (e.g. a DFL decoder), not a learned weight"


def test_quantize_leaves_them_untouched_unless_included():
    model = stft_and_dfl_model()
    original = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    result = inq_onnx.quantize(model, bits=4, per_channel=True)
    assert {t.name for t in result.quantized} == {"enc.w"}
    after = {i.name: numpy_helper.to_array(i) for i in result.model.graph.initializer}
    np.testing.assert_array_equal(after["stft.basis"], original["stft.basis"])
    np.testing.assert_array_equal(after["dfl.w"], original["dfl.w"])

    forced = inq_onnx.quantize(model, bits=4, per_channel=True, include=["stft.*", "dfl.w"])
    reports = {t.name: t for t in forced.quantized}
    assert set(reports) == {"enc.w", "stft.basis", "dfl.w"}
    assert reports["stft.basis"].channel_axes == (0,)  # the override keeps the per-channel axes
    assert "included by --include (was: looks like a fixed DFT/STFT basis" in reports["stft.basis"].notes[-1]


def test_half_precision_and_non_finite_inputs():
    assert "DFT/STFT basis" in fixed_tensor_reason(stft_basis(256).astype(np.float16), (0,))
    assert "arange 0..15" in fixed_tensor_reason(np.arange(16, dtype=np.float16))
    broken = stft_basis(128)
    broken[3, 0, 5] = np.nan
    assert fixed_tensor_reason(broken, (0,)) is None
    assert fixed_tensor_reason(np.array([0, 1, 2, np.inf, 4], np.float32)) is None

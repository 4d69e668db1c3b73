"""One-shot quantization: values equal the INQ.md reference, dtypes and names are kept,
ONNX Runtime runs the result, and the input model is never touched."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

import inq_onnx
from inq_onnx.errors import InvalidOptionError
from inq_onnx.graph.tensors import to_array
from inq_onnx.quantize import METADATA_KEY
from inq_onnx.runtime import session
from tests.conftest import FIXTURE, conv_gemm_model
from tests.test_codebook import reference_round


def reference_quantize(w: np.ndarray, bits: int, axis=None) -> np.ndarray:
    """INQ.md section 1, per tensor or per slice along ``axis``, in plain Python floats."""
    if axis is not None:
        return np.stack([reference_quantize(s, bits) for s in np.moveaxis(w, axis, 0)], axis=0).swapaxes(0, axis) \
            if axis == 0 else np.moveaxis(np.stack([reference_quantize(s, bits) for s in np.moveaxis(w, axis, 0)]), 0, axis)
    n1 = int(np.floor(np.log2(4 * float(np.max(np.abs(w))) / 3)))
    flat = [reference_round(float(x), n1, bits) for x in w.ravel()]
    return np.array(flat).reshape(w.shape)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("per_channel", [False, True])
def test_values_equal_the_reference(bits, per_channel):
    model = conv_gemm_model()
    result = inq_onnx.quantize(model, bits=bits, per_channel=per_channel, range="paper")
    originals = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for init in result.model.graph.initializer:
        if init.name.endswith(".w"):
            axis = 0 if per_channel else None
            np.testing.assert_array_equal(numpy_helper.to_array(init), reference_quantize(originals[init.name], bits, axis))
        else:
            np.testing.assert_array_equal(numpy_helper.to_array(init), originals[init.name])


def test_input_model_untouched_and_metadata_stamped():
    model = conv_gemm_model()
    before = model.SerializeToString()
    result = inq_onnx.quantize(model, bits=4, per_channel=True, range="mse")
    assert model.SerializeToString() == before
    stamp = {p.key: p.value for p in result.model.metadata_props}
    assert json.loads(stamp[METADATA_KEY]) == {"bits": 4, "tensors": {"conv.w": {"channel_axes": [0], "range": "mse"},
                                                                       "fc.w": {"channel_axes": [0], "range": "mse"}}}
    assert result.model.ir_version == model.ir_version and result.model.opset_import == model.opset_import
    assert [n.name for n in result.model.graph.node] == [n.name for n in model.graph.node]


def test_report_fields():
    result = inq_onnx.quantize(conv_gemm_model(), bits=3)
    conv = next(t for t in result.quantized if t.name == "conv.w")
    assert conv.shape == (3, 2, 3, 3) and conv.n2[0] == conv.n1[0] - 1
    assert 0 <= conv.fraction_zero <= 1 and 0 < conv.rel_l2_error < 1
    assert {t.name for t in result.skipped} == {"conv.b", "fc.b"}


@pytest.mark.parametrize("dtype", [np.float16, "bfloat16"])
def test_half_precision_weights_are_written_back_in_their_dtype(dtype):
    model = conv_gemm_model(dtype=np.float16 if dtype == np.float16 else np.float32)
    if dtype == "bfloat16":
        w = model.graph.initializer[0]
        bits = (numpy_helper.to_array(w).view(np.uint32) >> 16).astype(np.uint16)
        w.ClearField("raw_data"); w.data_type = TensorProto.BFLOAT16; w.raw_data = bits.tobytes()
    result = inq_onnx.quantize(model, bits=4)
    w = result.model.graph.initializer[0]
    assert w.data_type == model.graph.initializer[0].data_type
    values = to_array(w).astype(np.float64)
    nonzero = np.abs(values[values != 0])
    assert np.all(np.frexp(nonzero)[0] == 0.5)


def test_quantized_model_runs_and_matches_a_numpy_forward():
    result = inq_onnx.quantize(FIXTURE, bits=5)
    x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    ort_out = session(result.model).run(None, {"input": x})[0]
    w = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in result.model.graph.initializer}
    np.testing.assert_allclose(ort_out, numpy_forward(w, x.astype(np.float64)), rtol=1e-4, atol=1e-4)


def numpy_forward(w, x):
    def conv(x, k, b, stride):
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        n, _, h, wd = x.shape
        oh, ow = (h - 1) // stride + 1, (wd - 1) // stride + 1
        out = np.zeros((n, k.shape[0], oh, ow))
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, :, i * stride:i * stride + 3, j * stride:j * stride + 3]
                out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, k)
        return out + b[None, :, None, None]
    h = np.maximum(conv(x, w["conv1.weight"], w["conv1.bias"], 1), 0)
    h = np.maximum(conv(h, w["conv2.weight"], w["conv2.bias"], 2), 0).reshape(len(x), -1)
    h = np.maximum(h @ w["fc1.weight"].T + w["fc1.bias"], 0)
    return h @ w["fc2.weight"].T + w["fc2.bias"]


@pytest.mark.parametrize("kwargs", [dict(bits=1), dict(bits=9), dict(bits="four"), dict(min_size=-1)])
def test_bad_options(kwargs):
    with pytest.raises(InvalidOptionError):
        inq_onnx.quantize(conv_gemm_model(), **kwargs)


@pytest.mark.parametrize("shape, axes", [((70, 9, 3), ()), ((70, 9, 3), (0,)), ((9, 70), (1,)), ((6, 5, 4, 3), (0,)),
                                         ((2, 200), ())])
def test_block_by_block_rounding_equals_the_whole_tensor(monkeypatch, shape, axes):
    from inq_onnx import codebook

    module = codebook
    w = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    w[1] = 0  # an all-zero row: per channel it takes the tensor's n1
    book = codebook.make_codebook(w, 4, axes)
    monkeypatch.setattr(module, "BLOCK", 50)  # a few rows per block
    assert len(list(module.row_blocks(w))) > 1
    blocked = module.make_codebook_blockwise(w, 4, axes)
    np.testing.assert_array_equal(blocked.n1, book.n1)
    q = np.empty_like(w)
    for rows, part, part_book in module.blocks(w, blocked):
        q[rows] = codebook.quantize(part, part_book)
    np.testing.assert_array_equal(q, codebook.quantize(w, book))
    w[-1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        module.make_codebook_blockwise(w, 4, axes)


def test_quantizing_a_file_needs_no_copy_and_a_model_stays_untouched(tmp_path):
    model = conv_gemm_model()
    before = model.SerializeToString()
    from_memory = inq_onnx.quantize(model, bits=4)
    assert model.SerializeToString() == before and from_memory.model is not model
    onnx.save_model(model, str(tmp_path / "m.onnx"))
    from_file = inq_onnx.quantize(tmp_path / "m.onnx", bits=4)
    assert from_file.model.SerializeToString() == from_memory.model.SerializeToString()

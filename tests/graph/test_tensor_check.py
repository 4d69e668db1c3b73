"""Constant tensors must hold exactly what their type and dims say: no false alarm on any valid
encoding (typed fields, raw bytes, packed 4-bit, float8, bfloat16, strings, empty, scalar)."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from inq_onnx.graph.tensor_check import tensor_problem

ARRAYS = [np.ones((2, 3), np.float32), np.ones((2, 3), np.float16), np.ones(5, np.int8), np.ones(5, np.uint8),
          np.ones(5, np.int64), np.ones(5, bool), np.ones(5, np.float64), np.ones(5, np.complex64),
          np.ones(5, np.complex128), np.array(["a", "bc"]), np.ones((0, 3), np.float32), np.float32(3),
          np.ones(5, np.uint16), np.ones(5, np.uint32), np.ones(5, np.uint64), np.ones(5, np.int16)]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{list(a.shape)}")
def test_numpy_tensors_pass(array):
    assert tensor_problem(numpy_helper.from_array(array, "t")) is None


@pytest.mark.parametrize("data_type, raw_bytes", [
    (TensorProto.BFLOAT16, 10), (TensorProto.FLOAT8E4M3FN, 5), (TensorProto.FLOAT8E5M2, 5), (TensorProto.INT4, 3),
    (TensorProto.UINT4, 3), (TensorProto.FLOAT16, 10), (TensorProto.BOOL, 5),
])
def test_typed_and_raw_encodings_pass(data_type, raw_bytes):
    assert tensor_problem(helper.make_tensor("t", data_type, [5], [1, 0, 1, 1, 0])) is None
    assert tensor_problem(helper.make_tensor("t", data_type, [5], bytes(raw_bytes), raw=True)) is None
    broken = helper.make_tensor("t", data_type, [5], bytes(raw_bytes), raw=True)
    broken.raw_data += b"\0"
    assert "need" in tensor_problem(broken)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.dims.pop(), "holds 24 bytes but its type and dims [2] need 8"),
    (lambda t: t.dims.__setitem__(0, 2**62), "need 55340232221128654848"),
    (lambda t: t.dims.__setitem__(1, -3), "negative dim"),
    (lambda t: setattr(t, "data_type", 999), "unknown data type (999)"),
    (lambda t: setattr(t, "data_type", TensorProto.UNDEFINED), "unknown data type (0)"),
    (lambda t: setattr(t, "data_type", TensorProto.DOUBLE), "need 48"),
    (lambda t: setattr(t, "raw_data", t.raw_data[:-1]), "holds 23 bytes"),
    (lambda t: (t.ClearField("raw_data"), t.float_data.extend([1.0] * 5)), "holds 5 float_data entries"),
    (lambda t: t.ClearField("raw_data"), "holds 0 float_data entries"),
])
def test_broken_tensors_are_named(edit, message):
    tensor = numpy_helper.from_array(np.ones((2, 3), np.float32), "w")
    edit(tensor)
    assert message in tensor_problem(tensor)

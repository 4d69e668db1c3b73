"""A model written as pieces (one initializer at a time, then the rest) parses as the whole model."""

import io

import numpy as np
import onnx
import pytest

from inq_onnx.graph.pieces import PieceWriter, skeleton, varint
from inq_onnx.graph.tensors import from_array
from tests.conftest import conv_gemm_model


def test_varint_is_protobufs():
    for n in (0, 1, 127, 128, 300, 2**31 - 1, 2**40):
        proto = onnx.TensorProto(dims=[n])  # packed repeated int64: its one element is the varint
        assert proto.SerializeToString().endswith(varint(n))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_new_values_in_list_order_give_the_model_with_them(dtype):
    model = conv_gemm_model(dtype=dtype)
    model.graph.initializer[1].doc_string = "unchanged"
    new = {"conv.w": np.full((3, 2, 3, 3), 0.5, dtype), "fc.w": np.arange(108, dtype=dtype).reshape(4, 27)}
    file = io.BytesIO()
    writer = PieceWriter(file, model)
    for init in model.graph.initializer:
        if init.name in new:
            writer.write(onnx.TensorProto(name=init.name, data_type=init.data_type, dims=init.dims), new[init.name])
    writer.finish()
    expected = onnx.ModelProto()
    expected.CopyFrom(model)
    for init in expected.graph.initializer:
        if init.name in new:
            init.CopyFrom(from_array(new[init.name], init))
    assert onnx.load_from_string(file.getvalue()).SerializeToString() == expected.SerializeToString()


def test_out_of_order_values_are_refused():
    model = conv_gemm_model()
    writer = PieceWriter(io.BytesIO(), model)
    fc = model.graph.initializer[2]
    writer.write(onnx.TensorProto(name=fc.name, data_type=fc.data_type, dims=fc.dims), np.zeros((4, 27), np.float32))
    conv = model.graph.initializer[0]
    with pytest.raises(RuntimeError, match="list order"):
        writer.write(onnx.TensorProto(name=conv.name, data_type=conv.data_type, dims=conv.dims), np.zeros(1))


def test_skeleton_is_everything_but_the_initializers():
    model = conv_gemm_model()
    bare = skeleton(model)
    assert not bare.graph.initializer
    bare.graph.initializer.extend(model.graph.initializer)
    assert bare.SerializeToString() == model.SerializeToString()

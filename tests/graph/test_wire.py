"""A model read on the wire: the structure parsed, the main graph's raw data left in the file's bytes."""

import io

import numpy as np
import onnx
import pytest
from onnx import helper

from inq_onnx.graph import wire
from inq_onnx.graph.pieces import PieceWriter
from inq_onnx.graph.tensors import TensorSite, from_array, to_array
from tests.conftest import conv_gemm_model


def mixed_model() -> onnx.ModelProto:
    """conv_gemm_model plus an initializer in float_data, an int64 one, a bfloat16 one, an empty
    one, a Constant node and a doc string: everything split must leave as protobuf parses it."""
    model = conv_gemm_model()
    model.doc_string = "a model"
    model.graph.initializer[1].doc_string = "a bias"
    model.graph.initializer.append(helper.make_tensor("typed", onnx.TensorProto.FLOAT, [3], [1.0, 2.0, 3.0]))
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.arange(5, dtype=np.int64), "ints"))
    model.graph.initializer.append(from_array(np.array([1.5, -2.0], np.float32),
                                              onnx.TensorProto(name="bf", data_type=onnx.TensorProto.BFLOAT16, dims=[2])))
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros((0, 2), np.float32), "empty"))
    model.graph.node.append(helper.make_node("Constant", [], ["k"], value=onnx.numpy_helper.from_array(np.ones(4, np.float32))))
    return model


def without_raw_data(model: onnx.ModelProto) -> onnx.ModelProto:
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    for init in bare.graph.initializer:
        init.ClearField("raw_data")
    return bare


def test_split_leaves_out_exactly_the_main_graphs_raw_data():
    model = mixed_model()
    buf = model.SerializeToString()
    bare, found = wire.split(buf)
    assert onnx.load_from_string(bare).SerializeToString() == without_raw_data(model).SerializeToString()
    assert [f is not None for f in found] == [init.HasField("raw_data") for init in model.graph.initializer]
    for init, where in zip(model.graph.initializer, found):
        if where is not None:
            assert buf[where.raw[0]:where.raw[1]] == init.raw_data
            assert buf[where.piece[0]:where.piece[1]] == init.SerializeToString()


def test_values_are_views_of_the_file_and_equal_onnxs():
    model = mixed_model()
    buf = model.SerializeToString()
    bare, found = wire.split(buf)
    parsed = onnx.load_from_string(bare)
    tensors = wire.FileTensors(buf, parsed, found)
    for init, full in zip(parsed.graph.initializer, model.graph.initializer):
        values = tensors.values(TensorSite(init.name, (), "initializer"), init)
        expected = to_array(full)
        assert values.dtype == expected.dtype and values.shape == expected.shape
        assert values.tobytes() == expected.tobytes()
        if init.name in ("conv.w", "ints"):
            assert not values.flags.writeable and not values.flags.owndata  # no copy made
    assert tensors.raw_bytes("conv.w") == 3 * 2 * 3 * 3 * 4 and tensors.raw_bytes("typed") is None


def test_a_model_written_in_pieces_splits_as_its_merge():
    """Our own streamed outputs repeat the graph field once per initializer (``pieces``)."""
    model = mixed_model()
    file = io.BytesIO()
    PieceWriter(file, model).finish()
    bare, found = wire.split(file.getvalue())
    assert onnx.load_from_string(bare).SerializeToString() == without_raw_data(model).SerializeToString()
    assert sum(f is not None for f in found) == sum(init.HasField("raw_data") for init in model.graph.initializer)


def test_unchanged_initializers_are_written_as_they_lay_in_the_file():
    model = mixed_model()
    buf = model.SerializeToString()
    bare, found = wire.split(buf)
    parsed = onnx.load_from_string(bare)
    file = io.BytesIO()
    writer = PieceWriter(file, parsed, wire.FileTensors(buf, parsed, found))
    fc = parsed.graph.initializer[2]
    writer.write(onnx.TensorProto(name=fc.name, data_type=fc.data_type, dims=fc.dims), np.full((4, 27), 0.5, np.float32))
    writer.finish()
    expected = onnx.ModelProto()
    expected.CopyFrom(model)
    expected.graph.initializer[2].CopyFrom(from_array(np.full((4, 27), 0.5, np.float32), fc))
    assert onnx.load_from_string(file.getvalue()).SerializeToString() == expected.SerializeToString()


def test_restore_puts_the_data_back_but_where_told():
    model = mixed_model()
    buf = model.SerializeToString()
    bare, found = wire.split(buf)
    parsed = onnx.load_from_string(bare)
    wire.FileTensors(buf, parsed, found).restore(parsed, keep_out={"fc.w"})
    assert not parsed.graph.initializer[2].raw_data
    parsed.graph.initializer[2].raw_data = model.graph.initializer[2].raw_data
    assert parsed.SerializeToString() == model.SerializeToString()


@pytest.mark.parametrize("data", [b"\x0b\x00", b"\x3a\x05ab", b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80", b"\x00\x01"])
def test_malformed_wire_is_refused(data):
    with pytest.raises(wire.WireError):
        wire.split(data)


def test_duplicate_initializer_names_are_refused():
    model = conv_gemm_model()
    model.graph.initializer.append(model.graph.initializer[0])
    buf = model.SerializeToString()
    bare, found = wire.split(buf)
    with pytest.raises(wire.WireError, match="share a name"):
        wire.FileTensors(buf, onnx.load_from_string(bare), found)

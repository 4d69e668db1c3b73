"""Decode and float export: compact -> the quantized float model again, byte for byte."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from inq_onnx.errors import ExportError
from inq_onnx.export import decode, decode_op, to_compact, to_float
from inq_onnx.graph.tensors import iter_graphs, to_array
from tests.conftest import tensor
from tests.export.models import branch_model, conv_gemm_model, quantized


def as_bfloat16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its weight initializers stored as bfloat16 (values exact: powers of two)."""
    for init in model.graph.initializer:
        if init.name.endswith(".w"):
            bits = (onnx.numpy_helper.to_array(init).view(np.uint32) >> 16).astype(np.uint16)
            init.ClearField("raw_data")
            init.data_type, init.raw_data = TensorProto.BFLOAT16, bits.tobytes()
    return model


def constants_model() -> onnx.ModelProto:
    """conv_gemm_model with its weights as Constant nodes whose tensors are named otherwise ("")."""
    q = quantized(conv_gemm_model(), 4)
    for name, tensor_name in (("fc.w", ""), ("conv.w", "conv_weight")):
        init = next(i for i in q.graph.initializer if i.name == name)
        value = onnx.TensorProto()
        value.CopyFrom(init)
        value.ClearField("name")
        if tensor_name:
            value.name = tensor_name
        node = onnx.helper.make_node("Constant", [], [name], name=f"const_{name}", value=value)
        q.graph.node.insert(0, node)
        q.graph.initializer.remove(init)
    return q


CASES = {
    "initializers": lambda: quantized(conv_gemm_model(), 5, per_channel=True),
    "constants": constants_model,
    "if-branches": branch_model,
    "opset-11": lambda: branch_model(opset=11, bits=2),
    "float16": lambda: quantized(conv_gemm_model(dtype=np.float16), 3),
    "bfloat16": lambda: as_bfloat16(quantized(conv_gemm_model(), 4)),
    "ir-7": lambda: _with_ir(quantized(conv_gemm_model(), 4), 7),
}


def _with_ir(model, ir):
    model.ir_version = ir
    return model


@pytest.mark.parametrize("case", sorted(CASES))
def test_decode_gives_the_quantized_model_back_byte_for_byte(case):
    q = CASES[case]()
    c, _ = to_compact(q)
    d = decode(c)
    assert d.SerializeToString() == q.SerializeToString()
    assert not d.functions and all(n.domain != decode_op.DOMAIN for _, g in iter_graphs(d.graph) for n in g.node)


def test_to_float_of_a_plain_model_is_a_copy():
    q = quantized(conv_gemm_model(), 4)
    f = to_float(q)
    assert f is not q and f.SerializeToString() == q.SerializeToString()


def test_bfloat16_weights_survive_the_compact_model():
    q = as_bfloat16(quantized(conv_gemm_model(), 4))
    c, report = to_compact(q)
    assert {t.dtype for t in report.tensors} == {"bfloat16"}
    w = to_array(next(i for i in decode(c).graph.initializer if i.name == "fc.w"))
    np.testing.assert_array_equal(w, to_array(next(i for i in q.graph.initializer if i.name == "fc.w")))


def test_corrupt_or_unstamped_compact_models_are_refused():
    c, _ = to_compact(quantized(conv_gemm_model(), 4))
    unstamped = onnx.ModelProto()
    unstamped.CopyFrom(c)
    del unstamped.metadata_props[:]
    with pytest.raises(ExportError, match="no 'inq_onnx.compact' metadata"):
        decode(unstamped)
    packed = next(i for i in c.graph.initializer if i.name.endswith(".p"))
    packed.CopyFrom(tensor(packed.name, np.zeros(3, np.uint8)))  # too short for its weights
    with pytest.raises(ExportError, match="cannot decode the node making"):
        decode(c)


def test_version_1_compact_models_with_flat_indices_still_decode(monkeypatch):
    """Domain version 1 wrote the indices of 3-, 5-, 6- and 7-bit streams flat, split in fields
    (and had no radix fields)."""
    from inq_onnx.export import packing

    monkeypatch.setattr(packing, "choose_fields", lambda b, count, tables=1, negative_zero=False: packing.fields_of(b))
    q = quantized(conv_gemm_model(), 3)
    c, _ = to_compact(q)
    next(o for o in c.opset_import if o.domain == decode_op.DOMAIN).version = 1
    sizes = next(i for i in c.graph.initializer if i.name.endswith(".k"))
    rows = onnx.numpy_helper.to_array(sizes)
    sizes.CopyFrom(onnx.numpy_helper.from_array(rows * packing.fields_of(3).fields, sizes.name))
    assert decode(c).SerializeToString() == q.SerializeToString()


DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("name", ["conv_gemm_3b", "conv_gemm_4b_per_channel", "branches_3b"])
def test_version_3_compact_files_still_decode_byte_for_byte(name):
    """Files written by the compact export of domain version 3 (before element fields), kept in
    tests/export/data with the quantized models they came from."""
    c, q = onnx.load(str(DATA / f"{name}.compact-v3.onnx")), onnx.load(str(DATA / f"{name}.onnx"))
    assert next(o.version for o in c.opset_import if o.domain == decode_op.DOMAIN) == 3
    assert decode(c).SerializeToString() == q.SerializeToString()


@pytest.mark.parametrize("case", ["initializers", "constants", "if-branches", "opset-11", "float16", "bfloat16"])
def test_element_fields_decode_to_the_quantized_model_byte_for_byte(monkeypatch, case):
    from inq_onnx.export import layout, packing

    monkeypatch.setattr(layout, "ELEMENT_MIN_CODES", 0)
    monkeypatch.setattr(packing, "TABLE_SHARE", 0)
    monkeypatch.setattr(packing, "TABLE_COST", 0)
    q = CASES[case]()
    c, _ = to_compact(q)
    assert any(f.name.startswith("Table") for f in c.functions)
    assert decode(c).SerializeToString() == q.SerializeToString()

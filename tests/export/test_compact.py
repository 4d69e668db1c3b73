"""Compact export: structure (names, opsets, metadata, checker) and numbers (ONNX Runtime outputs
and decoded weights identical to the quantized float model, bit for bit)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from inq_onnx.errors import ExportError
from inq_onnx.export import decode_op, packing, to_compact
from inq_onnx.export.sites import COMPACT_KEY
from inq_onnx.quantize import METADATA_KEY
from tests.conftest import make_model, tensor
from tests.export.models import (branch_model, codes_model, conv_gemm_model, outputs_of_weights, quantize_all,
                                 quantized, run, stamp)

X = np.random.default_rng(1).normal(size=(3, 2, 5, 5)).astype(np.float32)


def names(model: onnx.ModelProto) -> set[str]:
    graph = model.graph
    return {n.name for n in graph.node} | {o for n in graph.node for o in n.output} | {i.name for i in graph.input}


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("per_channel", [False, True])
def test_conv_gemm_outputs_and_weights_identical(bits, per_channel):
    q = quantized(conv_gemm_model(), bits, per_channel)
    before = q.SerializeToString()
    c, report = to_compact(q)
    assert q.SerializeToString() == before  # the input is never touched
    onnx.checker.check_model(c, full_check=True)
    assert {t.name for t in report.tensors} == {"conv.w", "fc.w"} and not report.kept_float
    (a,), (b,) = run(q, {"x": X}), run(c, {"x": X})
    assert np.max(np.abs(a - b)) == 0 and a.tobytes() == b.tobytes()
    weights = ["conv.w", "fc.w"]
    decoded = run(outputs_of_weights(c, weights), {"x": X})[1:]
    expected = [onnx.numpy_helper.to_array(i) for i in q.graph.initializer if i.name in weights]
    assert [d.tobytes() for d in decoded] == [e.tobytes() for e in expected]
    # structure: every original name stays, opsets and metadata are kept, the stamp is added
    assert names(q) <= names(c) and c.ir_version == q.ir_version
    assert list(c.opset_import)[:-1] == list(q.opset_import) and c.opset_import[-1].domain == decode_op.DOMAIN
    keys = [p.key for p in c.metadata_props]
    assert METADATA_KEY in keys and COMPACT_KEY in keys
    assert not {i.name for i in c.graph.initializer} & set(weights)


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("axes", [(), (0,), (1,)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_random_codes_decode_exactly(bits, axes, dtype):
    model, values = codes_model((9, 5, 3), bits, axes, dtype, seed=bits)
    c, _ = to_compact(model)
    (out,) = run(c, {})
    assert out.dtype == values.dtype and out.tobytes() == values.tobytes()


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("axes", [(), (0,)])
def test_wide_fields_decode_exactly_and_back(monkeypatch, bits, axes):
    from inq_onnx.export import decode, packing

    monkeypatch.setattr(packing, "choose_fields", lambda b, count, tables=1, negative_zero=False: packing.fields_of(b, wide=True))
    model, values = codes_model((7, 5, 3), bits, axes, np.float32, seed=bits)
    c, _ = to_compact(model)
    wide = packing.fields_of(bits, wide=True)
    assert [f.name for f in c.functions] == [decode_op.op_type(wide)]
    (out,) = run(c, {})
    assert out.tobytes() == values.tobytes()
    assert decode(c).SerializeToString() == model.SerializeToString()


def element_everywhere(monkeypatch):
    """Element fields for every stream, whatever its size (tables of any size allowed)."""
    from inq_onnx.export import layout

    monkeypatch.setattr(layout, "ELEMENT_MIN_CODES", 0)
    monkeypatch.setattr(packing, "TABLE_SHARE", 0)
    monkeypatch.setattr(packing, "TABLE_COST", 0)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 8])
@pytest.mark.parametrize("axes", [(), (0,)])
@pytest.mark.parametrize("shape", [(7, 5, 3), (6, 4), (5, 7), (4, 2, 1, 1)])
def test_element_fields_decode_exactly_and_back(monkeypatch, bits, axes, shape):
    from inq_onnx.export import decode

    element_everywhere(monkeypatch)
    model, values = codes_model(shape, bits, axes, np.float32, seed=bits)
    c, _ = to_compact(model)
    layout = packing.element_fields(packing.element_layouts(bits, 1 << 40), shape)
    assert [f.name for f in c.functions] == [f"Table{bits}e{layout.m}"]
    (out,) = run(c, {})
    assert out.tobytes() == values.tobytes()
    assert decode(c).SerializeToString() == model.SerializeToString()
    maker = next(n for n in c.graph.node if n.output[0] == "w")
    direct = shape[-1] == layout.m and not axes
    assert (maker.op_type == "Gather") == direct  # the last axis is one field: no reshape of floats
    if direct:
        assert not any(n.op_type in ("Reshape", "Slice") for n in c.graph.node)


@pytest.mark.parametrize("opset", [11, 17])
@pytest.mark.parametrize("bits", [3, 4])
def test_element_fields_in_if_branches_half_precision_and_conv_models(monkeypatch, opset, bits):
    element_everywhere(monkeypatch)
    q = branch_model(opset=opset, bits=bits)
    c, _ = to_compact(q)
    onnx.checker.check_model(c, full_check=True)
    assert all(f.name.startswith("Table") for f in c.functions)
    x = np.random.default_rng(2).normal(size=(2, 6)).astype(np.float32)
    for flag in (True, False):
        feeds = {"x": x, "flag": np.array(flag)}
        assert run(q, feeds)[0].tobytes() == run(c, feeds)[0].tobytes()
    for dtype, per_channel in ((np.float16, False), (np.float32, True)):
        model = conv_gemm_model(dtype=dtype)
        model.opset_import[0].version = opset
        q = quantized(model, bits, per_channel)
        c, _ = to_compact(q)
        x = X.astype(dtype)
        assert run(q, {"x": x})[0].tobytes() == run(c, {"x": x})[0].tobytes()


def test_size_is_about_b_over_32_of_float():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(1024, 512)).astype(np.float32)
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                       [helper.make_tensor_value_info("x", 1, [1, 1024])],
                       [helper.make_tensor_value_info("y", 1, [1, 512])], [tensor("w", w)])
    for bits in (2, 3, 4, 5):
        q = stamp(quantize_all(model, bits), bits, {"w": []})
        c, _ = to_compact(q)
        ratio = c.ByteSize() / q.ByteSize()
        bits_per_weight = 8 * (c.ByteSize() - (q.ByteSize() - 4 * w.size)) / w.size
        per_code = packing.choose_fields(bits, w.size, 2).width / packing.choose_fields(bits, w.size, 2).m
        print(f"{bits} bits: compact / float = {ratio:.4f} (b/32 = {bits / 32:.4f}), "
              f"{bits_per_weight:.3f} bits per weight ({per_code:.3f} per code in radix fields)")
        assert per_code < bits and per_code / 32 <= ratio <= per_code / 32 + 0.003
        assert bits_per_weight <= per_code + 0.05


def test_big_streams_take_element_fields_and_stay_about_b_bits():
    from inq_onnx.export import layout

    rng = np.random.default_rng(0)
    w = rng.normal(size=(1024, 1024)).astype(np.float32)
    assert w.size >= layout.ELEMENT_MIN_CODES
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                       [helper.make_tensor_value_info("x", 1, [1, 1024])],
                       [helper.make_tensor_value_info("y", 1, [1, 1024])], [tensor("w", w)])
    x = rng.normal(size=(1, 1024)).astype(np.float32)
    # 3 bits: 2^20 codes are no multiple of 3, so 4 codes in 16 bits rather than a slice of the padding
    for bits, function, per_code in ((2, "Table2e4", 2), (3, "Table3e4", 4), (4, "Table4e4", 4), (5, "Table5e3", 16 / 3)):
        q = stamp(quantize_all(model, bits), bits, {"w": []})
        c, _ = to_compact(q)
        assert [f.name for f in c.functions] == [function]
        bits_per_weight = 8 * (c.ByteSize() - (q.ByteSize() - 4 * w.size)) / w.size
        assert per_code <= bits_per_weight <= per_code + 0.05
        assert run(q, {"x": x})[0].tobytes() == run(c, {"x": x})[0].tobytes()


def test_a_layout_whose_weights_do_not_pay_for_its_table_is_not_used(monkeypatch):
    monkeypatch.setattr(packing, "TABLE_SHARE", 1)  # so that a 2^20-code model may take 59,049-row tables
    rng = np.random.default_rng(1)
    big, small = rng.normal(size=(1024, 1024)).astype(np.float32), rng.normal(size=(1024, 10)).astype(np.float32)
    model = make_model([helper.make_node("MatMul", ["x", "big"], ["h"]), helper.make_node("MatMul", ["h", "small"], ["y"])],
                       [helper.make_tensor_value_info("x", 1, [1, 1024])],
                       [helper.make_tensor_value_info("y", 1, [1, 10])], [tensor("big", big), tensor("small", small)])
    q = stamp(quantize_all(model, 4), 4, {"big": [], "small": []})
    # "small" alone would take 5 codes in 16 bits, whose table (59,049 rows) costs more than its 10,240 codes
    layouts = packing.element_layouts(4, big.size + small.size, 3)
    assert packing.element_fields(layouts, small.shape).m == 5
    c, _ = to_compact(q)
    assert [f.name for f in c.functions] == ["Table4e4"]
    x = rng.normal(size=(1, 1024)).astype(np.float32)
    assert run(q, {"x": x})[0].tobytes() == run(c, {"x": x})[0].tobytes()


@pytest.mark.parametrize("opset", [11, 17, 21])
def test_constants_in_if_branches_with_the_same_name(opset):
    q = branch_model(opset=opset)
    c, report = to_compact(q)
    onnx.checker.check_model(c, full_check=True)
    where = sorted(t.where for t in report.tensors)
    assert where == ["constant 'Wb' (subgraph at depth 1)"] * 2 + ["initializer 'W' (main graph)"]
    branches = [a.g for a in c.graph.node[-1].attribute]
    assert all(any(decode_op.is_unpack_node(n) for n in g.node) for g in branches)
    x = np.random.default_rng(2).normal(size=(2, 6)).astype(np.float32)
    for flag in (True, False):
        feeds = {"x": x, "flag": np.array(flag)}
        assert run(q, feeds)[0].tobytes() == run(c, feeds)[0].tobytes()


@pytest.mark.parametrize("opset", [11, 13])
def test_opset_11_and_half_precision_models(opset):
    model = conv_gemm_model(dtype=np.float16)
    model.opset_import[0].version = opset
    q = quantized(model, 4)
    c, report = to_compact(q)
    assert {t.dtype for t in report.tensors} == {"float16"}
    x = X.astype(np.float16)
    assert run(q, {"x": x})[0].tobytes() == run(c, {"x": x})[0].tobytes()


def test_ir_version_below_8_is_raised_and_said():
    q = quantized(conv_gemm_model(), 4)
    q.ir_version = 7
    c, report = to_compact(q)
    assert c.ir_version == 8 and "IR version 7 raised to 8" in report.notes[0]
    assert run(q, {"x": X})[0].tobytes() == run(c, {"x": X})[0].tobytes()


def test_off_codebook_weight_is_named_or_kept_float():
    q = quantized(conv_gemm_model(), 4)
    fc = next(i for i in q.graph.initializer if i.name == "fc.w")
    fc.CopyFrom(tensor("fc.w", onnx.numpy_helper.to_array(fc) * 1.1))
    expected = r"cannot export initializer 'fc.w' \(main graph\).*off its 4-bit codebook.*To fix"
    with pytest.raises(ExportError, match=expected):
        to_compact(q)
    c, report = to_compact(q, allow_float=True)
    assert [t.name for t in report.tensors] == ["conv.w"] and "'fc.w'" in report.kept_float[0]
    assert run(q, {"x": X})[0].tobytes() == run(c, {"x": X})[0].tobytes()


def test_unquantized_compact_and_old_models_are_refused():
    with pytest.raises(ExportError, match="no 'inq_onnx.quantized' metadata.*To fix this, quantize it first"):
        to_compact(conv_gemm_model())
    c, _ = to_compact(quantized(conv_gemm_model(), 4))
    with pytest.raises(ExportError, match="already in the compact format"):
        to_compact(c)
    old = quantized(conv_gemm_model(), 4)
    old.opset_import[0].version = 10
    with pytest.raises(ExportError, match="opset 10"):
        to_compact(old)
    missing = stamp(conv_gemm_model(), 4, {"nope": []})
    with pytest.raises(ExportError, match="'nope' named in the metadata is not a constant"):
        to_compact(missing)


def test_an_initializer_that_is_also_a_graph_input_is_refused():
    q = quantized(conv_gemm_model(), 4)
    q.graph.input.append(helper.make_tensor_value_info("fc.w", TensorProto.FLOAT, [4, 27]))
    with pytest.raises(ExportError, match="also a graph input"):
        to_compact(q)

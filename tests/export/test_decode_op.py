"""The Unpack function: ONNX Runtime computes exactly the numpy reference, at every bit-width and
every opset from 11 to 21, with only ops whose signature does not change in that range."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from inq_onnx import codebook
from inq_onnx.export import decode_op, packing
from tests.conftest import make_model, tensor
from tests.export.models import run

# ops whose inputs and attributes are the same from opset 11 to 21 (only types were added; Reshape's
# allowzero of opset 14 defaults to the old behaviour; Concat takes a negative axis from opset 11)
STABLE_OPS = {"Constant", "Cast", "Reshape", "MatMul", "Floor", "Mod", "Mul", "Gather", "Range", "Div", "Expand",
              "Concat"}


def unpack_model(packed: np.ndarray, bits, opset: int) -> onnx.ModelProto:
    layout = bits if isinstance(bits, packing.Fields) else packing.fields_of(bits)
    model = make_model([decode_op.unpack_node(bits, "p", ["i", "t"])], [],
                       [helper.make_tensor_value_info("i", TensorProto.INT32, ["n"] if layout.whole else ["g", "f"]),
                        helper.make_tensor_value_info("t", TensorProto.FLOAT, ["y", "m"])],
                       [tensor("p", packed)], opset=opset)
    model.opset_import.append(helper.make_opsetid(decode_op.DOMAIN, decode_op.DOMAIN_VERSION))
    model.functions.append(decode_op.unpack_function(bits, opset))
    return model


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("opset", [11, 17, 21])
def test_onnx_runtime_matches_the_numpy_reference(bits, opset):
    rng = np.random.default_rng(bits * 100 + opset)
    low, high = packing.code_range(bits)
    segments = [packing.pack_segment(rng.integers(low, high + 1, size=n), bits) for n in (5, 64, 333)]
    packed = np.concatenate(segments)
    model = unpack_model(packed, bits, opset)
    onnx.checker.check_model(model, full_check=True)
    indices, table = run(model, {})
    assert indices.dtype == np.int32
    np.testing.assert_array_equal(indices, packing.field_indices(packed, bits))
    expected = packing.field_table(bits, decode_op.unit_table(bits))
    assert table.dtype == np.float32 and table.tobytes() == expected.tobytes()


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("opset", [11, 21])
@pytest.mark.parametrize("kind", [dict(wide=True), dict(radix=True), dict(wide=True, radix=True)])
def test_wide_and_radix_fields_match_the_numpy_reference(bits, opset, kind):
    layout = packing.fields_of(bits, **kind)
    assert layout.width <= 16 and decode_op.layout_of(decode_op.op_type(layout)) == layout
    rng = np.random.default_rng(bits)
    low, high = packing.code_range(bits)
    if layout.radix:  # no negative zero's code
        low, high = -(1 << (bits - 2)), 1 << (bits - 2)
    packed = np.concatenate([packing.pack_segment(rng.integers(low, high + 1, size=n), layout) for n in (7, 300)])
    assert packed.dtype == layout.dtype
    model = unpack_model(packed, layout, opset)
    onnx.checker.check_model(model, full_check=True)
    indices, table = run(model, {})
    np.testing.assert_array_equal(indices, packing.field_indices(packed, layout))
    assert table.tobytes() == packing.field_table(layout, decode_op.unit_table(bits)).tobytes()


@pytest.mark.parametrize("bits", range(2, 9))
def test_function_uses_only_opset_stable_ops_and_stays_small(bits):
    function = decode_op.unpack_function(bits, 11)
    assert {n.op_type for n in function.node} <= STABLE_OPS
    assert function.ByteSize() < 2048  # only UNITS (2^b values) is stored; the big tables are built
    assert [o.version for o in function.opset_import if o.domain == ""] == [11]


@pytest.mark.parametrize("bits", range(2, 9))
def test_unit_table_times_two_to_the_n2_is_the_codebook(bits):
    half = codebook.levels_per_sign(bits)
    codes = np.arange(-half, half + 1)
    book = codebook.Codebook(bits, np.array(5))
    unsigned = codes & ((1 << bits) - 1)
    scaled = decode_op.unit_table(bits)[unsigned] * np.float32(2.0 ** int(book.n2))
    np.testing.assert_array_equal(scaled, codebook.decode(codes, book))


def test_opsets_below_eleven_and_foreign_names_are_refused():
    with pytest.raises(ValueError, match="opset 11"):
        decode_op.unpack_function(4, 10)
    with pytest.raises(ValueError, match="not an unpack op"):
        decode_op.bits_of("Unpack9")
    assert decode_op.bits_of("Unpack5") == 5
    assert decode_op.layout_of("Unpack4x4") == packing.Fields(4, 4)
    with pytest.raises(ValueError, match="not an unpack op"):
        decode_op.layout_of("Unpack5x4")  # 20-bit fields: no such layout


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 8])
@pytest.mark.parametrize("opset", [11, 21])
def test_table_functions_of_element_fields_match_the_numpy_reference(bits, opset):
    for layout in packing.element_layouts(bits, 1 << 40):
        assert decode_op.layout_of(decode_op.op_type(layout)) == layout
        function = decode_op.function(layout, opset)
        assert function.name == f"Table{bits}e{layout.m}" and not function.input
        assert {n.op_type for n in function.node} <= STABLE_OPS
        model = make_model([decode_op.table_node(layout, "t")], [],
                           [helper.make_tensor_value_info("t", TensorProto.FLOAT, ["y", "m"])], [], opset=opset)
        model.opset_import.append(helper.make_opsetid(decode_op.DOMAIN, decode_op.DOMAIN_VERSION))
        model.functions.append(function)
        onnx.checker.check_model(model, full_check=True)
        (table,) = run(model, {})
        assert table.tobytes() == packing.field_table(layout, decode_op.unit_table(bits)).tobytes()
    with pytest.raises(ValueError, match="not a table op"):
        decode_op.layout_of("Table4e6")  # 531,441 rows

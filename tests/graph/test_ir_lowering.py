"""IR lowering: a copy with only the version changed, or the first use of what a newer version
added, named with where it is (tensors, types, dtype attributes, fields an older onnx does not know)."""

import onnx
import pytest
from onnx import helper

from inq_onnx.graph.ir_lowering import NEWEST_KNOWN_IR, lower_ir, newer_uses, why_not_lowerable
from tests.conftest import conv_gemm_model

FLOAT4E2M1, FLOAT8E8M0, UINT2 = 23, 24, 25  # by number: onnx 1.17 has no names for them


def ir(version: int, model: onnx.ModelProto | None = None) -> onnx.ModelProto:
    model = model if model is not None else conv_gemm_model()
    model.ir_version = version
    return model


def with_unknown_field(message, tag: bytes):
    """``message`` with one empty length-delimited field appended (``tag``: its encoded key)."""
    return type(message).FromString(message.SerializeToString() + tag + b"\x00")


def test_a_model_using_nothing_newer_is_copied_with_only_the_version_changed():
    model = ir(11)
    before = model.SerializeToString()
    lowering = lower_ir(model, 10)
    assert lowering.model is not model and lowering.reason == ""
    assert lowering.model.ir_version == 10 and model.SerializeToString() == before
    assert ir(11, lowering.model).SerializeToString() == before


@pytest.mark.parametrize("version", [9, 10])
def test_a_model_at_or_below_the_target_is_itself(version):
    model = ir(version)
    assert lower_ir(model, 10).model is model and why_not_lowerable(model, 10) == ""


def test_a_tensor_of_a_newer_data_type_is_named():
    model = ir(11)
    model.graph.initializer.append(onnx.TensorProto(name="fp4", data_type=FLOAT4E2M1, dims=[2], raw_data=b"\x21"))
    lowering = lower_ir(model, 10)
    assert lowering.model is None
    assert lowering.reason == "it uses FLOAT4E2M1 (IR version 11) in tensor 'fp4'"
    assert lower_ir(ir(12, model), 11).model.ir_version == 11


def test_a_newer_elem_type_and_a_cast_to_it_in_a_subgraph_are_found():
    model = ir(13)
    model.graph.value_info.append(helper.make_tensor_value_info("c", UINT2, None))
    cast = helper.make_node("Cast", ["x"], ["e"], name="to_e8m0", to=FLOAT8E8M0)
    branch = helper.make_graph([cast], "branch", [], [helper.make_tensor_value_info("e", FLOAT8E8M0, None)])
    model.graph.node.append(helper.make_node("If", ["cond"], ["e"], name="if", then_branch=branch, else_branch=branch))
    uses = newer_uses(model, 10)
    assert "UINT2 (IR version 13) in value 'c'" in uses
    assert "FLOAT8E8M0 (IR version 12) in attribute 'to' of node 'to_e8m0'" in uses
    assert "FLOAT8E8M0 (IR version 12) in value 'e'" in uses
    assert newer_uses(model, 12) == ["UINT2 (IR version 13) in value 'c'"]
    assert why_not_lowerable(model, 10).endswith(f"(and {len(uses) - 1} more uses of newer IR versions)")


def test_multi_device_fields_are_found_whether_or_not_the_installed_onnx_knows_them():
    model = with_unknown_field(ir(11), b"\xd2\x01")  # ModelProto.configuration (26), IR 11
    assert newer_uses(model, 10) == ["the multi-device configuration (IR version 11) in the model"]
    node = with_unknown_field(helper.make_node("Relu", ["a"], ["b"], name="r"), b"\x52")  # NodeProto.device_configurations (10)
    model = ir(11)
    model.functions.append(helper.make_function("local", "f", ["a"], ["b"], [node], [helper.make_opsetid("", 17)]))
    assert newer_uses(model, 10) == ["multi-device annotations (IR version 11) in node 'r'"]
    assert newer_uses(model, 11) == []


def test_a_field_no_onnx_knows_blocks_lowering():
    model = with_unknown_field(ir(11), b"\xfa\x06")  # field 111
    assert why_not_lowerable(model, 10) == "it uses field 111 of ModelProto, which this onnx does not know, in the model"


def test_an_ir_version_newer_than_the_tables_is_refused():
    reason = why_not_lowerable(ir(NEWEST_KNOWN_IR + 1), 10)
    assert reason.startswith(f"IR version {NEWEST_KNOWN_IR + 1} is newer than inq-onnx knows")

"""The weight table on tiny inline graphs: what is selected, what is skipped and why."""

import numpy as np
import onnx
from onnx import TensorProto, helper

from inq_onnx.graph.weights import select_weights
from tests.conftest import conv_gemm_model, make_model, tensor

F = TensorProto.FLOAT


def by_name(model, **kw):
    return {c.name: c for c in select_weights(model, **kw)}


def vi(name, shape, t=F):
    return helper.make_tensor_value_info(name, t, shape)


def test_conv_and_gemm_weights_selected_biases_skipped():
    found = by_name(conv_gemm_model())
    assert found["conv.w"].selected and found["conv.w"].channel_axes == (0,)
    assert found["fc.w"].selected and found["fc.w"].channel_axes == (0,)  # transB=1: [out, in]
    assert found["conv.b"].skip_reason == "bias (input 2) of Conv 'conv'"
    assert found["fc.b"].skip_reason == "bias (input 2) of Gemm 'fc'"


def test_matmul_operand_order_decides_the_output_axis():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w_right"], ["h"]), helper.make_node("MatMul", ["w_left", "h"], ["y"])]
    model = make_model(nodes, [vi("x", [3, 4])], [vi("y", [5, 6])],
                       [tensor("w_right", rng.normal(size=(4, 6)).astype(np.float32)),
                        tensor("w_left", rng.normal(size=(5, 3)).astype(np.float32))])
    found = by_name(model)
    assert found["w_right"].channel_axes == (1,)
    assert found["w_left"].channel_axes == (0,)


def test_weight_through_layout_ops_is_traced_to_its_constant():
    w = np.ones((6, 4), np.float32)
    nodes = [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]), helper.make_node("Identity", ["wt"], ["wi"]),
             helper.make_node("MatMul", ["x", "wi"], ["y"])]
    found = by_name(make_model(nodes, [vi("x", [2, 6 // 6 * 4])], [vi("y", [2, 6])], [tensor("w", w)]))
    assert found["w"].selected and found["w"].channel_axes is None
    assert "layout ops" in found["w"].notes[0]
    assert "via Transpose/Identity" in found["w"].uses[0]


def test_a_weight_also_used_elsewhere_is_skipped():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"), helper.make_node("Add", ["x", "w"], ["z"], name="add")]
    found = by_name(make_model(nodes, [vi("x", [4, 4])], [vi("y", [4, 4]), vi("z", [4, 4])],
                               [tensor("w", np.ones((4, 4), np.float32))]))
    assert found["w"].skip_reason.startswith("shared with a non-weight use: feeds Add 'add'")


def test_initializer_that_is_a_graph_input_is_skipped():
    model = conv_gemm_model()
    model.graph.input.append(vi("conv.w", [3, 2, 3, 3]))
    assert "graph input" in by_name(model)["conv.w"].skip_reason


def test_constant_in_if_branch_reading_an_outer_scope_weight():
    rng = np.random.default_rng(1)
    branch_nodes = [helper.make_node("Constant", [], ["kb"], value=tensor("kb", rng.normal(size=(4, 4)).astype(np.float32))),
                    helper.make_node("MatMul", ["x", "outer_w"], ["t"]), helper.make_node("MatMul", ["t", "kb"], ["yb"])]
    then_g = helper.make_graph(branch_nodes, "then", [], [vi("yb", [2, 4])])
    else_g = helper.make_graph([helper.make_node("Identity", ["x"], ["ye"])], "else", [], [vi("ye", [2, 4])])
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)]
    model = make_model(nodes, [vi("x", [2, 4]), vi("c", [], TensorProto.BOOL)], [vi("y", [2, 4])],
                       [tensor("outer_w", rng.normal(size=(4, 4)).astype(np.float32))])
    found = by_name(model)
    assert found["outer_w"].selected and found["outer_w"].site.graph_path == ()
    assert found["kb"].selected and found["kb"].site.kind == "constant" and len(found["kb"].site.graph_path) == 1


def test_integer_weights_of_quantized_ops_are_reported_as_already_quantized():
    nodes = [helper.make_node("MatMulInteger", ["x", "wq"], ["y"], name="mmi")]
    model = make_model(nodes, [vi("x", [2, 4], TensorProto.UINT8)], [vi("y", [2, 3], TensorProto.INT32)],
                       [tensor("wq", np.ones((4, 3), np.uint8))])
    assert by_name(model)["wq"].skip_reason == "already quantized: feeds MatMulInteger 'mmi'"


def test_recurrent_and_transposed_conv_axes():
    rng = np.random.default_rng(2)
    inits = [tensor("W", rng.normal(size=(1, 12, 3)).astype(np.float32)), tensor("R", rng.normal(size=(1, 12, 3)).astype(np.float32)),
             tensor("B", rng.normal(size=(1, 24)).astype(np.float32)), tensor("ct", rng.normal(size=(2, 5, 2, 2)).astype(np.float32))]
    nodes = [helper.make_node("LSTM", ["seq", "W", "R", "B"], ["h"], hidden_size=3),
             helper.make_node("ConvTranspose", ["img", "ct"], ["up"], strides=[2, 2])]
    model = make_model(nodes, [vi("seq", [4, 1, 3]), vi("img", [1, 2, 3, 3])], [vi("h", None), vi("up", None)], inits)
    found = by_name(model)
    assert found["W"].channel_axes == (0, 1) and found["R"].channel_axes == (0, 1)
    assert found["B"].skip_reason.startswith("bias (input 3) of LSTM")
    assert found["ct"].channel_axes == (1,)


def test_einsum_constant_operand_channels_are_its_output_letters():
    nodes = [helper.make_node("Einsum", ["x", "w"], ["y"], equation="bi,oi->bo")]
    model = make_model(nodes, [vi("x", [2, 3])], [vi("y", [2, 5])], [tensor("w", np.ones((5, 3), np.float32))])
    assert by_name(model)["w"].channel_axes == (0,)


def test_include_exclude_and_min_size():
    model = conv_gemm_model()
    found = by_name(model, exclude=["fc.*"], include=["conv.b"], min_size=60)
    assert found["fc.w"].skip_reason == "excluded by --exclude"
    assert found["conv.w"].skip_reason.startswith("smaller than --min-size")  # 54 values
    assert found["conv.b"].selected and "included by --include" in found["conv.b"].notes[-1]


def test_all_names_and_default_opset_cover_subgraphs_and_imports():
    from inq_onnx.graph.tensors import all_names, default_opset
    from tests.conftest import make_model
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["inner"])], "b", [], [vi("inner", [1])])
    model = make_model([helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)],
                       [vi("x", [1]), vi("c", [], TensorProto.BOOL)], [vi("y", [1])], opset=13)
    assert {"x", "c", "y", "inner"} <= all_names(model.graph)
    assert default_opset(model) == 13

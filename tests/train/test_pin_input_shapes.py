import pytest
from onnx import helper, TensorProto

from inq_onnx.errors import InvalidOptionError
from inq_onnx.train.rewrites import pin_input_shapes
from tests.train.train_helpers import frozen


def _model():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, "h", "w"])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [-1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 3, "h", "w"])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x, z], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _dims(value):
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]


def test_pinned_dims_are_static_and_minus_one_becomes_symbolic():
    model = _model()
    before = frozen(model)
    result = pin_input_shapes(model, {"x": (8, 3, 48, 192)})
    assert frozen(model) == before
    assert _dims(result.model.graph.input[0]) == [8, 3, 48, 192]
    assert _dims(result.model.graph.input[1]) == ["z_dim0", 2]
    assert _dims(result.model.graph.output[0]) == ["y_dim0", 3, "h", "w"]
    assert result.changed == 3


@pytest.mark.parametrize("shapes,match", [
    ({"x": (8, 3, 48)}, "rank"),
    ({"x": (8, 4, 48, 192)}, "dim 1"),
    ({"x": (0, 3, 48, 192)}, "dim 0"),
    ({"nope": (1,)}, "no graph input"),
])
def test_bad_shapes_raise_with_a_fix(shapes, match):
    with pytest.raises(InvalidOptionError, match=match) as error:
        pin_input_shapes(_model(), shapes)
    assert "To fix this" in str(error.value)

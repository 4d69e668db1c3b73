import numpy as np
from onnx import helper, numpy_helper
from tests.train.train_helpers import frozen, max_diff, model_from_text, ops, rand

from inq_onnx.train.rewrites import constants_to_initializers

TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,2,5,5] x) => (float[1,3,3,3] y, float[1] k) {
  W = Constant <value = float[3,2,3,3] {%s}> ()
  two = Constant <value_float = 2.0> ()
  k = Constant <value = float[1] {1.5}> ()
  c = Conv (x, W)
  y = Mul (c, two)
}
""" % ", ".join(str(v) for v in rand(3, 2, 3, 3).ravel())


def test_value_constants_become_initializers_of_the_same_name():
    model = model_from_text(TEXT)
    before = frozen(model)
    result = constants_to_initializers(model)
    assert frozen(model) == before
    assert ops(result.model) == ["Constant", "Constant", "Conv", "Mul"]
    assert [t.name for t in result.model.graph.initializer] == ["W"]
    assert result.changed == 1
    np.testing.assert_array_equal(numpy_helper.to_array(result.model.graph.initializer[0]).shape, (3, 2, 3, 3))
    assert max_diff(model, result.model, {"x": rand(1, 2, 5, 5)}) == 0


def test_other_constant_forms_and_graph_outputs_are_left_alone():
    result = constants_to_initializers(model_from_text(TEXT))
    kept = [n.output[0] for n in result.model.graph.node if n.op_type == "Constant"]
    assert kept == ["two", "k"]
    assert any("left alone" in note for note in result.notes)


def test_no_constant_returns_the_model_unchanged():
    model = helper.make_model(helper.make_graph([], "g", [], []))
    result = constants_to_initializers(model)
    assert result.changed == 0 and not result.notes

from tests.train.train_helpers import frozen, max_diff, model_from_text, ops, rand

from inq_onnx.graph.tensors import default_opset
from inq_onnx.train.rewrites.opset_raise import raise_opset

# Softmax over a flattened tail, ReduceSum and Unsqueeze with axes attributes: all change form at 13.
OPSET_12 = """
<ir_version: 7, opset_import: ["" : 12]>
g (float[2,3,4] x) => (float[2,3,4] y, float[2,1,4] s) {
  y = Softmax <axis = 1> (x)
  r = ReduceSum <axes = [1], keepdims = 0> (y)
  s = Unsqueeze <axes = [1]> (r)
}
"""


def test_opset_12_is_raised_to_13_with_the_same_outputs():
    model = model_from_text(OPSET_12)
    before = frozen(model)
    result = raise_opset(model, 13, "KL")
    assert default_opset(result.model) == 13 and result.changed == 1 and "12 -> 13 (KL)" in result.notes[0]
    assert [o.name for o in result.model.graph.output] == ["y", "s"]
    assert max_diff(model, result.model, {"x": rand(2, 3, 4)}) < 1e-6
    assert frozen(model) == before  # the input is not touched


def test_softmax_over_a_flattened_tail_keeps_its_meaning():
    model = model_from_text(OPSET_12)
    raised = raise_opset(model, 13).model
    assert "Softmax" in ops(raised) and len(ops(raised)) > len(ops(model))  # reshaped around, not reinterpreted


def test_a_new_enough_model_is_returned_as_is():
    model = model_from_text("""
    <ir_version: 7, opset_import: ["" : 13]>
    g (float[2,3,4] x) => (float[2,3,4] y) { y = Softmax <axis = 1> (x) }
    """)
    assert raise_opset(model, 13).model is model

import numpy as np
from tests.train.train_helpers import model_from_text, rand

from inq_onnx.train.params import learned_parameters

# A ViT-like block and a YOLO-like decode head: biases as Add(bias, MatMul), LayerNorm scale and
# bias, a Conv bias, and constants that are not learned (a GELU's 1.0, an anchor grid).
TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,4,6] x, float[2,3,5,5] img) => (float[2,4,3] y, float[2,2,5,5] boxes) {
  n = LayerNormalization <axis = -1> (x, S, B)
  m = MatMul (n, W)
  h = Add (bq, m)
  e = Erf (h)
  one_plus = Add (e, one)
  y = Mul (one_plus, h)
  c = Conv <pads = [1,1,1,1]> (img, K, kb)
  s = Sigmoid (c)
  boxes = Add (s, grid)
}
"""


def test_biases_and_norm_parameters_are_learned_and_decode_constants_are_not():
    model = model_from_text(TEXT, S=rand(6), B=rand(6, seed=1), W=rand(6, 3, seed=2), bq=rand(3, seed=3),
                            one=np.array(1.0, np.float32), K=rand(2, 3, 3, 3, seed=5), kb=rand(2, seed=6),
                            grid=rand(1, 2, 5, 5, seed=7))
    assert sorted(learned_parameters(model)) == ["B", "S", "bq", "kb"]

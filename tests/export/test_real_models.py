"""Every model of ../shared/models at 2 to 5 bits: the compact model gives exactly the outputs of
the quantized float model in ONNX Runtime, and decodes back to it byte for byte (slow)."""

import numpy as np
import onnx
import pytest

import inq_onnx
from inq_onnx.export import decode, to_compact
from tests.conftest import float_models, shared_model
from tests.export.models import run

# small but valid inputs (fixed dims where a model needs them); others get 1 for each free dim
SHAPES = {
    "ch_PP-OCRv4_det_infer.onnx": {"x": (1, 3, 64, 64)},
    "ch_ppocr_mobile_v2.0_cls_infer.onnx": {"x": (1, 3, 48, 192)},
    "silero_vad.onnx": {"input": (1, 576), "state": (2, 1, 128), "sr": ()},
    "silero_vad_half.onnx": {"input": (1, 576), "state": (2, 1, 128)},
    "320n.onnx": {"images": (1, 3, 64, 64)},
    "common_old.onnx": {"input1": (1, 1, 64, 64)},
    "lenet5_mnist.onnx": {"input": (2, 1, 28, 28)},
    "resnet8_mnist.onnx": {"input": (2, 1, 28, 28)},
    "mlp_digits.onnx": {"input": (2, 64)},
}
VARIANTS = {"silero_vad.onnx": [{"sr": np.array(16000)}, {"sr": np.array(8000), "input": (1, 288)}]}  # both If branches


def feeds_for(name: str, model: onnx.ModelProto) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    variants = []
    for override in VARIANTS.get(name, [{}]):
        feeds = {}
        for inp in model.graph.input:
            dims = tuple(d.dim_value if d.dim_value > 0 else 1 for d in inp.type.tensor_type.shape.dim)
            wanted = override.get(inp.name, SHAPES.get(name, {}).get(inp.name, dims))
            dtype = onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
            fixed = isinstance(wanted, np.ndarray)
            feeds[inp.name] = wanted.astype(dtype) if fixed else rng.random(wanted).astype(dtype)
        variants.append(feeds)
    return variants


def quantize(path, bits: int, per_channel: bool) -> onnx.ModelProto:
    return inq_onnx.quantize(path, bits=bits, per_channel=per_channel).model


@pytest.mark.slow
@pytest.mark.parametrize("name", float_models() or ["(no ../shared/models)"])
@pytest.mark.parametrize("bits, per_channel", [(2, False), (3, False), (4, False), (5, False), (4, True)])
def test_compact_outputs_identical_and_decode_exact(name, bits, per_channel):
    q = quantize(shared_model(name), bits, per_channel)
    c, report = to_compact(q)
    assert not report.kept_float
    onnx.checker.check_model(c)
    for feeds in feeds_for(name, q):
        expected, got = run(q, feeds), run(c, feeds)
        for a, b in zip(expected, got):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), f"{name} at {bits} bits differs"
    assert decode(c).SerializeToString() == q.SerializeToString()
    if report.tensors:
        assert c.ByteSize() < q.ByteSize()

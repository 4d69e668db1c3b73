"""Raise the default opset of the training copy, through ``onnx.version_converter``.

Used when a loss needs a newer operator than the model's opset offers: KL distillation over
one axis of a rank > 2 output needs Softmax / LogSoftmax of opset 13 (before 13 they
normalise over the flattened tail from ``axis`` on). The converter rewrites what changed
meaning (Softmax's axis, ReduceSum / Split / Squeeze / Unsqueeze taking axes as inputs...), so
the outputs stay the same; the IR version is kept when it is already high enough.
"""

from __future__ import annotations

import onnx
from onnx import version_converter

from inq_onnx.errors import UnsupportedModelError
from inq_onnx.graph.passes import PassResult
from inq_onnx.graph.tensors import default_opset


def raise_opset(model: onnx.ModelProto, version: int, why: str = "") -> PassResult:
    """Return ``model`` with default opset >= ``version`` (unchanged when it already is)."""
    old = default_opset(model)
    if old >= version:
        return PassResult(model)
    try:
        out = version_converter.convert_version(model, version)
    except Exception as error:  # noqa: BLE001 - the converter raises many kinds
        raise UnsupportedModelError(
            f"the model's opset {old} could not be converted to {version} ({error})",
            f"convert the model to opset {version} or newer with the exporter that made it",
        ) from error
    out.ir_version = max(out.ir_version, model.ir_version)
    note = f"default opset {old} -> {version}" + (f" ({why})" if why else "")
    return PassResult(out, 1, (note,))

"""Give the training copy the newest IR version ONNX Runtime reads, when the model uses nothing
newer (``graph.ir_lowering``): the training build (1.19.2) reads IR 10, and onnx >= 1.18's
``make_model`` stamps IR 11 or later. The user's graph keeps its own IR version."""

from __future__ import annotations

import onnx

from inq_onnx.graph.passes import PassResult
from inq_onnx.graph.readers import for_runtime, runtime_limits


def lower_ir_version(model: onnx.ModelProto) -> PassResult:
    """``model`` lowered to the IR version ONNX Runtime reads (unchanged when it reads it already);
    UnsupportedModelError when something in it needs the newer version."""
    lowered = for_runtime(model)
    if lowered is model:
        return PassResult(model)
    limits = runtime_limits()
    return PassResult(lowered, 1, (f"IR version {model.ir_version} -> {lowered.ir_version} (ONNX Runtime "
                                   f"{limits.version} reads at most {limits.ir_version}; nothing newer is used)",))

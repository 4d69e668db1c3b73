"""inq-onnx as onnx-ir passes: one-shot INQ and the compact export in an export pipeline.

torch.onnx's exporter and onnxscript's optimizer hand models on as ``onnx_ir.Model``; these
passes slot in after them and chain with any other pass in an ``onnx_ir.passes.PassManager``::

    import onnx_ir as ir
    from inq_onnx.ir_passes import CompactPass, QuantizePass

    passes = ir.passes.PassManager([QuantizePass(bits=4), CompactPass()], steps=1)
    compact = passes(model).model          # model: onnx_ir.Model, e.g. torch.onnx.export(...).model

Both are functional (the input model is left as it is) and keep the input's IR version and
opsets (the compact export raises the IR version to 8 only when it was lower: model-local
functions need it). Needs ``pip install 'inq-onnx[ir]'``.
"""

from __future__ import annotations

try:
    import onnx_ir as ir
except ImportError as error:  # pragma: no cover - only without the optional extra
    raise ImportError("inq_onnx.ir_passes needs onnx-ir: pip install 'inq-onnx[ir]'") from error

from inq_onnx.export import ExportFormat, ExportResult, export
from inq_onnx.ir_model import from_proto, to_proto
from inq_onnx.quantize import quantize
from inq_onnx.report import QuantizeResult


class QuantizePass(ir.passes.FunctionalPass):
    """One-shot INQ: every selected weight rounded to 0 or ±2^k (see ``inq_onnx.quantize``).

    ``result`` holds the per-tensor report of the last call.
    """

    def __init__(self, *, bits: int = 4, per_channel: bool = False, include=(), exclude=(), min_size: int = 0):
        super().__init__()
        self.options = dict(bits=bits, per_channel=per_channel, include=tuple(include), exclude=tuple(exclude),
                            min_size=min_size)
        self.result: QuantizeResult | None = None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.result = quantize(to_proto(model), **self.options)
        return ir.passes.PassResult(from_proto(self.result.model), modified=bool(self.result.quantized))


class CompactPass(ir.passes.FunctionalPass):
    """The compact export of a quantized model: b bits per weight, decoded by a model-local
    function of standard ops, runs on stock ONNX Runtime (see ``inq_onnx.export``).

    ``result`` holds the export report of the last call.
    """

    def __init__(self, *, allow_float: bool = False):
        super().__init__()
        self.allow_float = allow_float
        self.result: ExportResult | None = None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.result = export(to_proto(model), ExportFormat.COMPACT, allow_float=self.allow_float)
        return ir.passes.PassResult(from_proto(self.result.model), modified=bool(self.result.report.tensors))


__all__ = ["CompactPass", "QuantizePass"]

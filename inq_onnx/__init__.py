"""inq-onnx: Incremental Network Quantization for any ONNX model.

Weights become powers of two or zero (Zhou et al., ICLR 2017). The pipeline reads as the
package does: ``graph.weights`` selects, ``codebook`` rounds, ``partition`` and ``train``
retrain incrementally, ``export`` writes compact or hardware files, ``verify`` checks.
"""

__version__ = "0.1.0"

from inq_onnx.errors import InqError  # noqa: E402
from inq_onnx import export  # noqa: E402  (a callable package: inq_onnx.export(model, "compact"))
from inq_onnx.export import ExportFormat, decode  # noqa: E402
from inq_onnx.options import QuantizeOptions  # noqa: E402
from inq_onnx.quantize import quantize  # noqa: E402
from inq_onnx.report import QuantizeResult, TensorReport  # noqa: E402

__all__ = ["__version__", "ExportFormat", "InqError", "QuantizeOptions", "QuantizeResult", "TensorReport",
           "decode", "export", "quantize"]

"""inq-onnx: Incremental Network Quantization for any ONNX model.

Weights become powers of two or zero (Zhou et al., ICLR 2017). The pipeline reads as the
package does: ``graph.weights`` selects, ``codebook`` rounds, ``partition`` and ``train``
retrain incrementally, ``export`` writes compact or hardware files, ``verify`` checks.
"""

__version__ = "0.1.0"

import dataclasses as _dataclasses  # noqa: E402

# Packages that install the `onnxruntime` module: at most one may be installed (pyproject.toml).
ONNXRUNTIME_PACKAGES = ("onnxruntime", "onnxruntime-training-cpu", "onnxruntime-training", "onnxruntime-gpu",
                        "onnxruntime-directml", "onnxruntime-openvino", "onnxruntime-qnn", "onnxruntime-rocm")


def _check_onnxruntime() -> None:
    """Raise ImportError, saying what to install, unless exactly one ONNX Runtime package is there."""
    import importlib.util
    from importlib import metadata

    installed = []
    for name in ONNXRUNTIME_PACKAGES:
        try:
            installed.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    if len(installed) > 1:
        names = " ".join(i.split()[0] for i in installed)
        raise ImportError(f"{' and '.join(installed)} are installed side by side and overwrite each other's "
                          f"onnxruntime module. To fix this, pip uninstall -y {names}, then install one: "
                          "pip install 'inq-onnx[runtime]', or 'inq-onnx[train]' for retraining (Python 3.10/3.11)")
    if importlib.util.find_spec("onnxruntime") is None:
        raise ImportError("inq-onnx needs ONNX Runtime and none is installed. To fix this, pip install "
                          "'inq-onnx[runtime]', or 'inq-onnx[train]' for retraining too (Python 3.10/3.11)")


_check_onnxruntime()

from inq_onnx.errors import InqError  # noqa: E402
from inq_onnx import export  # noqa: E402  (a callable package: inq_onnx.export(model, "compact"))
from inq_onnx.export import ExportFormat, decode  # noqa: E402
from inq_onnx.options import QuantizeOptions  # noqa: E402
from inq_onnx.report import QuantizeResult, TensorReport  # noqa: E402
from inq_onnx import ir_model as _ir_model  # noqa: E402
from inq_onnx.quantize import quantize as _quantize_proto  # noqa: E402  (loads the submodule: the name below stays ours)


def quantize(model, *, bits: int = 4, per_channel: bool = False, include=(), exclude=(),
             min_size: int = 0, range: str = "auto") -> QuantizeResult:
    """Round every weight of ``model`` to the INQ codebook for ``bits`` (one shot, no data).

    ``model`` is an ``onnx.ModelProto`` or an ``onnx_ir.Model`` (either left untouched) or a
    path; ``result.model`` is of the type given (a ModelProto for a path). Returns the new model
    and a per-tensor report (n1, n2, fraction zero, relative L2 error, skip reasons).
    ``range`` picks each codebook's n1: "paper", "mse", "mae" or "auto" (see ``codebook_range``).
    """
    options = dict(bits=bits, per_channel=per_channel, include=include, exclude=exclude, min_size=min_size,
                   range=range)
    if not _ir_model.is_ir_model(model):
        return _quantize_proto(model, **options)
    result = _quantize_proto(_ir_model.to_proto(model), **options)
    return _dataclasses.replace(result, model=_ir_model.from_proto(result.model))

__all__ = ["__version__", "ExportFormat", "InqError", "QuantizeOptions", "QuantizeResult", "TensorReport",
           "decode", "export", "quantize"]

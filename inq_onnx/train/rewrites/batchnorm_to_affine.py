"""Turn inference-mode BatchNormalization into a fixed per-channel affine ``x * k + c``.

ORT trains BatchNormalization with batch statistics; as Mul + Add it keeps the inference
semantics, so the loss against the original model is 0 at step 0.

    k = scale / sqrt(var + eps)        c = B - mean * k        (shaped [C, 1, ...])
The new initializers are named ``<scale>__inq_bn_k`` and ``<B>__inq_bn_c``; each rewrite is
recorded in the notes, and :func:`batchnorm_from_affine` maps trained k, c back.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from inq_onnx.graph.passes import PassResult
from inq_onnx.train.rewrites._graph import NameMaker, attr, const_value, rewrite_each


def affine_from_batchnorm(scale, bias, mean, var, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """``(k, c)`` with ``x * k + c == BN(x)``, as 1-D float64 arrays."""
    k = np.asarray(scale, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    return k, np.asarray(bias, np.float64) - np.asarray(mean, np.float64) * k


def batchnorm_from_affine(k, c, mean, var, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, B)`` of the BatchNormalization whose affine form is ``(k, c)``."""
    k = np.asarray(k, np.float64).reshape(-1)
    scale = k * np.sqrt(np.asarray(var, np.float64) + eps)
    return scale, np.asarray(c, np.float64).reshape(-1) + np.asarray(mean, np.float64) * k


def _why_not(node: onnx.NodeProto, params: list, rank: int | None) -> str | None:
    if any(o for o in node.output[1:]) or attr(node, "training_mode", 0):
        return "training mode"
    if attr(node, "spatial", 1) == 0:
        return "spatial=0"
    if any(p is None for p in params):
        return "scale/B/mean/var are not constants"
    if rank is None or rank < 2:
        return "input rank unknown (pin the input shapes first)"
    return None


def _affine(graph: onnx.GraphProto, node: onnx.NodeProto, types: dict, fresh: NameMaker):
    params = [const_value(graph, name) for name in node.input[1:5]]
    shape = types.get(node.input[0], (0, None))[1]
    reason = _why_not(node, params, None if shape is None else len(shape))
    if reason:
        return None, reason
    eps = attr(node, "epsilon", 1e-5)
    k, c = affine_from_batchnorm(*params, eps)
    layout = (-1,) + (1,) * (len(shape) - 2)
    dtype = params[0].dtype
    scale_name, bias_name, mean_name, var_name = node.input[1:5]
    k_name, c_name = fresh(f"{scale_name}__inq_bn_k"), fresh(f"{bias_name}__inq_bn_c")
    graph.initializer.append(numpy_helper.from_array(k.astype(dtype).reshape(layout), k_name))
    graph.initializer.append(numpy_helper.from_array(c.astype(dtype).reshape(layout), c_name))
    base = node.name or node.output[0]
    scaled = fresh(f"{base}/scaled")
    nodes = [
        helper.make_node("Mul", [node.input[0], k_name], [scaled], name=scaled),
        helper.make_node("Add", [scaled, c_name], [node.output[0]], name=fresh(f"{base}/shifted")),
    ]
    return nodes, (
        f"BatchNormalization '{node.name}': k '{k_name}', c '{c_name}' from scale '{scale_name}', "
        f"B '{bias_name}', mean '{mean_name}', var '{var_name}', epsilon {eps!r}"
    )


def batchnorm_to_affine(model: onnx.ModelProto) -> PassResult:
    """Rewrite each top-level inference BatchNormalization as Mul + Add."""
    return rewrite_each(model, "BatchNormalization", _affine, released=lambda node: node.input[1:5])

"""Tiny quantized models for the export tests, built inline, and how to run them in ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper

import inq_onnx
from inq_onnx import codebook
from inq_onnx.quantize import METADATA_KEY
from inq_onnx.runtime import session
from tests.conftest import conv_gemm_model, make_model, tensor

__all__ = ["conv_gemm_model", "quantized", "quantize_all", "stamp", "run", "branch_model", "codes_model",
           "outputs_of_weights"]


def quantized(model: onnx.ModelProto, bits: int = 4, per_channel: bool = False) -> onnx.ModelProto:
    return inq_onnx.quantize(model, bits=bits, per_channel=per_channel).model


def stamp(model: onnx.ModelProto, bits: int, tensors: dict[str, list[int]]) -> onnx.ModelProto:
    """Write the quantization metadata by hand (for models built from codes directly)."""
    value = json.dumps({"bits": bits, "tensors": {k: {"channel_axes": v} for k, v in tensors.items()}})
    model.metadata_props.add(key=METADATA_KEY, value=value)
    return model


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return session(model).run(None, feeds)


def branch_model(seed: int = 0, opset: int = 17, bits: int = 3) -> onnx.ModelProto:
    """y = If(flag) with a Constant "Wb" [6, 4] defined in *both* branches (same name, other
    values); the else branch also reads the main-graph initializer "W" from the outer scope."""
    rng = np.random.default_rng(seed)

    def constant(values):
        return helper.make_node("Constant", [], ["Wb"], name="wb_const", value=tensor("Wb", values))

    weights = [rng.normal(size=(6, 4)).astype(np.float32) for _ in range(3)]
    then_graph = helper.make_graph(
        [constant(weights[0]), helper.make_node("MatMul", ["x", "Wb"], ["yt"], name="mm_then")],
        "then", [], [helper.make_tensor_value_info("yt", TensorProto.FLOAT, [2, 4])])
    else_graph = helper.make_graph(
        [constant(weights[1]), helper.make_node("MatMul", ["x", "Wb"], ["a"], name="mm_else"),
         helper.make_node("MatMul", ["x", "W"], ["b"], name="mm_outer"),
         helper.make_node("Add", ["a", "b"], ["ye"], name="add")],
        "else", [], [helper.make_tensor_value_info("ye", TensorProto.FLOAT, [2, 4])])
    model = make_model(
        [helper.make_node("If", ["flag"], ["y"], name="branch", then_branch=then_graph, else_branch=else_graph)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6]),
         helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [tensor("W", weights[2])], opset=opset)
    return stamp(quantize_all(model, bits), bits, {"W": [], "Wb": []})


def quantize_all(model: onnx.ModelProto, bits: int) -> onnx.ModelProto:
    """Round every float constant of rank 2 or more to its codebook (a stand-in for quantize)."""
    from inq_onnx.graph.tensors import constant_sites, iter_graphs, to_array, write_tensor

    out = onnx.ModelProto()
    out.CopyFrom(model)
    for path, graph in iter_graphs(out.graph):
        for site, proto in list(constant_sites(graph, path)):
            w = to_array(proto)
            if w.ndim >= 2 and w.dtype.kind == "f":
                write_tensor(out, site, codebook.quantize(w, codebook.make_codebook(w, bits)))
    return out


def codes_model(shape, bits: int, axes: tuple[int, ...], dtype, seed: int = 0):
    """A model whose outputs are its weights, quantized from random codes: (model, {name: values})."""
    rng = np.random.default_rng(seed)
    half = codebook.levels_per_sign(bits)
    codes = rng.integers(-half, half + 1, size=shape).astype(np.int8)
    keep = tuple(d if i in axes else 1 for i, d in enumerate(shape))
    # float32: n2 in [-12, 2]; float16: n1 in [-2, 14] so 2^n1 fits (the smallest values may underflow to 0)
    n1 = rng.integers(-12, 3, size=keep) + half - 1 if np.dtype(dtype) == np.float32 else \
        rng.integers(-2, 15, size=keep)
    book = codebook.Codebook(bits, n1, axes)
    values = codebook.decode(codes, book, np.dtype(dtype))
    data_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    model = make_model([helper.make_node("Identity", ["w"], ["out"], name="id")], [],
                       [helper.make_tensor_value_info("out", data_type, list(shape))], [tensor("w", values)])
    return stamp(model, bits, {"w": list(axes)}), values


def outputs_of_weights(model: onnx.ModelProto, names: list[str], data_type=TensorProto.FLOAT) -> onnx.ModelProto:
    """The same model with extra graph outputs for ``names`` (to read weights back from ORT)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.output.extend(helper.make_tensor_value_info(n, data_type, None) for n in names)
    return out

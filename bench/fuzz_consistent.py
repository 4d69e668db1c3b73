"""The consistent mutations of the fuzz (bench/fuzz_mutations.py): the file stays valid protobuf
and passes onnx.checker more often, so the quantizer, the writer and the ONNX Runtime check
behind them are reached.

Each takes a ModelProto and a random.Random, changes the model in place and returns a short
description, or None when it found nothing to act on.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from fuzz_recipes import nodes, pick, weightish  # bench/ is run as a script: its modules import by bare name


def float_weight(model, rng):
    ts = [t for t in weightish(model) if t.data_type == TensorProto.FLOAT and len(t.dims) >= 1]
    return pick(rng, ts)


def main_graph_weight(model, rng):
    """An initializer of the main graph with at least 2 dims (a weight quantize would touch)."""
    return pick(rng, [t for t in model.graph.initializer if len(t.dims) >= 2])


def c_reshape(model, rng):
    """A float weight replaced by random data of another shape (same or other element count)."""
    t = float_weight(model, rng)
    if t is None:
        return None
    dims = list(t.dims)
    kind = rng.choice(["flatten", "transpose", "grow", "empty", "scalar", "one", "rank5"])
    if kind == "flatten":
        dims = [int(np.prod(dims))]
    elif kind == "transpose":
        dims = dims[::-1]
    elif kind == "grow":
        dims[0] += rng.choice([1, 2, 5])
    elif kind == "empty":
        dims[0] = 0
    elif kind == "scalar":
        dims = []
    elif kind == "one":
        dims = [1] * len(dims)
    else:
        dims = dims + [1] * (5 - len(dims)) if len(dims) < 5 else dims + [1]
    values = np.random.default_rng(rng.randrange(2**32)).normal(size=dims).astype(np.float32)
    t.CopyFrom(onnx.numpy_helper.from_array(values, t.name))
    return f"{t.name} replaced by {kind} data {dims}"


def c_retype(model, rng):
    """A float weight converted (data and type) to another dtype, consistently."""
    t = float_weight(model, rng)
    if t is None:
        return None
    values = onnx.numpy_helper.to_array(t)
    kind = rng.choice(["float16", "float64", "int8", "int64", "bool", "bfloat16", "float8"])
    if kind in ("bfloat16", "float8"):
        dt = TensorProto.BFLOAT16 if kind == "bfloat16" else TensorProto.FLOAT8E4M3FN
        t.CopyFrom(onnx.helper.make_tensor(t.name, dt, values.shape, values.ravel().tolist()))
    else:
        t.CopyFrom(onnx.numpy_helper.from_array(values.astype(kind), t.name))
    return f"{t.name} converted to {kind}"


def c_values(model, rng):
    """A float weight given extreme but valid values."""
    t = float_weight(model, rng)
    if t is None:
        return None
    values = onnx.numpy_helper.to_array(t).copy()
    kind = rng.choice(["max", "tiny", "denormal", "negzero", "one-value", "mixed-inf", "constant"])
    flat = values.reshape(-1)
    if kind == "max":
        flat[:] = np.float32(3.4e38) * np.sign(flat + 0.5)
    elif kind == "tiny":
        flat *= np.float32(1e-30)
    elif kind == "denormal":
        flat[:] = np.float32(1e-45)
    elif kind == "negzero":
        flat[:] = -0.0
    elif kind == "one-value" and flat.size:
        flat[:] = 0.0
        flat[rng.randrange(flat.size)] = 1.0
    elif kind == "mixed-inf" and flat.size:
        flat[rng.randrange(flat.size)] = np.inf
    else:
        flat[:] = 0.75
    t.CopyFrom(onnx.numpy_helper.from_array(values, t.name))
    return f"{t.name} values: {kind}"


def c_weight_as_input(model, rng):
    """An initializer also listed as a graph input (overridable at run time)."""
    t = main_graph_weight(model, rng)
    if t is None:
        return None
    model.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return f"{t.name} is also a graph input"


def c_shared_weight(model, rng):
    """A weight wired into a second, non-weight use (an extra graph output, or an Identity)."""
    g = model.graph
    t = main_graph_weight(model, rng)
    if t is None:
        return None
    out = f"{t.name}_copy"
    g.node.append(onnx.helper.make_node(rng.choice(["Identity", "Neg", "Transpose"]), [t.name], [out]))
    g.output.append(onnx.helper.make_tensor_value_info(out, t.data_type, None))
    return f"{t.name} also feeds a graph output"


def c_to_constant(model, rng):
    """An initializer moved into a Constant node (as PaddleOCR keeps weights), or a sparse one."""
    g = model.graph
    if not g.initializer:
        return None
    i = rng.randrange(len(g.initializer))
    t = onnx.TensorProto()
    t.CopyFrom(g.initializer[i])
    del g.initializer[i]
    if rng.random() < 0.3 and len(t.dims) == 2:
        values = onnx.numpy_helper.to_array(t)
        idx = np.flatnonzero(values)
        sparse = onnx.helper.make_sparse_tensor(onnx.numpy_helper.from_array(values.reshape(-1)[idx], t.name),
                                                onnx.numpy_helper.from_array(idx.astype(np.int64), ""), list(t.dims))
        g.sparse_initializer.append(sparse)
        return f"{t.name} became a sparse initializer"
    g.node.insert(0, onnx.helper.make_node("Constant", [], [t.name], value=t))
    return f"{t.name} became a Constant node"


def c_toggle_attr(model, rng):
    """A plausible but wrong attribute: Gemm transB flipped, Conv group / strides / pads changed."""
    found = [n for _, n in nodes(model) if n.op_type in ("Gemm", "Conv", "ConvTranspose", "MatMul", "LSTM")]
    n = pick(rng, found)
    if n is None:
        return None
    if n.op_type == "Gemm":
        name, value = rng.choice(["transA", "transB"]), rng.choice([0, 1])
    elif n.op_type == "LSTM":
        name, value = "hidden_size", rng.choice([1, 7, 1000])
    elif n.op_type == "MatMul":
        n.op_type = "Gemm"
        return f"MatMul {n.name!r} became a Gemm"
    else:
        name = rng.choice(["group", "strides", "pads", "dilations", "kernel_shape"])
        value = {"group": rng.choice([1, 2, 3, 1000]), "strides": [rng.choice([1, 2, 7])] * 2,
                 "pads": [rng.choice([0, 1, 50])] * 4, "dilations": [rng.choice([1, 3, 100])] * 2,
                 "kernel_shape": [rng.choice([1, 3, 9])] * 2}[name]
    kept = [a for a in n.attribute if a.name != name]
    del n.attribute[:]
    n.attribute.extend(kept + [onnx.helper.make_attribute(name, value)])
    return f"{n.op_type} {n.name!r} {name} = {value}"




CONSISTENT_MUTATIONS = [c_reshape, c_retype, c_values, c_weight_as_input, c_shared_weight, c_to_constant, c_toggle_attr]

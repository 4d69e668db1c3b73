"""Spell HardSigmoid and HardSwish with Mul/Add/Min/Max, which ORT 1.19.2 can differentiate.

    HardSigmoid(x) = Max(Min(alpha * x + beta, 1), 0)      (alpha 0.2, beta 0.5 by default)
    HardSwish(x)   = x * HardSigmoid(x)  with alpha 1/6, beta 0.5
Both forms are exact in the forward pass.
"""

from __future__ import annotations

import onnx
from onnx import helper

from inq_onnx.graph.passes import PassResult, copy_model
from inq_onnx.graph.tensors import all_names, default_opset
from inq_onnx.train.rewrites._graph import NameMaker, attr, constant, splice, value_types

_PARAMS = {"HardSigmoid": (0.2, 0.5), "HardSwish": (1.0 / 6.0, 0.5)}


def hardsigmoid_to_minmax(model: onnx.ModelProto) -> PassResult:
    """Replace every top-level HardSigmoid / HardSwish by its Min/Max composition."""
    targets = [i for i, n in enumerate(model.graph.node) if n.op_type in _PARAMS and not n.domain]
    if not targets:
        return PassResult(model)
    if default_opset(model) < 8:
        return PassResult(model, 0, ("HardSigmoid left alone: Min/Max broadcast only from opset 8",))
    out = copy_model(model)
    graph = out.graph
    types = value_types(out)
    fresh = NameMaker(all_names(graph))
    scalars: dict[tuple[float, int], str] = {}

    def scalar(value: float, elem_type: int) -> str:
        key = (value, elem_type)
        if key not in scalars:
            scalars[key] = fresh(f"inq_hardsigmoid_const_{len(scalars)}")
            graph.initializer.append(constant(scalars[key], value, elem_type))
        return scalars[key]

    replacements = {}
    for i in targets:
        node = graph.node[i]
        x, y = node.input[0], node.output[0]
        elem_type = types.get(x, (onnx.TensorProto.FLOAT, None))[0] or onnx.TensorProto.FLOAT
        alpha, beta = _PARAMS[node.op_type]
        if node.op_type == "HardSigmoid":
            alpha, beta = attr(node, "alpha", alpha), attr(node, "beta", beta)
        base = node.name or node.op_type
        m, s, t = fresh(f"{base}/mul"), fresh(f"{base}/add"), fresh(f"{base}/min")
        gate = y if node.op_type == "HardSigmoid" else fresh(f"{base}/max")
        new = [
            helper.make_node("Mul", [x, scalar(alpha, elem_type)], [m], name=m),
            helper.make_node("Add", [m, scalar(beta, elem_type)], [s], name=s),
            helper.make_node("Min", [s, scalar(1.0, elem_type)], [t], name=t),
            helper.make_node("Max", [t, scalar(0.0, elem_type)], [gate], name=gate),
        ]
        if node.op_type == "HardSwish":
            new.append(helper.make_node("Mul", [x, gate], [y], name=fresh(f"{base}/swish")))
        replacements[i] = new
    splice(graph, replacements)
    kinds = sorted({model.graph.node[i].op_type for i in targets})
    return PassResult(out, len(targets), (f"{len(targets)} {'/'.join(kinds)} nodes rewritten as Min/Max",))

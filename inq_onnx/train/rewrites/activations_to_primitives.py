"""Spell the activations ORT 1.19.2 cannot differentiate with ops it can (Relu, Min, Exp, Log, ...).

    PRelu(x, s)          = Relu(x) - s * Relu(-x)
    Elu(x, a)            = Relu(x) + a * (Exp(Min(x, 0)) - 1)                 (a = 1)
    Selu(x, a, g)        = g * Elu(x, a)                     (a = 1.6732632, g = 1.0507010)
    Celu(x, a)           = Relu(x) + a * (Exp(Min(x, 0) / a) - 1)             (a = 1)
    Softplus(x)          = Relu(x) + Log(Exp(-|x|) + 1)       (no overflow for large x)
    Softsign(x)          = x / (|x| + 1)
    Mish(x)              = x * Tanh(Softplus(x))
    ThresholdedRelu(x,a) = Where(x > a, x, 0)                                  (a = 1)

Each is the op's definition; outputs agree with ORT's kernels to float rounding. Every op used
was measured to train on ORT 1.19.2 CPU (bench/gradient_blockers.py). PRelu's slope keeps its
name, so a trained slope maps back onto the user's graph.
"""

from __future__ import annotations

from typing import Callable

import onnx
from onnx import helper

from inq_onnx.graph.passes import PassResult
from inq_onnx.graph.tensors import default_opset
from inq_onnx.train.rewrites._graph import NameMaker, attr, constant, rewrite_each

DEFAULTS = {"Elu": {"alpha": 1.0}, "Celu": {"alpha": 1.0}, "ThresholdedRelu": {"alpha": 1.0},
            "Selu": {"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875}}


class _Builder:
    """Appends nodes computing from ``x`` into fresh names; the last one writes ``y``."""

    def __init__(self, graph: onnx.GraphProto, node: onnx.NodeProto, elem_type: int, fresh: NameMaker):
        self.graph, self.fresh, self.elem_type = graph, fresh, elem_type
        self.base = node.name or node.output[0]
        self.nodes: list[onnx.NodeProto] = []

    def scalar(self, value: float) -> str:
        name = self.fresh(f"{self.base}/const")
        self.graph.initializer.append(constant(name, value, self.elem_type))
        return name

    def __call__(self, op: str, *inputs: str) -> str:
        out = self.fresh(f"{self.base}/{op.lower()}")
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out))
        return out


def _elu_core(b: _Builder, x: str, alpha: float, scale_input: bool = False) -> str:
    low = b("Min", x, b.scalar(0.0))
    if scale_input:
        low = b("Div", low, b.scalar(alpha))
    return b("Add", b("Relu", x), b("Mul", b("Sub", b("Exp", low), b.scalar(1.0)), b.scalar(alpha)))


def _softplus(b: _Builder, x: str) -> str:
    return b("Add", b("Relu", x), b("Log", b("Add", b("Exp", b("Neg", b("Abs", x))), b.scalar(1.0))))


SPELLINGS: dict[str, Callable[[_Builder, onnx.NodeProto, dict], str]] = {
    "PRelu": lambda b, n, a: b("Sub", b("Relu", n.input[0]), b("Mul", n.input[1], b("Relu", b("Neg", n.input[0])))),
    "Elu": lambda b, n, a: _elu_core(b, n.input[0], a["alpha"]),
    "Selu": lambda b, n, a: b("Mul", _elu_core(b, n.input[0], a["alpha"]), b.scalar(a["gamma"])),
    "Celu": lambda b, n, a: _elu_core(b, n.input[0], a["alpha"], scale_input=True),
    "Softplus": lambda b, n, a: _softplus(b, n.input[0]),
    "Softsign": lambda b, n, a: b("Div", n.input[0], b("Add", b("Abs", n.input[0]), b.scalar(1.0))),
    "Mish": lambda b, n, a: b("Mul", n.input[0], b("Tanh", _softplus(b, n.input[0]))),
    "ThresholdedRelu": lambda b, n, a: b("Where", b("Greater", n.input[0], b.scalar(a["alpha"])), n.input[0],
                                         b.scalar(0.0)),
}


def _spell(graph: onnx.GraphProto, node: onnx.NodeProto, types: dict, fresh: NameMaker):
    elem_type = types.get(node.input[0], (0, None))[0] or onnx.TensorProto.FLOAT
    if elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
        return None, "not a float, double or float16 tensor"
    params = {k: attr(node, k, v) for k, v in DEFAULTS.get(node.op_type, {}).items()}
    builder = _Builder(graph, node, elem_type, fresh)
    SPELLINGS[node.op_type](builder, node, params)
    builder.nodes[-1].output[0] = node.output[0]
    ops = sorted({n.op_type for n in builder.nodes})
    return builder.nodes, f"{node.op_type} '{node.name}' -> {'/'.join(ops)}"


def activations_to_primitives(model: onnx.ModelProto) -> PassResult:
    """Rewrite each top-level PRelu, Elu, Selu, Celu, Softplus, Softsign, Mish and ThresholdedRelu."""
    present = {n.op_type for n in model.graph.node if not n.domain} & set(SPELLINGS)
    if not present:
        return PassResult(model)
    if default_opset(model) < 9:
        return PassResult(model, 0, (f"{'/'.join(sorted(present))} left alone: Where and broadcasting Min need opset 9",))
    changed, notes = 0, []
    for op in SPELLINGS:
        result = rewrite_each(model, op, _spell)
        model, changed, notes = result.model, changed + result.changed, notes + list(result.notes)
    return PassResult(model, changed, tuple(notes))

"""Which tensors distillation matches to the float teacher: every float output, and for
``auto`` a few layer outputs spread along the graph (a denser signal than the output alone).

A layer output here is the map a weight op (Conv, ConvTranspose, Gemm, MatMul with a weight
initializer) makes, taken after its bias / affine chain (Add, Mul, Sub, Div with a constant,
BatchNormalization): the pre-activation map, before any nonlinearity.
"""

from __future__ import annotations

from collections import defaultdict

import onnx

from inq_onnx.errors import InvalidOptionError
from inq_onnx.train.losses import float_outputs

WEIGHT_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
AFFINE_OPS = {"Add", "Mul", "Sub", "Div", "BatchNormalization"}
AUTO_COUNT = 4


def _constant_names(graph: onnx.GraphProto) -> set[str]:
    names = {t.name for t in graph.initializer}
    return names | {n.output[0] for n in graph.node if n.op_type == "Constant"}


def layer_outputs(model: onnx.ModelProto) -> list[str]:
    """The pre-activation map of each weight op of the main graph, in graph order."""
    graph = model.graph
    constants = _constant_names(graph)
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    found = []
    for node in graph.node:
        if node.op_type not in WEIGHT_OPS or not any(i in constants for i in node.input):
            continue
        name = node.output[0]
        while len(consumers[name]) == 1:
            after = consumers[name][0]
            others = [i for i in after.input if i != name and i]
            if after.op_type not in AFFINE_OPS or not all(i in constants for i in others):
                break
            name = after.output[0]
        found.append(name)
    return list(dict.fromkeys(found))


def spread(names: list[str], count: int) -> list[str]:
    """``count`` of ``names`` at evenly spaced depths, the first and last excluded."""
    if len(names) <= count:
        return list(names)
    return list(dict.fromkeys(names[round((k + 1) * (len(names) - 1) / (count + 1))] for k in range(count)))


def auto_tensors(training: onnx.ModelProto, teacher: onnx.ModelProto, count: int = AUTO_COUNT) -> list[str]:
    """A few layer outputs of the training copy, evenly spread, that the teacher's main graph
    also computes (same name) and that are not graph outputs already."""
    computed = {o for n in teacher.graph.node for o in n.output}
    outputs = {v.name for v in training.graph.output}
    return spread([n for n in layer_outputs(training) if n in computed and n not in outputs], count)


def check_teacher_has(teacher: onnx.ModelProto, names: tuple[str, ...]) -> None:
    """Every name must be a float output or a tensor a node of the teacher's main graph makes."""
    computed = {o for n in teacher.graph.node for o in n.output} | {v.name for v in float_outputs(teacher)}
    missing = [n for n in names if n not in computed]
    if missing:
        raise InvalidOptionError(
            f"distillation tensors {missing[:5]} are not computed by the float model's main graph",
            "name tensors that nodes of the main graph produce (not inside If/Loop bodies), or pass --distill-tensors auto",
        )

"""Fold If nodes whose condition is fixed once some inputs are pinned (silero's ``sr``).

An If between a trainable weight and the loss aborts ORT's gradient builder (SIGABRT). Here:
pinned inputs become initializers; then, until no If is left, every top-level condition is
evaluated with ONNX Runtime on the sample feeds (it must agree across them), and the taken
branch is spliced in place of the If. Its initializers and Constant nodes come up with it.
Run it before pin_input_shapes: with silero's inputs pinned to static shapes, ORT's type
inference fails in a branch never taken, and creating the probe session crashed (SIGSEGV).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import onnx
import onnxruntime
from onnx import helper, numpy_helper

from inq_onnx.errors import InvalidOptionError, UnsupportedModelError
from inq_onnx.graph.passes import PassResult, copy_model
from inq_onnx.graph.tensors import all_names, iter_graphs, subgraphs
from inq_onnx.train.rewrites._graph import NameMaker, attr, defined_names, rename_definition, splice

Feeds = Mapping[str, np.ndarray]


def _pin_inputs(graph: onnx.GraphProto, pins: Mapping[str, np.ndarray]) -> None:
    inputs = {v.name: v for v in graph.input}
    unknown = sorted(set(pins) - set(inputs))
    if unknown:
        raise InvalidOptionError(f"cannot pin {unknown}: not graph inputs", f"pin one of {sorted(inputs)}")
    for name, value in pins.items():
        dtype = helper.tensor_dtype_to_np_dtype(inputs[name].type.tensor_type.elem_type)
        graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
    kept = [v for v in graph.input if v.name not in pins]
    del graph.input[:]
    graph.input.extend(kept)


def _run(model: onnx.ModelProto, outputs: list[str], feeds: Feeds) -> list[np.ndarray]:
    probe = copy_model(model)
    declared = {v.name for v in probe.graph.output}
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in outputs if n not in declared)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(outputs, dict(feeds))


def _conditions(model: onnx.ModelProto, ifs: list[int], feeds_list: Sequence[Feeds]) -> dict[int, bool]:
    graph = model.graph
    missing = sorted({v.name for v in graph.input} - set(feeds_list[0]))
    if missing:
        raise InvalidOptionError(f"sample feeds lack inputs {missing}", "feed every input that is not pinned")
    names = [graph.node[i].input[0] for i in ifs]
    runs = [[bool(np.asarray(v).reshape(-1)[0]) for v in _run(model, names, f)] for f in feeds_list]
    for k, i in enumerate(ifs):
        if len({run[k] for run in runs}) > 1:
            raise UnsupportedModelError(
                f"If '{graph.node[i].name}' takes different branches for different sample inputs",
                "pin the inputs its condition depends on, or train with one fixed input shape",
            )
    return {i: runs[0][k] for k, i in enumerate(ifs)}


def _outer_names(graph: onnx.GraphProto, skip: int) -> set[str]:
    names = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {v.name for v in graph.output}
    for j, node in enumerate(graph.node):
        names |= set(node.input) | set(node.output)
        if j != skip:
            for _, _, sub in subgraphs(node):
                names |= all_names(sub)
    return names


def inline_branch(graph: onnx.GraphProto, index: int, take_then: bool) -> None:
    """Splice the taken branch of the If at ``graph.node[index]`` in its place (in place)."""
    node = graph.node[index]
    branch = onnx.GraphProto()
    branch.CopyFrom(attr(node, "then_branch" if take_then else "else_branch"))
    taken = _outer_names(graph, index)
    fresh = NameMaker(taken | all_names(branch))
    for name in sorted(defined_names(branch) & taken):
        new = fresh(name)
        for t in branch.initializer:
            if t.name == name:
                t.name = new
        rename_definition(branch, name, new)
    produced = [o for n in branch.node for o in n.output]
    identities = []
    for if_out, br_out in zip(node.output, [v.name for v in branch.output]):
        if if_out and produced.count(br_out) == 1 and [v.name for v in branch.output].count(br_out) == 1:
            rename_definition(branch, br_out, if_out)
        elif if_out:
            identities.append(helper.make_node("Identity", [br_out], [if_out], name=fresh(f"{if_out}/identity")))
    graph.initializer.extend(branch.initializer)
    splice(graph, {index: list(branch.node) + identities})


def _count_ifs(graph: onnx.GraphProto) -> int:
    return sum(n.op_type == "If" for _, g in iter_graphs(graph) for n in g.node)


def fold_if(
    model: onnx.ModelProto, pins: Mapping[str, np.ndarray], sample_feeds: Feeds | Sequence[Feeds]
) -> PassResult:
    """Pin ``pins`` as constants and inline every If whose branch the sample feeds agree on."""
    feeds_list = [sample_feeds] if isinstance(sample_feeds, Mapping) else list(sample_feeds)
    if not feeds_list:
        raise InvalidOptionError("fold_if needs at least one sample feed", "pass a dict of input arrays")
    if not pins and _count_ifs(model.graph) == 0:
        return PassResult(model)
    out = copy_model(model)
    _pin_inputs(out.graph, pins)
    feeds_list = [{k: v for k, v in f.items() if k not in pins} for f in feeds_list]
    folded, rounds = 0, 0
    for rounds in range(1, _count_ifs(out.graph) + 2):
        ifs = [i for i, n in enumerate(out.graph.node) if n.op_type == "If" and not n.domain]
        if not ifs:
            break
        taken = _conditions(out, ifs, feeds_list)
        for i in reversed(ifs):
            inline_branch(out.graph, i, taken[i])
        folded += len(ifs)
    notes = [f"inputs {sorted(pins)} pinned as constants"] if pins else []
    if folded:
        notes.append(f"{folded} If nodes folded in {rounds - 1} rounds")
    remaining = _count_ifs(out.graph)
    if remaining:
        notes.append(f"{remaining} If nodes remain inside Loop/Scan bodies")
    return PassResult(out, len(pins) + folded, tuple(notes))

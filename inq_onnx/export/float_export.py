"""Float export and decode: a compact model back to the plain float model it came from, losslessly.

The nodes the compact export added (``layout``) are evaluated in numpy, with ``packing``'s
reference for ``inq_onnx.Unpack{b}``, and each weight is put back in the form it had: an
initializer at its old place in the list, or a Constant node at its old place in the graph. Our
functions, domain and stamp go and the original IR version comes back. The result has no custom
domain and no function of ours: any ONNX tool reads it.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import helper

from inq_onnx.errors import ExportError
from inq_onnx.export import decode_op, packing
from inq_onnx.export.layout import copy_label, swap_name
from inq_onnx.export.sites import COMPACT_KEY
from inq_onnx.graph.passes import copy_model
from inq_onnx.graph.tensors import constant_value_attr, from_array, get_graph, iter_graphs, to_array

NUMPY_DTYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16,
                onnx.TensorProto.DOUBLE: np.float64, onnx.TensorProto.BFLOAT16: np.float32}


def decode(model: onnx.ModelProto) -> onnx.ModelProto:
    """The plain float model of a compact ``model`` (a new model; a copy when nothing is compact)."""
    out = copy_model(model)
    stamp = compact_stamp(out)
    paths = [path for path, graph in iter_graphs(out.graph) if any(map(decode_op.is_unpack_node, graph.node))]
    if paths and stamp is None:
        raise ExportError(f"the model has {decode_op.DOMAIN} nodes but no '{COMPACT_KEY}' metadata",
                          "decode only models written by inq-onnx's compact export")
    version = next((o.version for o in out.opset_import if o.domain == decode_op.DOMAIN), decode_op.DOMAIN_VERSION)
    for path in sorted(paths, key=len, reverse=True):  # children first: parents' node indices stay valid
        restore_graph(get_graph(out, path), str(stamp.get("prefix", "inq")), version)
    strip_compact(out, stamp)
    return out


def to_float(model: onnx.ModelProto) -> onnx.ModelProto:
    """Float export of any model: compact weights decoded, no function or domain of ours left."""
    out = decode(model)
    if any(n.domain == decode_op.DOMAIN for _, g in iter_graphs(out.graph) for n in g.node):
        raise ExportError(f"nodes of the {decode_op.DOMAIN} domain remain after decoding",
                          "report this with the model attached")
    return out


def compact_stamp(model: onnx.ModelProto) -> dict | None:
    prop = next((p for p in model.metadata_props if p.key == COMPACT_KEY), None)
    try:
        return None if prop is None else dict(json.loads(prop.value))
    except (ValueError, TypeError) as e:
        raise ExportError(f"the '{COMPACT_KEY}' metadata is malformed ({e})", "export the model again") from e


class Evaluator:
    """Runs the compact format's nodes of one graph in numpy (the ops ``layout`` writes, no more)."""

    def __init__(self, graph: onnx.GraphProto, domain_version: int = decode_op.DOMAIN_VERSION):
        self.flat_indices = domain_version < 2  # version 1 wrote every stream's indices flat
        self.constants = {t.name: ("initializer", t) for t in graph.initializer}
        for node in graph.node:
            attr = constant_value_attr(node)
            if attr is not None:
                self.constants[node.output[0]] = ("constant", attr.t)
        self.values: dict[str, np.ndarray] = {}
        self.data_types: dict[str, int] = {}

    def get(self, name: str) -> np.ndarray:
        if name in self.values:
            return self.values[name]
        if name not in self.constants:
            raise ValueError(f"'{name}' is neither a constant of its graph nor computed from one")
        return to_array(self.constants[name][1])

    def run(self, node: onnx.NodeProto) -> None:
        args = [self.get(name) for name in node.input]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if decode_op.is_unpack_node(node):
            layout = decode_op.layout_of(node.op_type)
            table = packing.field_table(layout, decode_op.unit_table(layout.bits))
            if layout.element:
                outs = [table]
            else:
                indices = packing.field_indices(args[0], layout)
                outs = [indices.reshape(-1) if self.flat_indices else indices, table]
        elif node.op_type == "Split":
            sizes = args[1] if len(args) > 1 else np.array(attrs["split"])
            outs = np.split(args[0], np.cumsum(sizes)[:-1])
        elif node.op_type == "Mul":
            outs = [np.multiply(args[0], args[1])]
        elif node.op_type == "Gather":
            outs = [np.take(args[0], args[1], axis=attrs.get("axis", 0))]
        elif node.op_type == "Reshape":
            outs = [args[0].reshape(tuple(int(d) for d in args[1]))]
        elif node.op_type == "Slice" and len(args) == 3:
            outs = [args[0][int(args[1][0]):int(args[2][0])]]
        elif node.op_type == "Cast" and attrs.get("to") == onnx.TensorProto.INT32 and args[0].dtype.kind == "u":
            outs = [args[0].astype(np.int32)]  # an element stream's fields
        elif node.op_type == "Cast" and attrs.get("to") in NUMPY_DTYPES:
            outs = [args[0].astype(NUMPY_DTYPES[attrs["to"]])]
            self.data_types[node.output[0]] = attrs["to"]
        else:
            raise ValueError(f"{node.op_type} is not an op of the compact format")
        self.values.update(zip(node.output, outs))


def restore_graph(graph: onnx.GraphProto, prefix: str, domain_version: int = decode_op.DOMAIN_VERSION) -> None:
    """Evaluate the compact nodes of ``graph``, put each weight back, drop everything of ours."""
    ours = lambda name: name.startswith(prefix + ".")  # noqa: E731
    evaluator, mine, finals = Evaluator(graph, domain_version), [], []
    for index, node in enumerate(graph.node):
        if decode_op.is_unpack_node(node) or any(ours(n) and n in evaluator.values for n in node.input) \
                or any(ours(n) and n in evaluator.constants and n.endswith(".p") for n in node.input):
            try:
                evaluator.run(node)
            except (ValueError, KeyError, IndexError) as e:
                raise ExportError(f"cannot decode the node making '{node.output[0]}': {e}",
                                  "decode only models written by inq-onnx's compact export") from e
            mine.append(index)
            finals += [index] if not ours(node.output[0]) else []
    dropped = set(mine) - set(finals)
    dropped.update(index for index in finals if not put_back(graph, index, evaluator, prefix))
    for index in reversed(range(len(graph.node))):
        node = graph.node[index]
        if index in dropped or (constant_value_attr(node) is not None and ours(node.output[0])):
            del graph.node[index]
    for index in reversed(range(len(graph.initializer))):
        if ours(graph.initializer[index].name):
            del graph.initializer[index]


def put_back(graph: onnx.GraphProto, index: int, evaluator: Evaluator, prefix: str) -> bool:
    """Put a weight back in its original form, given the last node of its chain; return whether
    that node stays (turned into the weight's Constant node) or goes (the weight is an initializer)."""
    node = graph.node[index]
    name = node.output[0]
    bases = [n.rsplit(".", 1)[0] for n in node.input if n.startswith(prefix + ".")]
    base = next(b for b in bases if {f"{b}.s", f"{b}.p"} & evaluator.constants.keys())  # its own, not its group's
    # the tensor in the weight's place: its own stream (element fields), else its shape
    kind, shape = evaluator.constants.get(f"{base}.p") or evaluator.constants[f"{base}.s"]
    data_type = evaluator.data_types.get(name, onnx.TensorProto.FLOAT)
    if kind == "initializer":
        shape.CopyFrom(weight_tensor(evaluator.values[name], name, data_type))
        return False
    value = weight_tensor(evaluator.values[name], swap_name(shape.name, name), data_type)
    constant = helper.make_node("Constant", [], [name], value=value)
    copy_label(node, constant)
    node.CopyFrom(constant)
    return True


def weight_tensor(values: np.ndarray, name: str, data_type: int) -> onnx.TensorProto:
    like = onnx.TensorProto(name=name, data_type=data_type, dims=values.shape)  # bfloat16 reads dims from here
    return from_array(values, like)


def strip_compact(model: onnx.ModelProto, stamp: dict | None) -> None:
    """Remove our functions, domain and stamp; restore the IR version the compact export raised."""
    kept_functions = [f for f in model.functions if f.domain != decode_op.DOMAIN]
    del model.functions[:]
    model.functions.extend(kept_functions)
    kept_opsets = [o for o in model.opset_import if o.domain != decode_op.DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept_opsets)
    if stamp is not None:
        ir_version = stamp.get("ir_version")
        if isinstance(ir_version, int) and 0 < ir_version <= model.ir_version:
            model.ir_version = ir_version
        kept_props = [p for p in model.metadata_props if p.key != COMPACT_KEY]
        del model.metadata_props[:]
        model.metadata_props.extend(kept_props)

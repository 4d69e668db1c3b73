"""A fingerprint of a model's structure, so a sidecar is never applied to another model.

It covers the graph (ops, names, attributes, shapes and dtypes of every constant) but not the
constants' values: retraining and quantization change values, never the structure.
"""

from __future__ import annotations

import hashlib

import onnx

from inq_onnx.graph.tensors import constant_value_attr, iter_graphs


def structure_fingerprint(model: onnx.ModelProto) -> str:
    digest = hashlib.sha256()
    for path, graph in iter_graphs(model.graph):
        digest.update(repr(path).encode())
        for init in graph.initializer:
            digest.update(f"I {init.name} {init.data_type} {list(init.dims)}".encode())
        for node in graph.node:
            digest.update(f"N {node.op_type} {node.domain} {list(node.input)} {list(node.output)}".encode())
            value = constant_value_attr(node)
            if value is not None:
                digest.update(f"C {value.t.data_type} {list(value.t.dims)}".encode())
            for attr in node.attribute:
                if attr.type not in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS, onnx.AttributeProto.TENSOR):
                    digest.update(f"A {attr.name} {onnx.helper.get_attribute_value(attr)!r}".encode())
        for value_info in list(graph.input) + list(graph.output):
            digest.update(f"V {value_info.name}".encode())
    return "sha256:" + digest.hexdigest()[:32]

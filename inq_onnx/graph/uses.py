"""Who reads what: a scope-aware index of every value's uses, across subgraphs.

A name used inside an If/Loop/Scan body resolves to the nearest enclosing definition, so a
constant defined in the main graph and read in a branch (outer scope) has that branch's node
among its uses. Values are keyed by :data:`ValueKey` so two branches may reuse a name.
"""

from __future__ import annotations

from collections import ChainMap, defaultdict
from dataclasses import dataclass

import onnx

from inq_onnx.graph.tensors import GraphPath, TensorSite, constant_sites, subgraphs

ValueKey = tuple
"""("site", TensorSite) | ("output", path, node index, output name) | ("input", path, name)."""


@dataclass(frozen=True)
class Use:
    """Input ``input_index`` of ``node`` (at ``node_index`` of the graph at ``path``)."""

    path: GraphPath
    node_index: int
    node: onnx.NodeProto
    input_index: int

    @property
    def label(self) -> str:
        name = self.node.name or f"#{self.node_index}"
        return f"{self.node.op_type} '{name}'"


GRAPH_OUTPUT = "graph output"


@dataclass
class UseIndex:
    uses: dict[ValueKey, list[Use | str]]
    sites: dict[TensorSite, onnx.TensorProto]
    main_inputs: frozenset[str]

    def of(self, key: ValueKey) -> list[Use | str]:
        return self.uses.get(key, [])


def build_use_index(model: onnx.ModelProto) -> UseIndex:
    uses: dict[ValueKey, list[Use | str]] = defaultdict(list)
    sites: dict[TensorSite, onnx.TensorProto] = {}

    def visit(graph: onnx.GraphProto, path: GraphPath, outer: ChainMap) -> None:
        scope = outer.new_child()
        for name in (i.name for i in graph.input):
            scope[name] = ("input", path, name)
        for site, proto in constant_sites(graph, path):
            sites[site] = proto
            if site.kind == "initializer":
                scope[site.name] = ("site", site)
        for index, node in enumerate(graph.node):
            for i, name in enumerate(node.input):
                if name and name in scope:
                    uses[scope[name]].append(Use(path, index, node, i))
            for attr_name, j, sub in subgraphs(node):
                visit(sub, path + ((index, attr_name, j),), scope)
            for name in node.output:
                if name:
                    is_constant = node.op_type == "Constant" and TensorSite(name, path, "constant") in sites
                    scope[name] = ("site", TensorSite(name, path, "constant")) if is_constant else ("output", path, index, name)
        for out in graph.output:
            if out.name in scope:
                uses[scope[out.name]].append(GRAPH_OUTPUT)

    visit(model.graph, (), ChainMap())
    return UseIndex(dict(uses), sites, frozenset(i.name for i in model.graph.input))


def output_key(use: Use, output_name: str) -> ValueKey:
    return ("output", use.path, use.node_index, output_name)

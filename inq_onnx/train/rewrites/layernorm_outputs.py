"""Declare LayerNormalization's optional Mean and InvStdDev outputs.

torch.onnx writes LayerNormalization with only its Y output; ORT 1.19.2's gradient builder
reads the saved Mean and InvStdDev (outputs 1 and 2) and fails on a node without them
("i < node_->OutputDefs().size() was false"). Declaring them under fresh names changes no
value of Y: the node computes them anyway.
"""

from __future__ import annotations

import onnx

from inq_onnx.graph.passes import PassResult, copy_model
from inq_onnx.graph.tensors import all_names
from inq_onnx.train.rewrites._graph import NameMaker


def layernorm_outputs(model: onnx.ModelProto) -> PassResult:
    """Give every top-level LayerNormalization all three outputs (Y, Mean, InvStdDev)."""
    targets = [i for i, n in enumerate(model.graph.node)
               if n.op_type == "LayerNormalization" and not n.domain and len([o for o in n.output if o]) < 3]
    if not targets:
        return PassResult(model)
    out = copy_model(model)
    fresh = NameMaker(all_names(out.graph))
    for i in targets:
        node = out.graph.node[i]
        base = node.name or node.output[0]
        outputs = list(node.output) + [""] * (3 - len(node.output))
        for k, suffix in ((1, "mean"), (2, "inv_std_dev")):
            if not outputs[k]:
                outputs[k] = fresh(f"{base}/{suffix}")
        node.output[:] = outputs
    return PassResult(out, len(targets), (f"{len(targets)} LayerNormalization nodes given Mean and InvStdDev outputs",))

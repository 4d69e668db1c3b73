"""The float model that distillation and validation compare against (``--teacher``)."""

from __future__ import annotations

import hashlib

import onnx

from inq_onnx.errors import InvalidOptionError
from inq_onnx.quantize import quantized_tensors


def signature(values) -> list[tuple[str, int, int]]:
    """(name, element type, rank) of each graph input or output."""
    return [(v.name, v.type.tensor_type.elem_type, len(v.type.tensor_type.shape.dim)) for v in values]


def check_teacher(model: onnx.ModelProto, teacher: onnx.ModelProto) -> None:
    """The teacher must take the model's inputs and give its outputs (names, types, ranks)."""
    initializers = {i.name for i in model.graph.initializer}
    teacher_initializers = {i.name for i in teacher.graph.initializer}
    for kind, ours, theirs in (
        ("inputs", [v for v in model.graph.input if v.name not in initializers],
         [v for v in teacher.graph.input if v.name not in teacher_initializers]),
        ("outputs", model.graph.output, teacher.graph.output),
    ):
        a, b = signature(ours), signature(theirs)
        if a != b:
            diff = next((f"{x[0]} vs {y[0]}" for x, y in zip(a, b) if x != y), f"{len(a)} vs {len(b)} {kind}")
            raise InvalidOptionError(f"the teacher's {kind} differ from the model's ({diff})",
                                     "give --teacher the float model this one was made from")


def is_quantized(model: onnx.ModelProto) -> bool:
    """The model carries inq-onnx's ``inq_onnx.quantized`` stamp (already quantized)."""
    return quantized_tensors(model) is not None


def teacher_fingerprint(teacher: onnx.ModelProto) -> str:
    """Recorded with a run that names its teacher, so that a resume with another one is refused."""
    if teacher.ByteSize() < 2**31 - 1:
        return "sha256:" + hashlib.sha256(teacher.SerializeToString(deterministic=True)).hexdigest()[:32]
    digest = hashlib.sha256()
    for init in teacher.graph.initializer:  # over 2 GB: its tensors' bytes
        digest.update(init.name.encode() + init.raw_data)
    return "sha256:" + digest.hexdigest()[:32]

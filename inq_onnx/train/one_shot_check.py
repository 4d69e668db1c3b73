"""The end of a full INQ run: is the retrained model better than one-shot rounding with the same
data? Both are fully quantized on the same codebooks, so the run keeps whichever has the lower
held-out loss, and its log says which and by how much.

The one-shot candidate is ``quantize --val`` on the float model with the run's n1 rules, its
training samples, error feedback and bias correction of the biases the model has (a new bias
input would change the graph, which the sidecar's structure fingerprint refuses).
"""

from __future__ import annotations

import onnx

from inq_onnx.data import Samples
from inq_onnx.graph.fingerprint import structure_fingerprint
from inq_onnx.incremental import InqOptions, sidecar_rules, stamp_final, weight_sites
from inq_onnx.quantize import quantize_model
from inq_onnx.sidecar import Sidecar

__all__ = ["one_shot_candidate"]


def one_shot_candidate(reference: onnx.ModelProto, inq: InqOptions, sidecar: Sidecar, samples: Samples,
                       pins: dict | None = None) -> onnx.ModelProto | str:
    """The one-shot model a finished run is compared with, or why there is none."""
    if structure_fingerprint(reference) != sidecar.fingerprint:
        return "the teacher is another graph than the model (--teacher)"
    rules = sidecar_rules(reference, sidecar, inq.quantize)
    model = quantize_model(reference, inq.quantize, samples=samples, pins=pins, rules=rules, new_biases=False).model
    stamp_final(model, sidecar, weight_sites(model, inq.quantize))
    return model

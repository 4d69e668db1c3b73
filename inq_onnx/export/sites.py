"""Which tensors of a quantized model the exports encode, and why one cannot be.

Quantization stamps ``metadata_props["inq_onnx.quantized"]`` with the bit-width and, per tensor
name, its channel axes. A name may stand for several sites (the same name defined in two If
branches): each is encoded on its own. This is the one place that decides what an export may
encode; everything it refuses comes back with a reason the user can read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from inq_onnx.codebook import check_bits
from inq_onnx.errors import ExportError
from inq_onnx.export import encoding
from inq_onnx.graph.tensors import TensorSite, constant_sites, get_graph, is_float, iter_graphs, to_array
from inq_onnx.quantize import METADATA_KEY, quantized_tensors

COMPACT_KEY = "inq_onnx.compact"


@dataclass(frozen=True)
class Listed:
    """A site the metadata says is quantized, with its bit-width and channel axes."""

    site: TensorSite
    bits: int
    channel_axes: tuple[int, ...]


@dataclass(frozen=True)
class Outcome:
    """A listed site, encoded, or the reason it cannot be (then ``encoded`` is None)."""

    listed: Listed
    data_type: int
    encoded: encoding.Encoded | None = None
    reason: str | None = None


def is_compact(model: onnx.ModelProto) -> bool:
    return any(p.key == COMPACT_KEY for p in model.metadata_props)


def listed_sites(model: onnx.ModelProto) -> list[Listed]:
    """Every site named by the quantization metadata; ExportError if there is none or a name is missing."""
    try:
        stamped = quantized_tensors(model)
        if stamped is None:
            raise ExportError(f"the model has no '{METADATA_KEY}' metadata, so nothing in it is known to be quantized",
                              "quantize it first with `inq-onnx quantize` (or inq_onnx.quantize) and export that model")
        bits, tensors = check_bits(stamped[0]), stamped[1]
        wanted = {name: tuple(int(a) for a in (info or {}).get("channel_axes", ())) for name, info in tensors.items()}
        overrides = {name: check_bits((info or {}).get("bits", bits)) for name, info in tensors.items()}
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ExportError(f"the '{METADATA_KEY}' metadata is malformed ({e})",
                          "quantize the float model again with inq-onnx") from e
    found = [Listed(site, overrides[site.name], wanted[site.name]) for path, graph in iter_graphs(model.graph)
             for site, _ in constant_sites(graph, path) if site.name in wanted]
    missing = sorted(set(wanted) - {item.site.name for item in found})
    if missing:
        raise ExportError(f"the quantized tensor '{missing[0]}' named in the metadata is not a constant of the model"
                          f"{f' ({len(missing)} such names)' if len(missing) > 1 else ''}",
                          "export the model exactly as inq-onnx wrote it, or quantize it again")
    return found


def refusal(model: onnx.ModelProto, site: TensorSite, proto: onnx.TensorProto) -> str | None:
    """Why a listed site cannot be replaced by a decoded value, or None."""
    if not is_float(proto):
        return f"it is not a float tensor ({onnx.TensorProto.DataType.Name(proto.data_type)})"
    if proto.data_location == onnx.TensorProto.EXTERNAL:
        return "its data is still external (not loaded)"
    if 0 in proto.dims:
        return "it is empty"
    graph = get_graph(model, site.graph_path)
    if site.kind == "initializer" and any(i.name == site.name for i in graph.input):
        return "it is also a graph input, so a user may replace it at run time"
    return None


def encode_listed(model: onnx.ModelProto, listed: Listed, proto: onnx.TensorProto, *, exact: bool) -> Outcome:
    """Encode one site; with ``exact`` also check that the float32 decode reproduces it bit for bit."""
    reason = refusal(model, listed.site, proto)
    if reason is None:
        q = to_array(proto)
        try:
            encoded = encoding.encode_tensor(q, listed.bits, listed.channel_axes)
            if exact:
                encoding.check_exact(encoded, q)
            return Outcome(listed, proto.data_type, encoded)
        except ValueError as e:
            reason = str(e)
    return Outcome(listed, proto.data_type, reason=reason)


def refuse_or_keep(outcomes: list[Outcome], allow_float: bool, what: str) -> list[str]:
    """Raise ExportError for the first refused site, or (``allow_float``) list them as kept float."""
    refused = [o for o in outcomes if o.encoded is None]
    if refused and not allow_float:
        first = refused[0]
        more = f" ({len(refused) - 1} more tensors cannot be either)" if len(refused) > 1 else ""
        raise ExportError(f"cannot export {first.listed.site.describe()} as {what}: {first.reason}{more}",
                          "quantize every listed weight fully first, or pass --allow-float to keep such weights float")
    return [f"{o.listed.site.describe()} kept float: {o.reason}" for o in refused]


def dtype_name(data_type: int) -> str:
    if data_type == onnx.TensorProto.BFLOAT16:
        return "bfloat16"
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type)).name

"""Codes export for shift-based hardware: the integer codes of every quantized weight.

A folder with ``codes.safetensors`` (one int8 tensor of codes per weight, in the weight's shape)
and ``manifest.json`` (per weight: bits, n2 per tensor or per channel, shape, dtype, channel axes
and the node inputs it feeds). A kernel reads code c and computes

    weight = sign(c) · 2^(n2 + |c| - 1),   weight = 0 where c = 0

i.e. it shifts the activation left by n2 + |c| - 1 (right when negative) and adds or subtracts.
The folder is written beside its target and renamed into place, so it appears whole or not at all.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx
from safetensors.numpy import save_file

from inq_onnx.errors import ModelSaveError
from inq_onnx.export import encoding
from inq_onnx.export.float_export import decode
from inq_onnx.export.sites import dtype_name, encode_listed, is_compact, listed_sites, refuse_or_keep
from inq_onnx.graph.tensors import GraphPath, tensor_proto
from inq_onnx.graph.uses import build_use_index
from inq_onnx.graph.weights import terminals

CODES_FILE, MANIFEST_FILE = "codes.safetensors", "manifest.json"
FORMAT, FORMAT_VERSION = "inq-onnx codes", 1
DECODE_RULE = "weight = sign(c) * 2^(n2 + |c| - 1); weight = 0 where c = 0"


@dataclass(frozen=True)
class CodesReport:
    path: Path
    tensors: tuple[str, ...]
    kept_float: tuple[str, ...]


def path_label(path: GraphPath) -> str:
    """'main', or the node index / attribute (/ list index) steps down to a subgraph."""
    return "/".join(f"{node}:{attr}" + (f"[{i}]" if i else "") for node, attr, i in path) or "main"


def feeds(index, site) -> list[dict]:
    """The node inputs a constant reaches (through layout ops such as Slice or Concat)."""
    found = []
    for term in terminals(index, ("site", site)):
        if term.use is None:
            found.append({"graph_output": True, "via": list(term.hops)})
            continue
        node = term.use.node
        found.append({"node": node.name or f"#{term.use.node_index}", "op_type": node.op_type,
                      "input": term.use.input_index, "graph": path_label(term.use.path), "via": list(term.hops)})
    return found


def collect(model: onnx.ModelProto, *, allow_float: bool = False) -> tuple[dict, dict, list[str]]:
    """(arrays for safetensors, manifest entries, kept-float lines) of a quantized float model."""
    outcomes = [encode_listed(model, item, tensor_proto(model, item.site), exact=False) for item in listed_sites(model)]
    kept = refuse_or_keep(outcomes, allow_float, "integer codes")
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.listed.site.name] = counts.get(outcome.listed.site.name, 0) + 1
    index = build_use_index(model)
    arrays, entries = {}, {}
    for outcome in (o for o in outcomes if o.encoded is not None):
        site, enc = outcome.listed.site, outcome.encoded
        key = site.name if counts[site.name] == 1 else f"{site.name}@{path_label(site.graph_path)}"
        arrays[key] = enc.codes
        entries[key] = {"name": site.name, "graph": path_label(site.graph_path), "kind": site.kind,
                        "bits": enc.bits, "shape": list(enc.shape), "dtype": dtype_name(outcome.data_type),
                        "channel_axes": list(enc.channel_axes), "n2": encoding.n2_listing(enc),
                        "feeds": feeds(index, site)}
    return arrays, entries, kept


def export_codes(model: onnx.ModelProto, folder: str | os.PathLike, *, allow_float: bool = False) -> CodesReport:
    """Write the codes folder for ``model`` (quantized float or compact) at ``folder``."""
    if is_compact(model):
        model = decode(model)
    arrays, entries, kept = collect(model, allow_float=allow_float)
    manifest = {"format": FORMAT, "version": FORMAT_VERSION, "decode": DECODE_RULE, "codes_file": CODES_FILE,
                "model": {"graph": model.graph.name, "producer": model.producer_name, "ir_version": model.ir_version,
                          "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import}},
                "tensors": entries, "kept_float": kept}
    folder = Path(folder)

    def write(tmp: Path) -> None:
        save_file(arrays, str(tmp / CODES_FILE), metadata={"format": FORMAT, "version": str(FORMAT_VERSION)})
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")

    write_folder(folder, write)
    return CodesReport(folder, tuple(entries), tuple(kept))


def write_folder(folder: Path, write) -> None:
    """Fill a temporary sibling folder with ``write`` and rename it to ``folder``. An existing
    ``folder`` is replaced only if it is empty or a codes export itself."""
    parent = folder.parent if str(folder.parent) else Path(".")
    if not parent.is_dir():
        raise ModelSaveError(f"the output folder {parent} does not exist", "create it first or choose another -o")
    if folder.exists() and not replaceable(folder):
        raise ModelSaveError(f"{folder} exists and is not a codes export", "choose another -o or remove it first")
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=parent))
    old = parent / f"{tmp.name}.old"
    try:
        write(tmp)
        if folder.exists():
            os.rename(folder, old)
        os.rename(tmp, folder)
    except OSError as e:
        if old.exists() and not folder.exists():
            os.rename(old, folder)
        raise ModelSaveError(f"could not write {folder} ({e.strerror or e})",
                             "check the free space and permissions") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def replaceable(folder: Path) -> bool:
    if not folder.is_dir():
        return False
    return {p.name for p in folder.iterdir()} <= {CODES_FILE, MANIFEST_FILE}

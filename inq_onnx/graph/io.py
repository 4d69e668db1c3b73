"""Load and save models safely: clear errors on bad input, atomic writes, external data kept.

The input file is only ever read. A model is written into a temporary folder beside the target
and moved into place only once complete, so an interrupted run never leaves a partial file.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper
from onnx.serialization import registry

from inq_onnx.errors import ModelLoadError, ModelSaveError, UnsupportedModelError
from inq_onnx.graph import wire
from inq_onnx.graph.pieces import DataBlocks, PieceWriter, copy_fields, skeleton
from inq_onnx.graph.readers import check_with_onnx, ir_refusal, onnx_runtime, runtime_limits
from inq_onnx.graph.tensor_check import check_tensors
from inq_onnx.graph.tensors import TensorSite, default_opset, from_array, tensor_proto, write_tensor

log = logging.getLogger(__name__)
PROTOBUF_LIMIT = 2**31 - 2**20  # a little under 2 GB: beyond it a model must use external data


@dataclass(frozen=True)
class Source:
    """Where a model came from (``path`` is None for an in-memory model)."""

    path: Path | None
    size_bytes: int
    external_data: bool


def load_model(source: onnx.ModelProto | str | os.PathLike) -> tuple[onnx.ModelProto, Source]:
    """A checked model and where it came from; raises ModelLoadError/UnsupportedModelError."""
    if isinstance(source, onnx.ModelProto):
        check_loadable(source, "the model")
        check_tensors(source, "the model")  # before onnx.checker, whose data checks differ between releases
        check_structure(source, "the model")
        return source, Source(None, source.ByteSize(), False)
    path = Path(source)
    check_readable_file(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{path} is not an ONNX model ({type(e).__name__}: {str(e)[:80] or 'parse failed'})",
                             "pass an .onnx file exported by a framework or written by onnx.save") from e
    check_loadable(model, str(path))
    external = external_data_helper.uses_external_data
    has_external = any(external(t) for t in external_data_helper._get_all_tensors(model))
    if has_external:
        load_external(model, path)
    check_tensors(model, str(path))  # before onnx.checker, whose data checks differ between releases
    check_structure(model, str(path))
    return model, Source(path, total_size(path, model, has_external), has_external)


def load_structure(source: str | os.PathLike) -> tuple[onnx.ModelProto, Source, wire.FileTensors | None]:
    """``load_model`` for a job that reads each weight once and streams the result (one-shot
    quantization): a single-file model is parsed without its main-graph initializers' raw data,
    which stays in the file's bytes (``FileTensors``: ``wire``), so no tensor is copied before it
    is read. Checked as ``load_model`` checks. A model with external data, in a text format, or
    one protobuf could not parse loads whole, with None."""
    path = Path(source)
    check_readable_file(path)
    if path.stat().st_size > PROTOBUF_LIMIT or registry.get_format_from_file_extension(path.suffix) not in (None, "protobuf"):
        return (*load_model(path), None)
    buf = path.read_bytes()
    try:
        bare, found = wire.split(buf)
        model = onnx.load_model_from_string(bare)
        tensors = wire.FileTensors(buf, model, found)
    except (wire.WireError, DecodeError, RuntimeError, ValueError, UnicodeDecodeError):
        return (*load_model(path), None)  # protobuf's own parser says what is wrong
    check_loadable(model, str(path))
    if any(external_data_helper.uses_external_data(t) for t in external_data_helper._get_all_tensors(model)):
        return (*load_model(path), None)
    check_tensors(model, str(path), tensors.raw_bytes)
    check_structure(model, str(path), tensors.raw_bytes)
    return model, Source(path, len(buf), False), tensors


def check_readable_file(path: Path) -> None:
    if not path.exists():
        raise ModelLoadError(f"{path} does not exist", "check the path of the model")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a directory, not an ONNX file", "pass the .onnx file inside it")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path} is empty", "re-export the model")
    if not os.access(path, os.R_OK):
        raise ModelLoadError(f"{path} is not readable", "check its permissions")


def check_loadable(model: onnx.ModelProto, label: str) -> None:
    """Reject what is not a model, or what the installed ONNX Runtime cannot load (an IR version
    it does not read is fine when a lowered copy is the same model: see ``readers``)."""
    if model.ir_version <= 0 or not model.HasField("graph") or not model.opset_import:
        raise ModelLoadError(f"{label} is not an ONNX model (no graph, IR version or opset)",
                             "pass an .onnx file exported by a framework or written by onnx.save")
    refusal = ir_refusal(model, onnx_runtime(), label)  # a newer IR version that lowering cannot take away
    if refusal is not None:
        raise refusal
    limits = runtime_limits()
    default = default_opset(model)
    if default > limits.opset:
        raise UnsupportedModelError(
            f"{label} uses opset {default}; the installed ONNX Runtime {limits.version} supports at most opset "
            f"{limits.opset}",
            f"install a newer onnxruntime, or convert the model with "
            f"onnx.version_converter.convert_version(model, {limits.opset})")


def check_structure(model: onnx.ModelProto, label: str, stored: Callable[[str], int | None] = lambda name: None) -> None:
    """onnx.checker on the graph (ops, names, types, attributes), not on the main graph's tensor
    data: onnx.checker reads that data only to see that some is there, and checking a big model
    whole would serialize or parse it once more. ``check_tensors`` checks the data itself. An IR
    version newer than the installed onnx checks is lowered first (``readers``). ``stored``: the
    raw data bytes of each main-graph initializer whose data was left in the file (``wire``)."""
    log.info("onnx.checker on %s: graph structure only (tensor data checked against dims instead)", label)
    try:
        check_with_onnx(structure_view(model, stored), label)
    except (onnx.checker.ValidationError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:160]
        raise ModelLoadError(f"{label} fails onnx.checker: {first}", "re-export the model or repair it with onnx tools") from e


def structure_view(model: onnx.ModelProto, stored: Callable[[str], int | None] = lambda name: None) -> onnx.ModelProto:
    """A small copy of ``model`` whose main-graph initializers with raw data (in the model, or
    ``stored`` in its file) hold one element each (dims [1]: onnx >= 1.18's checker compares the
    data's size with the dims)."""
    view = skeleton(model)
    for init in model.graph.initializer:
        stub = view.graph.initializer.add()
        copy_fields(init, stub, skip="raw_data")
        if init.HasField("raw_data") or stored(init.name) is not None:
            del stub.dims[:]
            stub.dims.append(1)
            stub.raw_data = bytes(element_bytes(init.data_type))
    return view


def element_bytes(data_type: int) -> int:
    """Bytes of one element's raw data (a 4-bit type takes one byte for one element)."""
    try:
        return max(1, onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize)
    except (KeyError, TypeError, ValueError):
        return 16


def load_external(model: onnx.ModelProto, path: Path) -> None:
    """Load external tensors, refusing locations outside the model's folder."""
    base = path.parent.resolve()
    for tensor in external_data_helper._get_all_tensors(model):
        if not external_data_helper.uses_external_data(tensor):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (base / location).resolve()
        if base not in target.parents:
            raise ModelLoadError(f"tensor '{tensor.name}' points to external data outside the model's folder ({location})",
                                 "keep external data files beside the model")
        if not target.is_file():
            raise ModelLoadError(f"external data file {target.name} of tensor '{tensor.name}' is missing",
                                 f"put {location} beside {path.name}")
    try:
        external_data_helper.load_external_data_for_model(model, str(base))
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not read the external data of {path} ({e})", "check the .data file beside it") from e


def total_size(path: Path, model: onnx.ModelProto, has_external: bool) -> int:
    size = path.stat().st_size
    if has_external:
        size += sum(t.ByteSize() for t in external_data_helper._get_all_tensors(model))
    return size


def tensor_bytes(model: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in external_data_helper._get_all_tensors(model))


def fits_one_session(model: onnx.ModelProto) -> bool:
    """Whether ``model`` can go whole, in memory, into an ONNX Runtime session: no initializer
    in external data and under protobuf's 2 GB."""
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    return not external and tensor_bytes(model) <= PROTOBUF_LIMIT


def check_writable_target(path: Path, source: Source | None = None) -> None:
    if source is not None and source.path is not None and path.resolve() == source.path.resolve():
        raise ModelSaveError(f"the output {path} is the input model", "choose another output path (-o); the input is never modified")
    if path.is_dir():
        raise ModelSaveError(f"the output {path} is a directory", "give a file name, e.g. -o model.inq.onnx")
    parent = path.parent if str(path.parent) else Path(".")
    blocker = next((p for p in (parent, *parent.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ModelSaveError(f"the output folder {parent} cannot be made: {blocker} is a file, not a folder",
                             "choose another -o")
    if not parent.is_dir():
        raise ModelSaveError(f"the output folder {parent} does not exist", "create it first or choose another -o")
    if not os.access(parent, os.W_OK):
        raise ModelSaveError(f"the output folder {parent} is not writable", "choose another -o")


def save_model(model: onnx.ModelProto, path: str | os.PathLike, *, external_data: bool = False,
               source: Source | None = None, keep_data: bool = True) -> Path:
    """Write ``model`` atomically; use external data when asked or when it exceeds 2 GB.

    With external data, onnx moves the tensors out of ``model`` while writing; ``keep_data``
    loads them back (a second copy in memory: protobuf frees nothing until the whole model goes).
    A caller about to drop the model passes False: ``model`` is then left as
    ``onnx.load(path, load_external_data=False)`` would give it.
    """
    external_data = external_data or tensor_bytes(model) > PROTOBUF_LIMIT
    with ModelWriter(path, external_data=external_data, source=source) as writer:
        writer.save(model)
    if external_data and keep_data:
        external_data_helper.load_external_data_for_model(model, str(writer.path.parent))
    return writer.path


class ModelWriter:
    """Writes one model atomically to ``path``: everything goes into a temporary folder beside
    it and is moved into place only once complete.

    With external data, :meth:`write_tensor` streams each new tensor straight into the data file
    and leaves only a reference in the model. Protobuf (upb) keeps every bytes value a message
    has held until the whole message is freed, so replacing the weights of a loaded model in
    place would hold its old and new weights at once; streamed, quantizing a model loaded from
    disk takes about one copy of it. Without external data, ``stream=True`` does the same for a
    single file (``pieces``): new main-graph initializers must then come in list order::

        with ModelWriter(out, external_data=True, source=source) as writer:
            writer.write_tensor(model, site, values)    # any number of times
            writer.save(model)                          # the rest of the model, then moved into place
    """

    def __init__(self, path: str | os.PathLike, *, external_data: bool, source: Source | None = None,
                 stream: bool = False, originals: wire.FileTensors | None = None):
        self.path = Path(path)
        check_writable_target(self.path, source)
        self.external_data = external_data
        self.stream = stream and not external_data
        self.data_name = f"{self.path.name}.data"
        self.stage: Path | None = None
        self.pieces: PieceWriter | None = None
        self.originals = originals
        self.streamed: set[str] = set()  # main-graph initializers written with new values (``stream``)
        if originals is not None and not self.stream:
            raise RuntimeError("a model whose initializers stayed in its file is written streamed only")

    def __enter__(self) -> "ModelWriter":
        remove_stale_stages(self.path)
        try:
            self.stage = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=STAGE_SUFFIX, dir=self.path.parent))
        except OSError as e:
            raise self.write_failed(e, "check the permissions") from e
        return self

    def __exit__(self, *exc) -> None:
        if self.pieces is not None:
            self.pieces.file.close()
        shutil.rmtree(self.stage, ignore_errors=True)

    def write_tensor(self, model: onnx.ModelProto, site: TensorSite, array: np.ndarray) -> None:
        """Set the values of ``site`` (an initializer goes to the data file when external)."""
        proto = tensor_proto(model, site)
        if self.stream and site.kind == "initializer" and not site.graph_path:
            self.stream_initializer(model, proto, array)
            return
        if not self.external_data or site.kind != "initializer" or proto.data_type == onnx.TensorProto.BFLOAT16:
            write_tensor(model, site, array)
            return
        if tuple(array.shape) != tuple(proto.dims):
            raise ValueError(f"shape {array.shape} does not match {site.describe()} {tuple(proto.dims)}")
        data = np.ascontiguousarray(array, dtype=onnx.helper.tensor_dtype_to_np_dtype(proto.data_type).newbyteorder("<"))
        try:
            with open(self.stage / self.data_name, "ab") as f:
                offset = f.tell()
                f.write(memoryview(data.reshape(-1)).cast("B"))
        except OSError as e:
            raise self.write_failed(e) from e
        ref = onnx.TensorProto(name=proto.name, data_type=proto.data_type, dims=proto.dims, raw_data=b"")
        external_data_helper.set_external_data(ref, self.data_name, offset, data.nbytes)  # it wants raw_data set
        ref.ClearField("raw_data")
        proto.CopyFrom(ref)

    def write_failed(self, error: OSError, fix: str = "check the free space") -> ModelSaveError:
        return ModelSaveError(f"could not write {self.path} ({error.strerror or error})", fix)

    def initializer_blocks(self, model: onnx.ModelProto, site: TensorSite, dtype: np.dtype) -> "InitializerBlocks | None":
        """Where the new values of ``site`` go a block at a time, in storage order, when it is a
        streamed main-graph initializer stored as ``dtype`` (little-endian; not bfloat16); else
        None (then :meth:`write_tensor`). The blocks must add up to the tensor exactly."""
        if not self.stream or site.kind != "initializer" or site.graph_path:
            return None
        proto = tensor_proto(model, site)
        dtype = np.dtype(dtype)
        if (proto.data_type == onnx.TensorProto.BFLOAT16 or dtype.byteorder == ">" or sys.byteorder != "little"
                or onnx.helper.tensor_dtype_to_np_dtype(proto.data_type) != dtype):
            return None
        header = onnx.TensorProto(name=proto.name, data_type=proto.data_type, dims=proto.dims)
        try:
            blocks = self.piece_writer(model).begin(header, math.prod(proto.dims) * dtype.itemsize)
        except OSError as e:
            raise self.write_failed(e) from e
        return InitializerBlocks(self, proto, blocks)

    def piece_writer(self, model: onnx.ModelProto) -> PieceWriter:
        if self.pieces is None:
            self.pieces = PieceWriter(open(self.stage / self.path.name, "wb"), model, self.originals)
        return self.pieces

    def streamed_out(self, proto: onnx.TensorProto) -> None:
        """``proto``'s new values are in the file: drop the old ones from the model in memory."""
        self.streamed.add(proto.name)
        for field_name in ("raw_data", "float_data", "int32_data", "double_data", "int64_data", "uint64_data"):
            proto.ClearField(field_name)

    def stream_initializer(self, model: onnx.ModelProto, proto: onnx.TensorProto, array: np.ndarray) -> None:
        """Write the new values of a main-graph initializer to the output (``pieces``) and drop
        the old ones from ``model``, which keeps the tensor's name, type and shape only."""
        if tuple(array.shape) != tuple(proto.dims):
            raise ValueError(f"shape {array.shape} does not match initializer '{proto.name}' {tuple(proto.dims)}")
        try:
            if proto.data_type == onnx.TensorProto.BFLOAT16:
                new = from_array(array, proto)
                data = np.frombuffer(new.raw_data, np.uint8)
            else:
                data = np.asarray(array, dtype=onnx.helper.tensor_dtype_to_np_dtype(proto.data_type).newbyteorder("<"))
            self.piece_writer(model).write(onnx.TensorProto(name=proto.name, data_type=proto.data_type, dims=proto.dims), data)
        except OSError as e:
            raise self.write_failed(e) from e
        self.streamed_out(proto)

    def save(self, model: onnx.ModelProto) -> Path:
        """Write ``model`` (tensors not yet streamed included) and move it into place."""
        staged, data = self.stage / self.path.name, self.stage / self.data_name
        try:
            if self.originals is not None:  # written in pieces even when nothing was new
                self.piece_writer(model)
            if self.pieces is not None:
                self.pieces.finish()
                self.pieces.file.close()
            elif self.external_data:
                onnx.save_model(model, str(staged), save_as_external_data=True, all_tensors_to_one_file=True,
                                location=self.data_name, size_threshold=0)
                if data.exists():
                    self.path.unlink(missing_ok=True)  # never an old model beside the new data
                    os.replace(data, self.path.parent / self.data_name)
            else:
                onnx.save_model(model, str(staged))
            os.replace(staged, self.path)
        except OSError as e:
            raise self.write_failed(e, "check the free space and permissions") from e
        return self.path


class InitializerBlocks:
    """The new values of one streamed initializer, written a block at a time
    (``ModelWriter.initializer_blocks``); :meth:`close` once all are written."""

    def __init__(self, writer: ModelWriter, proto: onnx.TensorProto, blocks: DataBlocks):
        self.writer, self.proto, self.blocks = writer, proto, blocks

    def write(self, block: np.ndarray) -> None:
        try:
            self.blocks.write(block)
        except OSError as e:
            raise self.writer.write_failed(e) from e

    def close(self) -> None:
        self.blocks.close()
        self.writer.streamed_out(self.proto)


STAGE_SUFFIX = ".tmp"


def remove_stale_stages(path: Path) -> None:
    """Temporary folders a killed write of ``path`` left behind (one write per target at a time)."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*{STAGE_SUFFIX}"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


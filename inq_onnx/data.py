"""Sample data for a model: one array per model input (named as the input), plus optional labels.

Accepted: an ``.npz`` file, or a folder of ``<input name>.npy`` files read memory-mapped (for
data larger than memory). Input names with '/' or ':' are written with '_' in file names.

Arrays are always samples first. An input whose batch dimension is not its first (silero-vad's
``state`` is [2, batch, 128]) is stored as [N, 2, 128] and moved into place when fed.
"""

from __future__ import annotations

import itertools
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from inq_onnx.errors import DataError

LABELS = "labels"


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]  # None for a dynamic dim
    dim_names: tuple[str | None, ...] = ()  # the dim_param of each dynamic dim, if named
    sample_axis: int = 0  # where the batch dimension sits in the model's input

    def per_sample_shape(self) -> tuple[int | None, ...]:
        return self.shape[:self.sample_axis] + self.shape[self.sample_axis + 1:]


@dataclass(frozen=True)
class Samples:
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    source: str
    sample_axes: dict[str, int] = None  # input name -> batch axis in the model (default 0)

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def batch(self, start: int, stop: int) -> dict[str, np.ndarray]:
        return self.take(slice(start, stop))

    def take(self, index) -> dict[str, np.ndarray]:
        """Model feeds for the samples at ``index`` (a slice or an index array)."""
        axes = self.sample_axes or {}
        return {k: np.ascontiguousarray(np.moveaxis(v[index], 0, axes.get(k, 0))) for k, v in self.inputs.items()}

    def batches(self, size: int, limit: int | None = None):
        n = len(self) if limit is None else min(limit, len(self))
        for start in range(0, n, size):
            yield self.batch(start, min(start + size, n))


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The graph inputs a caller must feed (initializers listed as inputs excluded)."""
    initializers = {i.name for i in model.graph.initializer}
    specs = []
    batch_name = None
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim)
        names = tuple(d.dim_param or None for d in tensor.shape.dim)
        if not specs and names:
            batch_name = names[0]
        specs.append(InputSpec(value.name, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)), dims,
                               names, batch_axis(dims, names, batch_name)))
    return specs


def batch_axis(dims: tuple, names: tuple, batch_name: str | None) -> int:
    """The first input's leading dim_param, else the first dynamic dim, else 0."""
    if batch_name and batch_name in names:
        return names.index(batch_name)
    return next((i for i, d in enumerate(dims) if d is None), 0)


def file_key(name: str) -> str:
    return name.replace("/", "_").replace(":", "_")


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise DataError(f"data {path} does not exist", "check the path given to --data/--val")
    if path.is_dir():
        return {p.stem: np.load(p, mmap_mode="r", allow_pickle=False) for p in sorted(path.glob("*.npy"))}
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path} is not a readable .npz file ({type(e).__name__})",
                        "save it with numpy.savez(path, **{input_name: array, 'labels': y})") from e


def load_samples(path: str | os.PathLike, model: onnx.ModelProto, *, num_classes: int | None = None,
                 pinned: tuple[str, ...] = ()) -> Samples:
    """Read and check samples against the model's inputs (``pinned`` ones excluded);
    raises DataError naming the problem."""
    path = Path(path)
    arrays = read_arrays(path)
    inputs = {}
    specs = [spec for spec in input_specs(model) if spec.name not in pinned]
    for spec in specs:
        array = arrays.get(spec.name, arrays.get(file_key(spec.name)))
        if array is None:
            fix = (f"give it with --pin {spec.name}=VALUE (a scalar input is the same for every sample)"
                   if spec.shape == () else f"save the input under the key '{spec.name}'")
            raise DataError(f"{path} has no array for model input '{spec.name}' (it has: {', '.join(sorted(arrays)) or 'nothing'})",
                            fix)
        inputs[spec.name] = check_array(array, spec, path)
    counts = {len(a) for a in inputs.values()}
    labels = arrays.get(LABELS)
    if labels is not None:
        labels = check_labels(labels, counts, num_classes, path)
    if len(counts) > 1:
        raise DataError(f"{path}: inputs have different numbers of samples {sorted(counts)}", "give every input the same first dimension")
    return Samples(inputs, labels, str(path), {spec.name: spec.sample_axis for spec in specs})


def check_array(array: np.ndarray, spec: InputSpec, path: Path) -> np.ndarray:
    want = (None,) + spec.per_sample_shape()
    if array.ndim != len(want):
        raise DataError(f"{path}: '{spec.name}' has shape {array.shape}, the model expects rank {len(want)} "
                        f"{shape_text(want)} (samples first)", "reshape the data to the model's input shape, samples first")
    if any(w is not None and d != w for d, w in zip(array.shape, want)):
        raise DataError(f"{path}: '{spec.name}' has shape {array.shape}, the model expects {shape_text(want)} (samples first)",
                        "apply the model's preprocessing before saving the data")
    if array.dtype != spec.dtype:
        if not (np.issubdtype(array.dtype, np.number) and np.can_cast(array.dtype, spec.dtype, "same_kind")):
            raise DataError(f"{path}: '{spec.name}' is {array.dtype}, the model expects {spec.dtype}",
                            f"save it as {spec.dtype}")
        array = array.astype(spec.dtype)
    return array


def check_labels(labels: np.ndarray, counts: set[int], num_classes: int | None, path: Path) -> np.ndarray:
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: 'labels' must be a 1-D integer array, got {labels.dtype} {labels.shape}",
                        "save class indices as int64, one per sample")
    if counts and len(labels) not in counts:
        raise DataError(f"{path}: {len(labels)} labels for {max(counts)} samples", "give one label per sample")
    if len(labels) and (labels.min() < 0 or (num_classes is not None and labels.max() >= num_classes)):
        allowed = f"0..{num_classes - 1} (the model has {num_classes} classes)" if num_classes else "0 and above"
        raise DataError(f"{path}: labels range {labels.min()}..{labels.max()} is outside {allowed}",
                        "use class indices that match the model's output")
    return labels.astype(np.int64)


def shape_text(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def pinned_values(model: onnx.ModelProto, pins: dict) -> dict[str, np.ndarray]:
    specs = {s.name: s for s in input_specs(model)}
    unknown = [k for k in pins if k not in specs]
    if unknown:
        raise DataError(f"--pin names '{unknown[0]}', which is not an input of the model",
                        f"pin one of {sorted(specs)}")
    return {k: np.asarray(v, dtype=specs[k].dtype) for k, v in pins.items()}


def pin_combinations(pins: dict) -> list[dict]:
    """One dict of pinned values per branch to train: a value may be a list (``sr=[16000, 8000]``),
    and several listed inputs give every combination, the first input varying slowest."""
    names = list(pins)
    lists = [list(v) if isinstance(v, (list, tuple)) else [v] for v in pins.values()]
    return [dict(zip(names, values)) for values in itertools.product(*lists)]


def branch_label(pins: dict) -> str:
    """``sr=16000``: how a branch is named in messages and in the run log."""
    return ",".join(f"{k}={np.asarray(v).tolist()}" for k, v in pins.items())


def load_branch_samples(paths, model: onnx.ModelProto, combos: list[dict], *, option: str = "--data",
                        num_classes: int | None = None) -> list[Samples]:
    """Samples per branch: ``paths`` is one path for every branch, or one per branch in the order
    of ``combos``; each file is checked against the model with that branch's inputs pinned."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if len(paths) not in (1, len(combos)):
        names = ", ".join(branch_label(c) for c in combos)
        raise DataError(f"{len(paths)} {option} files for {len(combos)} pinned branches ({names})",
                        f"give one {option} per pinned value, in the same order, or one {option} for all")
    pinned = tuple(combos[0]) if combos else ()
    loaded = [load_samples(p, model, num_classes=num_classes, pinned=pinned) for p in paths]
    return loaded * len(combos) if len(loaded) == 1 else loaded

"""The mask sidecar: one safetensors file beside a model, holding INQ's state (no pickle).

Tensors: ``mask/<name>`` uint8 in the weight's shape (1 = quantized and frozen, 0 = float) and
``n1/<name>`` int32 in the codebook's keepdims shape. Metadata: one key ``inq_onnx`` holding JSON
(format version, bits, schedule, step, partition strategy and seed, options, the fingerprint of
the original model, and per tensor its channel axes, shape, dtype, pre-trained zero count and
``range``, the rule that chose its n1: "paper" or "mse"; absent in sidecars written before the
rule existed, which read as "paper").
The format is described for users of other frameworks in the README ("The mask sidecar").
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file
from safetensors import safe_open

from inq_onnx.codebook import Codebook, reduce_axes
from inq_onnx.codebook_range import RangeRule
from inq_onnx.errors import InvalidOptionError, SidecarError
from inq_onnx.partition import PartitionStrategy
from inq_onnx.schedule import check_schedule

__all__ = [
    "FORMAT_VERSION", "TensorState", "Sidecar", "sidecar_path", "write_sidecar", "read_sidecar",
    "check_compatible", "fraction_quantized", "fractions_quantized",
]

FORMAT_VERSION = 1
METADATA_KEY = "inq_onnx"


@dataclass(frozen=True, eq=False)
class TensorState:
    """One weight's INQ state: its mask (bool, True = quantized) and its fixed codebook."""

    mask: np.ndarray
    codebook: Codebook
    dtype: str = "float32"
    n_pruned: int = 0  # exact zeros of the pre-trained tensor: sigma applies to the others
    range_rule: RangeRule = RangeRule.PAPER  # what chose the codebook's n1

    def __post_init__(self) -> None:
        object.__setattr__(self, "range_rule", RangeRule(self.range_rule))
        if self.range_rule is RangeRule.AUTO:
            raise ValueError("a tensor's range rule is the one that chose its n1: paper or mse, not auto")


@dataclass(frozen=True, eq=False)
class Sidecar:
    bits: int
    schedule: tuple[float, ...]
    step: int  # index into schedule of the last completed partition step; -1 = none yet
    strategy: PartitionStrategy
    seed: int
    fingerprint: str
    options: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, TensorState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategy", PartitionStrategy(self.strategy))
        object.__setattr__(self, "schedule", check_schedule(self.schedule))
        if not -1 <= self.step < len(self.schedule):
            raise ValueError(f"step {self.step} is outside its {len(self.schedule)}-step schedule")


def sidecar_path(model_path: str | os.PathLike) -> Path:
    """``model.onnx`` -> ``model.inq.safetensors`` (in the same folder)."""
    path = Path(model_path)
    stem = path.name[: -len(".onnx")] if path.name.endswith(".onnx") else path.name
    return path.with_name(stem + ".inq.safetensors")


def _metadata(sidecar: Sidecar) -> str:
    tensors = {
        name: {"channel_axes": list(t.codebook.channel_axes), "shape": list(t.mask.shape), "dtype": t.dtype,
               "n_pruned": t.n_pruned, "range": t.range_rule.value}
        for name, t in sidecar.tensors.items()
    }
    for name, t in sidecar.tensors.items():
        if t.codebook.bits != sidecar.bits or t.mask.dtype != np.bool_ or t.codebook.n1.ndim != t.mask.ndim:
            raise ValueError(f"tensor {name!r}: needs a bool mask and a {sidecar.bits}-bit codebook of the same rank")
    info = {
        "format_version": FORMAT_VERSION, "bits": sidecar.bits, "schedule": list(sidecar.schedule),
        "step": sidecar.step, "strategy": PartitionStrategy(sidecar.strategy).value, "seed": sidecar.seed,
        "fingerprint": sidecar.fingerprint, "options": sidecar.options, "tensors": tensors,
    }
    return json.dumps(info, sort_keys=True)


def write_sidecar(path: str | os.PathLike, sidecar: Sidecar) -> Path:
    """Write atomically: a temporary file in the same folder, flushed, then renamed over ``path``."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    for name, t in sidecar.tensors.items():
        arrays[f"mask/{name}"] = np.ascontiguousarray(t.mask, dtype=np.uint8)
        arrays[f"n1/{name}"] = np.ascontiguousarray(t.codebook.n1, dtype=np.int32)
    metadata = {METADATA_KEY: _metadata(sidecar)}
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        os.close(fd)
        save_file(arrays, tmp, metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _fail(path: Path, problem: str, fix: str = "") -> SidecarError:
    fix = fix or "delete it to start over, or restore the file that belongs beside the model"
    return SidecarError(f"the sidecar {path} {problem}", fix)


def _tensor_state(path: Path, name: str, info: dict, f, bits: int) -> TensorState:
    shape, axes = tuple(info["shape"]), tuple(info["channel_axes"])
    mask, n1 = f.get_tensor(f"mask/{name}"), f.get_tensor(f"n1/{name}")
    n1_shape = tuple(1 if a in reduce_axes(len(shape), axes) else d for a, d in enumerate(shape))
    if mask.dtype != np.uint8 or mask.shape != shape or not np.all(mask <= 1):
        raise _fail(path, f"has a bad mask for {name!r} (want uint8 0/1 of shape {shape})")
    if n1.dtype != np.int32 or n1.shape != n1_shape:
        raise _fail(path, f"has a bad n1 for {name!r} (want int32 of shape {n1_shape})")
    rule = RangeRule(info.get("range", RangeRule.PAPER.value))  # older sidecars: the paper's n1
    return TensorState(mask.astype(bool), Codebook(bits, n1, axes), str(info["dtype"]), int(info["n_pruned"]), rule)


def read_sidecar(path: str | os.PathLike) -> Sidecar:
    """Read and validate a sidecar; any problem raises SidecarError naming the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "does not exist", "check the path, or run the first INQ step to create it")
    try:
        with safe_open(str(path), framework="np") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
            if raw is None:
                raise _fail(path, f"has no '{METADATA_KEY}' metadata (not an inq-onnx sidecar)")
            info = json.loads(raw)
            if info.get("format_version") != FORMAT_VERSION:
                version = info.get("format_version")
                raise _fail(path, f"has format version {version!r}, this inq-onnx reads {FORMAT_VERSION}",
                            "use the inq-onnx version that wrote it, or start over")
            expected = {f"{kind}/{name}" for name in info["tensors"] for kind in ("mask", "n1")}
            if set(f.keys()) != expected:
                odd = sorted(set(f.keys()) ^ expected)[:3]
                raise _fail(path, f"holds tensors {odd} that do not match its metadata")
            tensors = {name: _tensor_state(path, name, t, f, int(info["bits"])) for name, t in info["tensors"].items()}
        return Sidecar(int(info["bits"]), tuple(info["schedule"]), int(info["step"]), PartitionStrategy(info["strategy"]),
                       int(info["seed"]), str(info["fingerprint"]), dict(info["options"]), tensors)
    except SidecarError:
        raise
    except InvalidOptionError as e:
        raise _fail(path, f"has an invalid schedule ({e.problem})") from e
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise _fail(path, f"has incomplete or invalid metadata ({type(e).__name__}: {e})") from e
    except Exception as e:  # safetensors raises its own SafetensorError (and OSError) on a bad file
        reason = (str(e).splitlines() or [""])[0]
        raise _fail(path, f"is not a readable safetensors file ({type(e).__name__}: {reason})") from e


def check_compatible(
    sidecar: Sidecar,
    *,
    fingerprint: str,
    bits: int,
    schedule: tuple[float, ...] | None = None,
    strategy: PartitionStrategy | None = None,
    seed: int | None = None,
    source: str | os.PathLike = "",
) -> None:
    """Raise SidecarError naming the first property in which ``sidecar`` differs from this run.
    Arguments left at None are not compared."""
    name = f"the sidecar {source}".rstrip()
    fix = "delete the sidecar to start over, or run with the options it was made with"
    if sidecar.fingerprint != fingerprint:
        raise SidecarError(f"{name} belongs to another model (fingerprint {sidecar.fingerprint}, this model has "
                           f"{fingerprint})", "give the model it was made for, or delete the sidecar to start over")
    if sidecar.bits != bits:
        raise SidecarError(f"{name} was made for {sidecar.bits} bits, not {bits}", fix)
    if schedule is not None and tuple(schedule) != sidecar.schedule:
        raise SidecarError(f"{name} was made with the schedule {list(sidecar.schedule)}, not {list(schedule)}", fix)
    if strategy is not None and PartitionStrategy(strategy) is not sidecar.strategy:
        wanted = PartitionStrategy(strategy).value
        raise SidecarError(f"{name} was made with the {sidecar.strategy.value} partition, not {wanted}", fix)
    if seed is not None and seed != sidecar.seed:
        raise SidecarError(f"{name} was made with seed {sidecar.seed}, not {seed}", fix)


def fraction_quantized(mask: np.ndarray) -> float:
    """The share of a tensor's entries that are quantized (0.0 for an empty tensor)."""
    mask = np.asarray(mask)
    return float(np.count_nonzero(mask)) / mask.size if mask.size else 0.0


def fractions_quantized(sidecar: Sidecar) -> dict[str, float]:
    """Per tensor name its quantized share, plus ``""`` for all tensors together."""
    shares = {name: fraction_quantized(t.mask) for name, t in sidecar.tensors.items()}
    total = sum(t.mask.size for t in sidecar.tensors.values())
    shares[""] = sum(int(np.count_nonzero(t.mask)) for t in sidecar.tensors.values()) / total if total else 0.0
    return shares

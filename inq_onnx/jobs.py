"""File-to-file jobs: what one CLI command does, callable from Python export pipelines."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from inq_onnx.data import Samples, load_samples
from inq_onnx.graph.io import check_writable_target, load_model, save_model
from inq_onnx.options import QuantizeOptions
from inq_onnx.quantize import quantize_model
from inq_onnx.report import QuantizeResult
from inq_onnx.verify import VerifyReport, verify

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantizeJob:
    result: QuantizeResult
    output: Path
    input_bytes: int
    output_bytes: int
    verification: VerifyReport | None


def default_output(path: Path, bits: int) -> Path:
    return path.with_name(f"{path.stem}.inq{bits}.onnx")


def quantize_file(model_path: str | os.PathLike, output: str | os.PathLike | None, options: QuantizeOptions, *,
                  check: bool = True, samples_path: str | os.PathLike | None = None) -> QuantizeJob:
    """Load, quantize one-shot, save atomically, then verify (and measure fidelity on samples)."""
    model, source = load_model(model_path)
    out = Path(output) if output else default_output(Path(model_path), options.bits)
    check_writable_target(out, source)
    samples: Samples | None = load_samples(samples_path, model) if samples_path else None
    log.info("quantizing %s to %d bits", model_path, options.bits)
    result = quantize_model(model, options)
    save_model(result.model, out, external_data=source.external_data, source=source)
    report = verify(result.model, reference=model, samples=samples) if check else None
    out_bytes = out.stat().st_size + (Path(f"{out}.data").stat().st_size if Path(f"{out}.data").exists() else 0)
    return QuantizeJob(result, out, source.size_bytes, out_bytes, report)

"""Compact export, measured: file size, bits per weight, session creation and latency in ONNX Runtime.

For every model of ../shared/models and b = 2..5 bits: quantize (one shot, per tensor), export
compact, save both, and print per row

  compact/float   file size ratio (the physical limit for the weights alone is b/32)
  bits/w          8 · (compact file - float file without its quantized weights) / quantized weights:
                  b plus every byte of overhead (functions, shapes, scales, nodes, names)
  int8/float      ONNX Runtime's own weight-only quantize_dynamic(QInt8) file, for comparison
                  (once per model; its 4-bit MatMulNBits quantizer needs a native op this
                  onnxruntime-training build lacks, so it is not measured)
  session c/f     InferenceSession creation, compact vs quantized float, each in a fresh process
                  (medians of --runs, interleaved): wall-clock (CPU time in parentheses)
  latency c/f     one inference on the model's usual input shape, medians of --runs after a warm-up
  decode          the model-local functions that decode it (Unpack4r3: bit-packed radix fields,
                  3 codes in 10 bits; Table4e4: element fields, 4 codes in a uint16)

    .venv/bin/python bench/export_size.py              # a few minutes on 2 cores
    .venv/bin/python bench/export_size.py --runs 3 --bits 4 --models lenet5_mnist.onnx

Targets: bits/w about b (issue 5: <= b + 0.05), session c/f <= 1.5x (issue 12), latency <= 1.02x.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED_MODELS = REPO.parent / "shared" / "models"

import onnxruntime as ort  # noqa: E402

import inq_onnx  # noqa: E402
from inq_onnx.export import to_compact  # noqa: E402
from inq_onnx.graph.tensors import constant_sites, iter_graphs  # noqa: E402

INPUTS = {  # the shapes the models are used with (../shared/models/MANIFEST.md)
    "ch_PP-OCRv4_det_infer.onnx": {"x": (1, 3, 640, 640)},
    "ch_ppocr_mobile_v2.0_cls_infer.onnx": {"x": (1, 3, 48, 192)},
    "silero_vad.onnx": {"input": (1, 576), "state": (2, 1, 128), "sr": 16000},
    "silero_vad_half.onnx": {"input": (1, 576), "state": (2, 1, 128)},
    "320n.onnx": {"images": (1, 3, 320, 320)},
    "common_old.onnx": {"input1": (1, 1, 64, 256)},
    "lenet5_mnist.onnx": {"input": (1, 1, 28, 28)},
    "resnet8_mnist.onnx": {"input": (1, 1, 28, 28)},
    "mlp_digits.onnx": {"input": (1, 64)},
}


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def feeds(name: str, sess: ort.InferenceSession) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for inp in sess.get_inputs():
        spec = INPUTS.get(name, {}).get(inp.name, tuple(d if isinstance(d, int) and d > 0 else 1 for d in inp.shape))
        if isinstance(spec, int):
            out[inp.name] = np.array(spec, dtype=np.int64)
        else:
            out[inp.name] = rng.random(spec, dtype=np.float32)
    return out


def quantized_weight_bytes(model: onnx.ModelProto, names: set[str]) -> tuple[int, int]:
    """(how many quantized weights, how many bytes they take as floats) over every listed site."""
    count = nbytes = 0
    for path, graph in iter_graphs(model.graph):
        for site, proto in constant_sites(graph, path):
            if site.name in names:
                n = int(np.prod(proto.dims, dtype=np.int64))
                count += n
                nbytes += n * onnx.helper.tensor_dtype_to_np_dtype(proto.data_type).itemsize \
                    if proto.data_type != onnx.TensorProto.BFLOAT16 else 2 * n
    return count, nbytes


def int8_ratio(path: Path, folder: Path) -> str:
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        target = folder / f"{path.stem}.int8.onnx"
        quantize_dynamic(str(path), str(target), weight_type=QuantType.QInt8)
        return f"{target.stat().st_size / path.stat().st_size:.3f}"
    except Exception as e:  # a bench row, not a failure: say why
        return f"n/a ({type(e).__name__})"


def row(name: str, bits: int, runs: int, folder: Path, int8: str) -> list[str]:
    result = inq_onnx.quantize(SHARED_MODELS / name, bits=bits)
    q = result.model
    compact, report = to_compact(q)
    float_path, compact_path = folder / f"{bits}.float.onnx", folder / f"{bits}.compact.onnx"
    onnx.save(q, float_path)
    onnx.save(compact, compact_path)
    f_size, c_size = float_path.stat().st_size, compact_path.stat().st_size
    count, float_bytes = quantized_weight_bytes(q, {t.name for t in report.tensors})
    bits_per_weight = 8 * (c_size - (f_size - float_bytes)) / count if count else float("nan")
    cells = [name, str(bits), f"{count:,}", f"{f_size / 1e6:.2f}", f"{c_size / 1e6:.3f}", f"{c_size / f_size:.3f}",
             f"{bits / 32:.3f}", f"{bits_per_weight:.3f}", int8]
    (f_sess, f_cpu), (c_sess, c_cpu) = interleaved([lambda: opened(float_path), lambda: opened(compact_path)], runs)
    sf, sc = session(float_path), session(compact_path)
    inputs = feeds(name, sf)
    sf.run(None, inputs), sc.run(None, inputs)  # warm-up
    f_run, c_run = interleaved([lambda: sf.run(None, inputs), lambda: sc.run(None, inputs)], runs)
    cells += [f"{f_sess * 1e3:.0f}/{c_sess * 1e3:.0f}", f"{c_sess / f_sess:.2f} ({c_cpu / f_cpu:.2f})",
              f"{f_run * 1e3:.2f}/{c_run * 1e3:.2f}", f"{c_run / f_run:.3f}", "+".join(f.name for f in compact.functions)]
    return cells


def interleaved(actions: list, runs: int) -> list:
    """Median of each action's seconds (or of each of its figures, when it returns a tuple), the
    actions run alternately (a, b, a, b, ...) so that a change of load on the machine hits both."""
    figures = [[] for _ in actions]
    for _ in range(runs):
        for action, kept in zip(actions, figures):
            start = time.perf_counter()
            result = action()
            kept.append(result if isinstance(result, tuple) else time.perf_counter() - start)
    return [tuple(statistics.median(c) for c in zip(*f)) if isinstance(f[0], tuple) else statistics.median(f)
            for f in figures]


OPEN = ("import sys, time, onnxruntime as ort; options = ort.SessionOptions(); options.log_severity_level = 3; "
        "start, cpu = time.perf_counter(), time.process_time(); "
        "ort.InferenceSession(sys.argv[1], options, providers=['CPUExecutionProvider']); "
        "print(time.perf_counter() - start, time.process_time() - cpu)")


def opened(path: Path) -> tuple[float, float]:
    """(wall-clock, CPU) seconds of a session creation with default options, in a fresh process."""
    done = subprocess.run([sys.executable, "-c", OPEN, str(path)], capture_output=True, text=True, check=True)
    wall, cpu = done.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


HEADER = ["model", "b", "quantized w", "float MB", "compact MB", "compact/float", "b/32", "bits/w", "int8/float",
          "session f/c ms", "session c/f (CPU)", "latency f/c ms", "latency c/f", "decode"]


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [HEADER] + rows) for i in range(len(HEADER))]
    for r in [HEADER, ["-" * w for w in widths]] + rows:
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(r, widths)) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4, 5])
    parser.add_argument("--models", nargs="+", default=None)
    args = parser.parse_args()
    if not SHARED_MODELS.is_dir():
        sys.exit(f"{SHARED_MODELS} is absent: this benchmark needs the project's ../shared folder")
    ort.set_default_logger_severity(3)
    names = args.models or sorted(p.name for p in SHARED_MODELS.glob("*.onnx"))
    rows = []
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            int8 = int8_ratio(SHARED_MODELS / name, Path(tmp))
            for bits in args.bits:
                rows.append(row(name, bits, args.runs, Path(tmp), int8))
                print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    print_table(rows)


if __name__ == "__main__":
    main()

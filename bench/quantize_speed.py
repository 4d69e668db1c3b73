"""Speed and memory of one-shot quantization, against onnx.load + onnx.save and ONNX Runtime's
own ``quantize_dynamic``, on the largest model of ../shared/models and on a synthetic ~200 MB one.

Each operation runs in a fresh Python process (5 times; the median time is reported). Time is
measured inside the process around the operation only (imports excluded). Peak RSS is the
process's own high-water mark, ``VmHWM`` of /proc/self/status, shown as a ratio to the model's
file size, both as is and net of the process's RSS just before the operation (interpreter, numpy,
onnx, onnxruntime: a fixed ~100-200 MB that dominates small models). Not ``ru_maxrss`` from
``wait4`` / ``RUSAGE_CHILDREN`` (nor ``/usr/bin/time -v``): Linux carries the parent's peak over
fork + exec into it, so a child of a 500 MB parent reports >= 500 MB even for ``python -c pass``.

Operations, all file to file:
  load+save        onnx.load + onnx.save: the floor any rewriting tool pays
  inq 4-bit        inq_onnx.jobs.quantize_file(check=False): what `inq-onnx quantize --no-verify` does
  inq 4-bit/chan   the same, one codebook per output channel
  inq 4-bit+verify check=True: + onnx.checker, codebook check, ONNX Runtime smoke run in a child
                   (the child's memory is not in the figure)
  ort dynamic int8 onnxruntime.quantization.quantize_dynamic(weight_type=QInt8): int8 weights,
                   activations quantized at run time (ORT's own one-shot quantizer, no data)

    .venv/bin/python bench/quantize_speed.py            # ~3 minutes on 2 cores
    .venv/bin/python bench/quantize_speed.py --runs 3 --synthetic-mb 50
    .venv/bin/python bench/quantize_speed.py --against ../main   # before/after: another checkout, interleaved

Targets (issue 3): inq <= 1.3x load+save; faster than quantize_dynamic; peak RSS <= 2x the file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_MODELS = REPO.parent / "shared" / "models"

OPERATIONS = ("load+save", "inq 4-bit", "inq 4-bit/chan", "inq 4-bit+verify", "ort dynamic int8")
BASELINE = "load+save"


# --- the child: one operation, timed ---------------------------------------------------------

def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(op: str, source: str, target: str) -> None:
    import numpy  # noqa: F401  (imported before the RSS mark, as every operation needs it)
    import onnx

    if op.startswith("inq"):
        from inq_onnx.jobs import quantize_file
        from inq_onnx.options import QuantizeOptions
    elif op.startswith("ort"):
        from onnxruntime.quantization import QuantType, quantize_dynamic
    before = status_kb("VmRSS")
    start = time.perf_counter()
    if op == "load+save":
        onnx.save(onnx.load(source), target)
    elif op.startswith("inq"):
        options = QuantizeOptions(bits=4, per_channel=op.endswith("/chan"))
        quantize_file(source, target, options, check=op.endswith("+verify"))
    elif op.startswith("ort"):
        quantize_dynamic(source, target, weight_type=QuantType.QInt8)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "rss_before": before, "maxrss": status_kb("VmHWM")}))


def spawn(op: str, source: Path, target: Path, repo: Path = REPO) -> dict:
    """Run one operation in a fresh process (with the code of ``repo``, a checkout of inq-onnx);
    its time and memory, or its last error line."""
    if target.exists():
        target.unlink()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, str(repo / "bench" / "quantize_speed.py"), "--child", op, str(source),
                                 str(target)], stdout=out, stderr=err, text=True, cwd=repo,
                                env={**os.environ, "PYTHONPATH": str(repo)})
        proc.wait()
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        return {"error": (lines or [f"exit {proc.returncode}"])[-1][:160]}
    return json.loads(stdout.strip().splitlines()[-1])


# --- the parent: models, runs, table ---------------------------------------------------------

def synthetic_model(path: Path, megabytes: float, seed: int = 0) -> None:
    """x[1,256,16,16] -> 5 Conv 3x3 (ReLU) -> global pool -> MatMul chain (ReLU) -> y[1,1000],
    random float32 weights (He-scaled), ~``megabytes`` MB, saved as one protobuf file."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def weight(name, shape, fan_in):
        w = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        inits.append(numpy_helper.from_array(w, name))
        return name

    x, channels = "x", 256
    for i, out_ch in enumerate((512, 512, 512, 512, 512)):
        w = weight(f"conv{i}.weight", (out_ch, channels, 3, 3), channels * 9)
        b = weight(f"conv{i}.bias", (out_ch,), channels * 9)
        nodes += [helper.make_node("Conv", [x, w, b], [f"c{i}"], pads=[1, 1, 1, 1]), helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        x, channels = f"r{i}", out_ch
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"]), helper.make_node("Flatten", ["gap"], ["h"])]
    conv_bytes = sum(i.ByteSize() for i in inits)
    width = 4096
    n_square = max(0, round((megabytes * 1e6 - conv_bytes - 4 * width * (channels + 1000)) / (4 * width * width)))
    dims = [channels] + [width] * (n_square + 1) + [1000]
    x = "h"
    for i, (fan_in, fan_out) in enumerate(zip(dims, dims[1:])):
        w = weight(f"fc{i}.weight", (fan_in, fan_out), fan_in)
        nodes.append(helper.make_node("MatMul", [x, w], [f"m{i}"]))
        x = f"m{i}"
        if i < len(dims) - 2:
            nodes.append(helper.make_node("Relu", [x], [f"a{i}"]))
            x = f"a{i}"
    nodes.append(helper.make_node("Identity", [x], ["y"]))
    graph = helper.make_graph(nodes, "synthetic", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def measure(model: Path, runs: int, workdir: Path) -> dict[str, dict]:
    results = {}
    for op in OPERATIONS:
        target = workdir / f"out.{op.replace(' ', '_').replace('/', '_').replace('+', '_')}.onnx"
        records = []
        for _ in range(runs):
            record = spawn(op, model, target)
            if "error" in record:
                results[op] = record
                break
            records.append(record)
        else:
            results[op] = {"seconds": statistics.median(r["seconds"] for r in records),
                           "maxrss": max(r["maxrss"] for r in records),
                           "rss_before": statistics.median(r["rss_before"] for r in records),
                           "all_seconds": [round(r["seconds"], 3) for r in records]}
        print(f"    {op}: {summary(results[op])}", file=sys.stderr, flush=True)
    return results


def summary(record: dict) -> str:
    if "error" in record:
        return "error: " + record["error"]
    return f"{record['seconds']:.2f} s (runs {record['all_seconds']}), peak RSS {record['maxrss'] / 1e6:.0f} MB"


def table(label: str, size: int, results: dict[str, dict]) -> str:
    base = results[BASELINE].get("seconds")
    lines = [f"{label}: {size / 1e6:.1f} MB",
             f"  {'operation':<18} {'median s':>9} {'x load+save':>11} {'peak RSS MB':>11} {'RSS/size':>8} {'net RSS/size':>12}"]
    for op, r in results.items():
        if "error" in r:
            lines.append(f"  {op:<18} failed: {r['error']}")
            continue
        ratio = f"{r['seconds'] / base:.2f}" if base else "-"
        net = (r["maxrss"] - r["rss_before"]) / size
        lines.append(f"  {op:<18} {r['seconds']:>9.2f} {ratio:>11} {r['maxrss'] / 1e6:>11.0f} {r['maxrss'] / size:>8.2f} {net:>12.2f}")
    return "\n".join(lines)


def largest_models() -> list[Path]:
    """The largest model by file size, and the largest with float weights if that is another one."""
    import onnx

    from inq_onnx.graph.weights import select_weights

    found = sorted(SHARED_MODELS.glob("*.onnx"), key=lambda p: p.stat().st_size, reverse=True)
    if not found:
        return []
    chosen = [found[0]]
    for path in found:
        if any(c.selected for c in select_weights(onnx.load(str(path)))):
            if path != found[0]:
                chosen.append(path)
            break
    return chosen


def against(other: Path, runs: int, megabytes: float) -> str:
    """One-shot 4 b of this checkout and of ``other`` (e.g. a worktree of an older commit) on the
    synthetic model, each / load+save, the three interleaved in one run: a before/after figure."""
    arms = {"load+save": ("load+save", REPO), "this checkout": ("inq 4-bit", REPO), str(other): ("inq 4-bit", other)}
    records: dict[str, list[dict]] = {arm: [] for arm in arms}
    with tempfile.TemporaryDirectory(prefix="inq-bench-") as tmp:
        synthetic = Path(tmp) / "synthetic.onnx"
        synthetic_model(synthetic, megabytes)
        size = synthetic.stat().st_size
        for _ in range(runs):
            for arm, (op, repo) in arms.items():
                record = spawn(op, synthetic, Path(tmp) / "out.onnx", repo)
                if "error" in record:
                    raise SystemExit(f"{arm} failed: {record['error']}")
                records[arm].append(record)
    base = statistics.median(r["seconds"] for r in records["load+save"])
    lines = [f"synthetic {size / 1e6:.0f} MB, {runs} runs interleaved: median s, / load+save, peak RSS / file (net)"]
    for arm, rs in records.items():
        seconds, peak = statistics.median(r["seconds"] for r in rs), max(r["maxrss"] for r in rs)
        net = peak - statistics.median(r["rss_before"] for r in rs)
        lines.append(f"  {arm:<28} {seconds:6.2f} s  {seconds / base:5.2f}x  {peak / size:5.2f}x ({net / size:.2f}x)"
                     f"  runs {[round(r['seconds'], 2) for r in rs]}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--synthetic-mb", type=float, default=200.0)
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--against", type=Path, metavar="CHECKOUT",
                        help="only one-shot 4 b on the synthetic model, this checkout against another one, interleaved")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    if args.against:
        print(against(args.against.resolve(), args.runs, args.synthetic_mb))
        return 0
    reports, raw = [], {}
    with tempfile.TemporaryDirectory(prefix="inq-bench-") as tmp:
        workdir = Path(tmp)
        models = [(f"{p.name} (largest in ../shared/models{'' if i == 0 else ' with float weights'})", p)
                  for i, p in enumerate(largest_models())]
        synthetic = workdir / "synthetic.onnx"
        synthetic_model(synthetic, args.synthetic_mb)
        models.append(("synthetic Conv/MatMul model, random float32 weights", synthetic))
        for label, path in models:
            print(f"  {label}", file=sys.stderr, flush=True)
            results = measure(path, args.runs, workdir)
            size = path.stat().st_size
            raw[label] = {"bytes": size, "results": results}
            reports.append(table(label, size, results))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.runs} runs each (median time, max peak RSS)\n")
    print("\n\n".join(reports))
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(*sys.argv[2:])
        sys.exit(0)
    sys.exit(main())

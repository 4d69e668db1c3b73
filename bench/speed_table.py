"""Every row of the speed-and-memory table (issue 12) in one run: medians of --runs, interleaved.

  1  one-shot `quantize --bits 4 --no-verify` of a synthetic Conv/MatMul model (--synthetic-mb,
     one protobuf file), time / a process doing only onnx.load + onnx.save; and / ORT's
     quantize_dynamic (each operation in a fresh process, bench/quantize_speed.py's child)
  2  its peak RSS (VmHWM) / the file size, as is and net of the process's RSS before the work
  3  compact export (4 b) of the same model: ONNX Runtime session creation / the float model's,
     the floor (the float weights behind one Reshape each), and the decode functions used
     (``Table4e4``: element fields, 4 codes in a uint16)
  4  the same on 320n at 2, 3, 4 and 5 bits (and the floor, at 4 b)
  5  file size float (the quantized model as saved) / compact on lenet5_mnist and resnet8_mnist at
     4 bits, and the unpack function(s) used (``Unpack4r3``: radix fields, 3 codes in 10 bits)
  6  one training step through our artifacts (forward, backward and our masked SGD) / one PyTorch
     CPU step (forward, backward, SGD with momentum) on lenet5_mnist, batch 64; and the share of
     a short full-INQ run spent outside ONNX Runtime's forward/backward (partition, masking,
     optimizer, checkpoints, evaluation), artifact building counted apart. torch is optional: the
     row says why when it is absent.

    .venv/bin/python bench/speed_table.py                    # ~10 minutes on 2 busy cores
    .venv/bin/python bench/speed_table.py --runs 3 --synthetic-mb 50 --rows 3 4

Each operation pair is timed alternately (a, b, a, b, ...) so a load change on the machine hits
both; figures are ratios of medians. Every operation runs in a fresh process (rows 3-4: the
session creation alone is timed inside it).
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
SHARED = REPO.parent / "shared"

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

import quantize_speed  # noqa: E402

GOALS = {1: "<= 1.3x, and below quantize_dynamic", 2: "<= 2x", 3: "<= 1.5x", 4: "<= 1.5x at every b",
         5: ">= 7.5x smaller", 6: "<= 1.2x; bookkeeping <= 5 %"}


def interleaved(actions: dict, runs: int) -> dict[str, tuple[float, ...]]:
    """Median of each action's figures (seconds), the actions run alternately ``runs`` times."""
    figures = {name: [] for name in actions}
    for _ in range(runs):
        for name, action in actions.items():
            figures[name].append(action())
    return {name: tuple(statistics.median(column) for column in zip(*f)) for name, f in figures.items()}


OPEN = ("import sys, time, onnxruntime as ort; options = ort.SessionOptions(); options.log_severity_level = 3; "
        "start, cpu = time.perf_counter(), time.process_time(); "
        "ort.InferenceSession(sys.argv[1], options, providers=['CPUExecutionProvider']); "
        "print(time.perf_counter() - start, time.process_time() - cpu)")


def session(path: Path) -> tuple[float, float]:
    """Seconds ONNX Runtime takes to create a session of ``path``, default options, in a fresh process
    (as a program opening the model meets it: in one process, sessions created one after another
    reuse memory the previous ones freed, and the ratios moved by 0.5 between two runs): wall-clock
    and CPU time of the process (less moved by other processes on a busy machine)."""
    done = subprocess.run([sys.executable, "-c", OPEN, str(path)], capture_output=True, text=True, check=True)
    wall, cpu = done.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def ratios(t: dict, a: str, b: str) -> str:
    """``a`` / ``b`` of medians: wall-clock, then CPU time."""
    return f"{t[a][0] / t[b][0]:.2f}x (CPU {t[a][1] / t[b][1]:.2f}x)"


def compact_pair(quantized: onnx.ModelProto, folder: Path, tag: str) -> tuple[Path, Path]:
    from inq_onnx.export import to_compact

    float_path, compact_path = folder / f"{tag}.float.onnx", folder / f"{tag}.compact.onnx"
    onnx.save(quantized, str(float_path))
    onnx.save(to_compact(quantized)[0], str(compact_path))
    return float_path, compact_path


def functions(path: Path) -> str:
    return "+".join(f.name for f in onnx.load(str(path), load_external_data=False).functions)


def rows_one_two(synthetic: Path, runs: int, folder: Path) -> list[tuple[int, str, str]]:
    ops = ("load+save", "inq 4-bit", "ort dynamic int8")
    records = {op: [] for op in ops}
    for _ in range(runs):
        for op in ops:
            record = quantize_speed.spawn(op, synthetic, folder / f"out.{ops.index(op)}.onnx")
            if "error" in record:
                raise SystemExit(f"{op} failed: {record['error']}")
            records[op].append(record)
    seconds = {op: statistics.median(r["seconds"] for r in records[op]) for op in ops}
    size = synthetic.stat().st_size
    peak = max(r["maxrss"] for r in records["inq 4-bit"])
    before = statistics.median(r["rss_before"] for r in records["inq 4-bit"])
    base_peak = max(r["maxrss"] for r in records["load+save"])
    label = f"one-shot 4 b, {size / 1e6:.0f} MB synthetic, time / load+save"
    ours, floor, ort_dynamic = seconds["inq 4-bit"], seconds["load+save"], seconds["ort dynamic int8"]
    return [(1, label, f"{ours / floor:.2f}x ({ours:.2f} s vs {floor:.2f} s); / quantize_dynamic "
                       f"{ours / ort_dynamic:.2f}x ({ort_dynamic:.2f} s)"),
            (2, "its peak RSS / file size", f"{peak / size:.2f}x ({(peak - before) / size:.2f}x net of the "
                                            f"{before / 1e6:.0f} MB before; load+save {base_peak / size:.2f}x)")]


def reshape_floor(quantized: onnx.ModelProto, path: Path) -> Path:
    """The float model with each weight stored flat ([-1, 4]) and put back in shape by one Reshape:
    the least any decode graph costs, since ONNX Runtime copies every folded node's output."""
    from onnx import helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(quantized)
    graph, nodes = model.graph, []
    for init in graph.initializer:
        if init.name.endswith("weight"):
            values, name = numpy_helper.to_array(init), init.name
            init.CopyFrom(numpy_helper.from_array(values.reshape(-1, 4), f"{name}.flat"))
            graph.initializer.append(numpy_helper.from_array(np.array(values.shape, np.int64), f"{name}.shape"))
            nodes.append(helper.make_node("Reshape", [f"{name}.flat", f"{name}.shape"], [name]))
    for node in reversed(nodes):
        graph.node.insert(0, node)
    onnx.save(model, str(path))
    return path


def row_three(synthetic: Path, runs: int, folder: Path) -> list[tuple[int, str, str]]:
    import inq_onnx

    quantized = inq_onnx.quantize(str(synthetic), bits=4).model
    float_path, compact_path = compact_pair(quantized, folder, "synthetic")
    floor = reshape_floor(quantized, folder / "synthetic.reshape.onnx")
    del quantized
    t = interleaved({"float": lambda: session(float_path), "compact": lambda: session(compact_path),
                     "floor": lambda: session(floor)}, runs)
    return [(3, "compact 4 b of the same model: session creation / float",
             f"{ratios(t, 'compact', 'float')} ({t['compact'][0] * 1e3:.0f} ms vs {t['float'][0] * 1e3:.0f} ms, "
             f"{functions(compact_path)}); floor (float weights behind one Reshape each): {ratios(t, 'floor', 'float')}")]


def row_four(runs: int, folder: Path) -> list[tuple[int, str, str]]:
    """All files first, then every session timed in one interleaved loop (a file timed right after
    it was written, or right after a quantization, came out slower)."""
    import inq_onnx

    paths = {}
    for bits in (2, 3, 4, 5):
        quantized = inq_onnx.quantize(str(SHARED / "models" / "320n.onnx"), bits=bits).model
        paths[f"float{bits}"], paths[f"compact{bits}"] = compact_pair(quantized, folder, f"320n{bits}")
        if bits == 4:
            paths["floor"] = reshape_floor(quantized, folder / "320n.reshape.onnx")
    t = interleaved({name: lambda path=path: session(path) for name, path in paths.items()}, runs)
    cells = []
    for bits in (2, 3, 4, 5):
        f, c = t[f"float{bits}"][0], t[f"compact{bits}"][0]
        floor = f"; floor {ratios(t, 'floor', f'float{bits}')}" if bits == 4 else ""
        cells.append(f"{bits} b {ratios(t, f'compact{bits}', f'float{bits}')} ({c * 1e3:.0f} ms vs {f * 1e3:.0f} ms, "
                     f"{functions(paths[f'compact{bits}'])}{floor})")
    return [(4, "320n session creation compact / float", "; ".join(cells))]


def row_five(folder: Path) -> list[tuple[int, str, str]]:
    import inq_onnx

    cells = []
    for name in ("lenet5_mnist", "resnet8_mnist"):
        quantized = inq_onnx.quantize(str(SHARED / "models" / f"{name}.onnx"), bits=4).model
        float_path, compact_path = compact_pair(quantized, folder, name)
        f, c = float_path.stat().st_size, compact_path.stat().st_size
        ops = ", ".join(fn.name for fn in onnx.load(str(compact_path)).functions)
        cells.append(f"{name} {f / c:.2f}x ({f:,} B -> {c:,} B, {ops})")
    return [(5, "file size float / compact at 4 b", "; ".join(cells))]


def mnist(count: int) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(SHARED / "data" / "mnist_5k.npz")
    return data["x_train"][:count].astype(np.float32) / 255.0, data["y_train"][:count]


def row_six(runs: int, folder: Path) -> list[tuple[int, str, str]]:
    """Our steps and PyTorch's alternate: after each of our batches (an INQ run's ``batch`` event)
    one PyTorch step runs and is timed; our step is the gap between two batch events less the
    PyTorch step in it. Both run on one thread: on a busy machine a second intra-op thread made
    PyTorch's step 10x slower (spinning), which measures the load, not the code."""
    try:
        import torch
    except ImportError:
        return [(6, "training step ours / PyTorch, lenet5 batch 64",
                 "not measured: torch is not installed (bench-only: `.venv/bin/pip install torch==2.13.0`)")]
    from inq_onnx.train import session as train_session

    torch.set_num_threads(1)
    x, y = mnist(1024)
    model_path = SHARED / "models" / "lenet5_mnist.onnx"
    step_torch = torch_stepper(model_path, x, y, torch)
    timed = {"forward+backward": 0.0, "steps": 0}
    original = train_session.TrainingSession.train_step

    def counted(self, *inputs):
        start = time.perf_counter()
        loss = original(self, *inputs)
        timed["forward+backward"] += time.perf_counter() - start
        timed["steps"] += 1
        return loss

    np.savez(folder / "train.npz", input=x, labels=y)
    train_session.TrainingSession.train_step = counted
    try:
        ours = inq_run(model_path, folder, step_torch)
    finally:
        train_session.TrainingSession.train_step = original
    share = 1 - timed["forward+backward"] / ours["training_seconds"]
    return [(6, "training step ours / PyTorch, lenet5 batch 64, one thread each",
             f"{ours['ours'] / ours['torch']:.2f}x ({ours['ours'] * 1e3:.1f} ms vs {ours['torch'] * 1e3:.1f} ms "
             f"per step, medians of {timed['steps']}); outside ORT's forward/backward: {100 * share:.1f} % of "
             f"{ours['training_seconds']:.1f} s of training, plus {ours['setup_seconds']:.1f} s of artifact building")]


def inq_run(model_path: Path, folder: Path, step_torch) -> dict:
    """A short full-INQ run (sigma 0.5, 0.75, 1; 3 epochs of 1024 images, batch 64, one thread),
    a PyTorch step after each of its batches; median step times and the run's times without them."""
    from inq_onnx.incremental import InqOptions
    from inq_onnx.jobs import inq_file
    from inq_onnx.options import QuantizeOptions
    from inq_onnx.train.options import TrainOptions

    marks = {"batches": [], "torch": []}

    def on_event(kind, info):
        if kind == "batch":
            marks["batches"].append(time.perf_counter())
            marks["torch"].append(step_torch())
        elif kind == "step" and "first" not in marks:
            marks["first"] = time.perf_counter()

    start = time.perf_counter()
    inq_file(model_path, folder / "lenet5.inq4.onnx", InqOptions(QuantizeOptions(bits=4), schedule=(0.5, 0.75, 1.0)),
             TrainOptions(epochs_per_step=3, batch_size=64, threads=1), data=folder / "train.npz", check=False,
             on_event=on_event)
    end = time.perf_counter()
    gaps = np.diff(marks["batches"]) - np.array(marks["torch"][:-1])
    torch_total = float(np.sum(marks["torch"]))
    return {"ours": float(np.median(gaps)), "torch": float(np.median(marks["torch"][2:])),
            "training_seconds": end - marks["first"] - torch_total, "setup_seconds": marks["first"] - start}


def torch_stepper(model_path: Path, x: np.ndarray, y: np.ndarray, torch):
    """A function doing one PyTorch CPU step of the same LeNet-5 (weights from the ONNX file):
    forward, cross-entropy, backward, SGD (momentum 0.9, weight decay 5e-4); it returns seconds."""
    from onnx import numpy_helper

    weights = {i.name: torch.tensor(numpy_helper.to_array(i)) for i in onnx.load(str(model_path)).graph.initializer}
    nn = torch.nn
    flat = weights["classifier.1.weight"].shape[1]
    net = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(flat, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                        nn.Linear(84, 10))
    names = ["features.0", "features.3", "classifier.1", "classifier.3", "classifier.5"]
    layers = [0, 3, 7, 9, 11]
    net.load_state_dict({f"{i}.{kind}": weights[f"{n}.{kind}"]
                         for i, n in zip(layers, names) for kind in ("weight", "bias")})
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    batches = [(torch.tensor(x[i:i + 64]), torch.tensor(y[i:i + 64])) for i in range(0, len(x), 64)]
    count = [0]

    def step() -> float:
        inputs, labels = batches[count[0] % len(batches)]
        count[0] += 1
        start = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(inputs), labels).backward()
        optimizer.step()
        return time.perf_counter() - start

    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--synthetic-mb", type=float, default=200.0)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    args = parser.parse_args()
    if not (SHARED / "models").is_dir():
        sys.exit(f"{SHARED / 'models'} is absent: this benchmark needs the project's ../shared folder")
    ort.set_default_logger_severity(3)
    rows = []
    with tempfile.TemporaryDirectory(prefix="inq-speed-") as tmp:
        folder = Path(tmp)
        synthetic = folder / "synthetic.onnx"
        if {1, 2, 3} & set(args.rows):
            quantize_speed.synthetic_model(synthetic, args.synthetic_mb)
        if {1, 2} & set(args.rows):
            rows += [r for r in rows_one_two(synthetic, args.runs, folder) if r[0] in args.rows]
        if 3 in args.rows:
            rows += row_three(synthetic, args.runs, folder)
        if 4 in args.rows:
            rows += row_four(args.runs, folder)
        if 5 in args.rows:
            rows += row_five(folder)
        if 6 in args.rows:
            rows += row_six(args.runs, folder)
    print(f"{args.runs} runs each, interleaved, medians\n")
    print("| # | figure | measured | goal |\n|---|---|---|---|")
    for number, label, value in rows:
        print(f"| {number} | {label} | {value} | {GOALS[number]} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

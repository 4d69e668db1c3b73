"""Peak memory of one-shot quantization (and compact export) on a model over 2 GB.

Generates a chain of MatMul layers with random float32 weights, saved with external data by
``onnx.save_model(save_as_external_data=True)`` into a temporary folder on the disk with the most
free space, runs ``inq-onnx quantize`` on it in a child process (verification on, as a user runs
it) and prints the model size, the peak RSS and its ratio to the size, and the wall time. Two
peaks: ``maxrss``, the largest single process of the run (``wait4``'s rusage, the figure
``/usr/bin/time -v`` prints), and ``tree``, the sum over the run's processes sampled every 50 ms
(the quantizing process and its ONNX Runtime child together), which is what the machine needs.
The output must use external data and run in ONNX Runtime (one InferenceSession, one input).
When ``inq_onnx.export`` offers ``export(model, "compact", output=...)`` the compact export of
the quantized model is measured the same way.

    .venv/bin/python bench/big_model.py                    # ~2.4 GB model, needs ~8 GB free disk
    .venv/bin/python bench/big_model.py --gb 0.3 --keep    # a quick look; keep the files

Target: peak (tree) <= 2x the model size. The folder is removed afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
WIDTH = 8192  # one 8192x8192 float32 weight is 256 MiB


def roomiest_folder() -> Path:
    """Of the usual scratch places, the one on the disk with the most free space."""
    places = [Path(tempfile.gettempdir()), Path.home(), Path("/var/tmp")]  # ties: the first
    usable = [p for p in places if p.is_dir() and os.access(p, os.W_OK)]
    return max(usable, key=lambda p: shutil.disk_usage(p).free)


def make_model(path: Path, gb: float, seed: int = 0) -> None:
    """x[1, WIDTH] -> (MatMul W_i, Add b_i, Relu) * n -> y, with external data."""
    n = max(1, round(gb * 1e9 / (WIDTH * WIDTH * 4)))
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "x"
    for i in range(n):
        w = rng.standard_normal((WIDTH, WIDTH), dtype=np.float32)
        w *= np.float32(1.5 / np.sqrt(WIDTH))
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(WIDTH, np.float32), f"b{i}")]
        del w
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]), helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
                  helper.make_node("Relu", [f"a{i}"], [f"h{i}"])]
        x = f"h{i}"
    nodes.append(helper.make_node("Identity", [x], ["y"]))
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WIDTH])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, WIDTH])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)


def disk_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants, now (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            statm = Path(f"/proc/{entry}/statm").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def measure(cmd: list[str]) -> dict:
    """Run ``cmd``; its exit code, wall time, largest-process peak RSS and sampled tree peak."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tree = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        tree = max(tree, tree_rss(proc.pid))
        time.sleep(0.05)
    output = proc.stdout.read()
    return {"rc": os.waitstatus_to_exitcode(status), "seconds": time.monotonic() - started,
            "maxrss": usage.ru_maxrss * 1024, "tree": tree, "output": output}


def ort_runs(path: Path) -> str:
    """Load ``path`` in ONNX Runtime in a child process and run it once on a random input."""
    code = ("import sys, numpy as np, onnxruntime as ort\n"
            "s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
            "i = s.get_inputs()[0]\n"
            "y = s.run(None, {i.name: np.random.default_rng(0).random([1, %d], dtype=np.float32)})[0]\n"
            "print('ok' if np.all(np.isfinite(y)) else 'non-finite output')\n" % WIDTH)
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    return done.stdout.strip() or done.stderr.strip().splitlines()[-1]


def uses_external_data(path: Path) -> bool:
    model = onnx.load(str(path), load_external_data=False)
    return any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)


def line(label: str, size: int, run: dict) -> str:
    gib = 2**30
    return (f"{label:<15} model {size / gib:6.2f} GiB  peak maxrss {run['maxrss'] / gib:5.2f} GiB "
            f"({run['maxrss'] / size:.2f}x)  peak tree {run['tree'] / gib:5.2f} GiB ({run['tree'] / size:.2f}x)  "
            f"wall {run['seconds']:6.1f} s  exit {run['rc']}")


def has_compact_export() -> bool:
    try:
        from inq_onnx.export import export  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.4, help="model size in GB (default 2.4)")
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--dir", type=Path, help="scratch folder (default: the roomiest of $TMPDIR, ~, /var/tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--no-verify", action="store_true", help="pass --no-verify to inq-onnx quantize")
    parser.add_argument("--make", type=Path, help=argparse.SUPPRESS)  # internal: generate the model only
    args = parser.parse_args()
    if args.make:
        make_model(args.make, args.gb)
        return 0
    folder = Path(tempfile.mkdtemp(prefix="inq-big-", dir=args.dir or roomiest_folder()))
    results = {}
    try:
        model = folder / "big.onnx"
        t0 = time.monotonic()
        # in a child: a child's ru_maxrss starts at its parent's peak (kept across fork and exec)
        subprocess.run([sys.executable, __file__, "--make", str(model), "--gb", str(args.gb)], check=True)
        size = disk_size(model)
        print(f"generated {model} ({size / 2**30:.2f} GiB) in {time.monotonic() - t0:.0f} s; "
              f"free disk {shutil.disk_usage(folder).free / 2**30:.0f} GiB", flush=True)
        out = folder / f"big.inq{args.bits}.onnx"
        cmd = [sys.executable, "-m", "inq_onnx_cli.main", "quantize", str(model), "--bits", str(args.bits), "-o", str(out)]
        run = measure(cmd + (["--no-verify"] if args.no_verify else []))
        print(line("quantize", size, run), flush=True)
        if run["rc"] != 0:
            print(run["output"][-2000:])
            return 1
        print(f"  output {disk_size(out) / 2**30:.2f} GiB, external data: {uses_external_data(out)}, "
              f"ONNX Runtime: {ort_runs(out)}", flush=True)
        results["quantize"] = {k: v for k, v in run.items() if k != "output"} | {"model_bytes": size}
        if has_compact_export():
            compact = folder / f"big.inq{args.bits}.compact.onnx"
            code = "import sys; from inq_onnx.export import export; export(sys.argv[1], 'compact', output=sys.argv[2])"
            run = measure([sys.executable, "-c", code, str(out), str(compact)])
            print(line("compact export", disk_size(out), run), flush=True)
            if run["rc"] == 0:
                print(f"  output {disk_size(compact) / 2**30:.2f} GiB, ONNX Runtime: {ort_runs(compact)}", flush=True)
            else:
                print("  " + (run["output"].strip().splitlines() or ["(no output)"])[-1])
            results["compact"] = {k: v for k, v in run.items() if k != "output"} | {"model_bytes": disk_size(out)}
        print(json.dumps(results))
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

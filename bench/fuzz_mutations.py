"""Mutation fuzz: `inq-onnx quantize MODEL --bits 4 -o OUT` on broken variants of real models.

Each case takes a seed model (../shared/models/*.onnx and the fixture), applies one to three
mutations to its bytes or its protobuf fields (truncate, flip bytes, drop initializers, corrupt or
negative or huge dims, a data_type changed without the data, dangling node inputs, no graph,
duplicate names, wrong attribute types...) or changes that keep the file consistent (a weight
reshaped, retyped, given extreme values, moved into a Constant or a sparse initializer, shared
with a graph output; a plausible wrong Conv/Gemm attribute) so that the quantizer, the writer
and the ONNX Runtime check behind them are reached, and runs the command on it (every third
case with --per-channel). A case ends in one of:

    ok         exit 0 (the mutation was harmless, or the tool coped)
    clean      non-zero exit, one stderr line "error: ... To fix this, ...", input untouched,
               nothing left in the output folder
    failure    a traceback, an "internal error" line, several stderr lines, no fix hint, a
               changed input, or a partial output left behind
    crash      the process running the tool died by a signal
    timeout    no answer within --timeout seconds

The figure to keep at zero is failures + crashes + timeouts. Commands run in-process, a batch
per worker (python -c "import inq_onnx_cli.main; main(argv)" costs a second of imports per
case), each worker a child process so a crash is contained and attributed to its case; the
tool's own ONNX Runtime run already happens in a grandchild. Stdout/stderr are captured at the
file-descriptor level, so what C++ code prints counts as it would for a user.

    .venv/bin/python bench/fuzz_mutations.py                    # 1000 cases, all models
    .venv/bin/python bench/fuzz_mutations.py --cases 100 --models mlp_digits.onnx
    .venv/bin/python bench/fuzz_mutations.py --only 417         # replay one case, show its output
    .venv/bin/python bench/fuzz_mutations.py --keep failures/   # write the failing mutants there

A case is fully determined by its number and --seed: --only N rebuilds the same mutant. The
mutations themselves are in bench/fuzz_recipes.py (bytes, damaged fields) and
bench/fuzz_consistent.py (consistent changes); this file draws them and runs the cases.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import queue
import random
import resource
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from pathlib import Path

import onnx

# bench/ is run as a script (the workers too): its modules import by bare name
from fuzz_consistent import CONSISTENT_MUTATIONS
from fuzz_recipes import BYTE_MUTATIONS, PROTO_MUTATIONS

REPO = Path(__file__).resolve().parents[1]
SEEDS = [REPO.parent / "shared" / "models", REPO / "fixtures"]
MEMORY_LIMIT = 8 << 30  # per worker (and the ORT child it starts): a huge dim must fail, not swap
FIX_HINT = "To fix this"


# ---- the recipe of a case ---------------------------------------------------------------------

def mutate(data: bytes, rng: random.Random) -> tuple[bytes, list[str]]:
    """One byte mutation (25%), or 1-3 field mutations: damaging ones (45%) or ones that keep
    the model consistent (30%), described."""
    draw = rng.random()
    if draw < 0.25:
        out, what = rng.choice(BYTE_MUTATIONS)(data, rng)
        return out, [what]
    kinds = PROTO_MUTATIONS if draw < 0.7 else CONSISTENT_MUTATIONS
    model = onnx.ModelProto()
    model.ParseFromString(data)
    done = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        for _attempt in range(5):
            what = rng.choice(kinds)(model, rng)
            if what:
                done.append(what)
                break
    return model.SerializeToString(), done or ["nothing changed"]


# ---- the worker: runs cases in-process, reports one JSON line each -----------------------------

@contextlib.contextmanager
def captured_fds(folder: Path):
    """Redirect fd 1 and 2 (and sys.stdout/err) to files; yields a function reading stderr."""
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    out_file, err_file = open(folder / "stdout", "w+b"), open(folder / "stderr", "w+b")
    os.dup2(out_file.fileno(), 1), os.dup2(err_file.fileno(), 2)
    py_out, py_err = sys.stdout, sys.stderr
    sys.stdout = io.TextIOWrapper(os.fdopen(os.dup(1), "wb"), write_through=True)
    sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(2), "wb"), write_through=True)
    try:
        yield lambda: (err_file.seek(0), err_file.read().decode(errors="replace"))[1]
    finally:
        sys.stdout.close(), sys.stderr.close()
        sys.stdout, sys.stderr = py_out, py_err
        os.dup2(saved[0], 1), os.dup2(saved[1], 2)
        os.close(saved[0]), os.close(saved[1])
        out_file.close(), err_file.close()


def classify(rc: int, stderr: str, input_ok: bool, leftovers: list[str]) -> str:
    lines = stderr.strip().splitlines()
    if "Traceback" in stderr or "internal error" in stderr:
        return "failure"
    if rc == 0:
        return "ok" if input_ok else "failure"
    clean = (len(lines) == 1 and lines[0].startswith("error: ") and FIX_HINT in lines[0] and input_ok
             and not leftovers)
    return "clean" if clean else "failure"


def seed_models(patterns: list[str] | None) -> list[Path]:
    found = [p for folder in SEEDS if folder.is_dir() for p in sorted(folder.glob("*.onnx"))]
    if patterns:
        found = [p for p in found if any(p.match(pat) for pat in patterns)]
    return found


def build_case(case: dict, cache: dict) -> tuple[bytes, list[str]]:
    path = case["model"]
    if path not in cache:
        cache[path] = Path(path).read_bytes()
    return mutate(cache[path], random.Random(case["rng"]))


def run_case(case: dict, cache: dict, main) -> dict:
    data, recipe = build_case(case, cache)
    with tempfile.TemporaryDirectory(prefix="inq-fuzz-") as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir(), (tmp / "out").mkdir(), (tmp / "io").mkdir()
        model = tmp / "in" / "model.onnx"
        model.write_bytes(data)
        warnings.resetwarnings()  # each case shows its warnings, as a fresh process would
        warnings.simplefilter("default")
        started = time.monotonic()
        with captured_fds(tmp / "io") as read_stderr:
            try:
                rc = main(["quantize", str(model), "--bits", "4", "-o", str(tmp / "out" / "q.onnx"),
                           *(["--per-channel"] if case.get("per_channel") else [])])
            except SystemExit as e:  # main() returns its code; a SystemExit is a bug of ours too
                rc = e.code if isinstance(e.code, int) else 1
                print(f"SystemExit escaped main(): {e.code!r}", file=sys.stderr)
            stderr = read_stderr()
        seconds = time.monotonic() - started
        input_ok = model.read_bytes() == data and sorted(os.listdir(tmp / "in")) == ["model.onnx"]
        produced = sorted(os.listdir(tmp / "out"))
        leftovers = [p for p in produced if p not in ("q.onnx", "q.onnx.data")] if rc == 0 else produced
    kind = classify(rc, stderr, input_ok, leftovers)
    first = next((line for line in stderr.splitlines() if line.strip()), "")
    if not input_ok:
        first = "the input file was changed | " + first
    if leftovers and kind == "failure":
        first = f"left behind {leftovers} | " + first
    recipe = recipe + ["(--per-channel)"] if case.get("per_channel") else recipe
    return {"id": case["id"], "model": Path(case["model"]).name, "recipe": recipe, "rc": rc, "kind": kind,
            "first_line": first[:300], "stderr_lines": len(stderr.strip().splitlines()), "seconds": round(seconds, 2),
            **({"stderr": stderr[-4000:]} if kind == "failure" or case.get("verbose") else {})}


def worker() -> None:
    """Read cases (JSON lines) on stdin, answer one JSON line each on the original stdout."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    answers = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    from inq_onnx_cli.main import main

    cache: dict = {}
    for line in sys.stdin:
        case = json.loads(line)
        answers.write(json.dumps(run_case(case, cache, main)) + "\n")
        answers.flush()


# ---- the driver --------------------------------------------------------------------------------

class Worker:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     cwd=REPO, start_new_session=True)

    def ask(self, case: dict, timeout: float) -> dict:
        self.proc.stdin.write(json.dumps(case) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if line:
            return json.loads(line)
        base = {"id": case["id"], "model": Path(case["model"]).name, "rc": None, "recipe": None}
        if not ready:
            self.stop()
            return {**base, "kind": "timeout", "first_line": f"no answer in {timeout:.0f} s"}
        code = self.proc.wait()
        reason = f"killed by {signal.Signals(-code).name}" if code < 0 else f"the worker exited with {code}"
        return {**base, "kind": "crash" if code < 0 else "failure", "first_line": reason}

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the worker and the ORT child it may have started
        self.proc.wait()


def drive(cases: list[dict], workers: int, timeout: float, progress: bool) -> list[dict]:
    todo: queue.Queue = queue.Queue()
    for case in cases:
        todo.put(case)
    results, lock = [], threading.Lock()

    def loop() -> None:
        w = Worker()
        try:
            while True:
                try:
                    case = todo.get_nowait()
                except queue.Empty:
                    return
                result = w.ask(case, timeout)
                if result["recipe"] is None:  # the worker is gone: rebuild the recipe here, start another
                    result["recipe"] = build_case(case, {})[1] + (["(--per-channel)"] if case["per_channel"] else [])
                    w = Worker()
                with lock:
                    results.append(result)
                    if progress and len(results) % 50 == 0:
                        print(f"  {len(results)}/{len(cases)} cases", file=sys.stderr, flush=True)
        finally:
            w.stop()

    threads = [threading.Thread(target=loop) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(results, key=lambda r: r["id"])


def make_cases(n: int, seed: int, models: list[Path]) -> list[dict]:
    """Round-robin over the seed models; every third case quantizes per channel."""
    rng = random.Random(seed)
    return [{"id": i, "model": str(models[i % len(models)]), "rng": rng.randrange(2**63), "per_channel": i % 3 == 2}
            for i in range(n)]


def summary(results: list[dict], seconds: float) -> str:
    counts = Counter(r["kind"] for r in results)
    lines = [f"{len(results)} cases in {seconds:.0f} s: {counts['ok']} exit 0, {counts['clean']} clean one-line errors, "
             f"{counts['failure']} tracebacks/internal errors/messy output, {counts['crash']} crashes by signal, "
             f"{counts['timeout']} timeouts"]
    per_model = Counter(r["model"] for r in results)
    bad = Counter(r["model"] for r in results if r["kind"] in ("failure", "crash", "timeout"))
    lines.append("per model: " + ", ".join(f"{m} {per_model[m]} ({bad[m]} bad)" for m in sorted(per_model)))
    failing = [r for r in results if r["kind"] in ("failure", "crash", "timeout")]
    if failing:
        lines.append("failing cases (replay with --only ID):")
        lines += [f"  #{r['id']} {r['model']} [{r['kind']}] {'; '.join(r['recipe'] or [])}\n      {r['first_line']}"
                  for r in failing]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", help="seed model file names or globs (default: all)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per case")
    parser.add_argument("--only", type=int, nargs="+", help="run just these case numbers, printing their stderr")
    parser.add_argument("--keep", type=Path, help="write the mutant of every failing case into this folder")
    parser.add_argument("--json", type=Path, help="write every result into this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker()
        return 0
    models = seed_models(args.models)
    if not models:
        print("no seed models found (../shared/models/*.onnx, fixtures/*.onnx)", file=sys.stderr)
        return 2
    cases = make_cases(max(args.cases, max(args.only or [0]) + 1), args.seed, models)
    if args.only:
        cases = [dict(cases[i], verbose=True) for i in args.only]
    started = time.monotonic()
    results = drive(cases, min(args.workers, len(cases)), args.timeout, progress=not args.only)
    print(summary(results, time.monotonic() - started))
    if args.only:
        for r in results:
            print(f"--- #{r['id']} stderr:\n{r.get('stderr', '')}")
    failing = [r for r in results if r["kind"] in ("failure", "crash", "timeout")]
    if args.keep and failing:
        args.keep.mkdir(parents=True, exist_ok=True)
        by_id = {c["id"]: c for c in cases}
        for r in failing:
            (args.keep / f"case{r['id']}_{r['model']}").write_bytes(build_case(by_id[r["id"]], {})[0])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())

"""Silero VAD, both If branches (16 kHz and 8 kHz) retrained in one run: speech-decision
agreement with the float model per branch, one-shot against full INQ, on held-out audio.

Training: ``--train`` chunks per branch, spread over the first 1500 of speech.npz (8 kHz: the
audio decimated by 2; see tests/train/speech.py), each with the state the float model carries
into it (``--states zero``: a zero state). Held out: chunks
1500..1875 of each rate, run in order with the state carried over (as Silero's wrapper does);
the agreement is the share of those chunks where the model and the float model take the same
speech decision (probability > 0.5): "in order", each model carrying its own state from a zero
one at chunk 1500, as in use; "per call", every chunk from the state the float model has there
(what the training loss sees: it distils ``output`` only, not ``stateN``).

    nice -n 5 .venv/bin/python bench/silero_branches.py --bits 4 --train 300
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is run as a script

from tests.train import speech  # noqa: E402
from tests.conftest import SHARED_MODELS  # noqa: E402

HELD_OUT = slice(1500, None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--train", type=int, default=300, help="training chunks per branch")
    parser.add_argument("--per-channel", action="store_true")
    parser.add_argument("--states", choices=["zero", "float"], default="float",
                        help="the state fed with each training chunk: zeros, or the float model's at that point")
    parser.add_argument("--extra", default="--batch-size 16", help="more quantize options, one string")
    parser.add_argument("--work", help="folder for the data and models [default: a temporary one]")
    args = parser.parse_args()
    model = SHARED_MODELS / "silero_vad.onnx"
    if not model.exists() or not speech.SPEECH.exists():
        print("this benchmark needs the project's ../shared folder", file=sys.stderr)
        return 1
    work = Path(args.work or tempfile.mkdtemp(prefix="silero-branches-"))
    work.mkdir(parents=True, exist_ok=True)
    train = np.linspace(0, 1499, args.train).round().astype(int)
    data = {rate: speech.save_samples(work / f"train{rate}.npz", rate, train, args.states) for rate in speech.RATES}
    val = {rate: speech.save_samples(work / f"val{rate}.npz", rate, np.arange(1500, 1876), args.states)
           for rate in speech.RATES}
    base = [sys.executable, "-m", "inq_onnx_cli.main", "quantize", str(model), "--bits", str(args.bits),
            *(["--per-channel"] if args.per_channel else [])]
    run(base + ["-o", str(work / "oneshot.onnx")])
    inq = base + ["--pin", "sr=16000,8000", "--data", str(data[16000]), "--data", str(data[8000]),
                  "--val", str(val[16000]), "--val", str(val[8000]), *shlex.split(args.extra), "-o", str(work / "inq.onnx")]
    seconds = run(inq)
    print(f"\n{args.bits} bits{' per channel' if args.per_channel else ''}, {args.train} training chunks per branch "
          f"({args.states} states), "
          f"full INQ in {seconds:.0f} s; held-out chunks {HELD_OUT.start}..1875 in order")
    print("| branch | float: speech share | one-shot: in order | full INQ: in order | one-shot: per call | full INQ: per call |")
    print("|---|---|---|---|---|---|")
    for rate in speech.RATES:
        row = [f"sr={rate}"]
        for carried in (True, False):
            ref = speech.probabilities(model, rate, HELD_OUT, carried)
            if carried:
                row.append(f"{np.mean(ref > speech.THRESHOLD):.3f}")
            row += [f"{speech.decision_agreement(ref, speech.probabilities(work / f, rate, HELD_OUT, carried)):.3f}"
                    for f in ("oneshot.onnx", "inq.onnx")]
        print("| " + " | ".join(row) + " |")
    return 0


def run(cmd: list[str]) -> float:
    print("$", shlex.join(cmd), file=sys.stderr)
    started = time.monotonic()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL)
    if done.returncode:
        raise SystemExit(f"failed (exit {done.returncode})")
    return time.monotonic() - started


if __name__ == "__main__":
    sys.exit(main())

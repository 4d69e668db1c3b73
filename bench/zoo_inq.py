"""Full INQ over the model zoo of ../shared/models with default options: the recovery table.

For each model and bit-width: the float model's score, one-shot rounding (`inq-onnx quantize
MODEL --bits B`, and with the training data as `--val`, which lets `--range auto` judge each n1
rule by the outputs and corrects biases), full INQ with default options (`--data TRAIN` only, plus `--pin` where the
model needs one), and optionally the same with other flags (`--variant NAME=FLAGS`, e.g. the
old defaults `--variant lr0.01="--lr 0.01"`), with the wall time of each command. Every
command is the CLI as a user runs it, in a child process; scores are computed here, outside the
tool, on held-out data the tool never sees (no `--val`: the tool holds out its own slice of
the training data for its choices).

    .venv/bin/python bench/zoo_inq.py --models lenet5_mnist --bits 2 3 4 5
    .venv/bin/python bench/zoo_inq.py --models vit_mnist vit_mnist_unlabeled --bits 3 4
    .venv/bin/python bench/zoo_inq.py --models lenet5_mnist --bits 2 --variant lr0.01="--lr 0.01"

Training and held-out data (../shared/data): MNIST models train on x_train (4000 labelled;
resnet8 on a seeded random 1000 of them) and are scored on all 1000 test images; mlp_digits
trains on the digits' 1438 and is scored on 359; the text-direction classifier trains on text
lines 0-319 without labels and is scored on lines 320-399 (their `rotated` labels); the two
photo models train on photos 0-47 without labels and are scored on 48-63 (output SQNR against
the float model; the detector also IoU of its map thresholded at 0.3); Silero VAD trains on
speech chunks 0-1499 (64 samples of context, zero state, no labels) and is scored on chunks
1500-1875 fed one after the other with the state carried over, as the model is used
(speech-decision agreement with the float model).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # bench/ is run as a script

from inq_onnx.runtime import session  # noqa: E402
from tests import zoo  # noqa: E402

SPEECH_TRAIN = 1500
PHOTOS_TRAIN = 48
LINES_TRAIN = 320


@dataclass(frozen=True)
class Case:
    """A zoo model as full INQ sees it: its file, training data, pins, and held-out scoring."""

    file: str
    train: Callable[[], dict[str, np.ndarray]]
    evaluate: Callable[[object], dict]  # an ORT session -> raw outputs to compare
    score: Callable[[dict, dict], dict]  # (float outputs, quantized outputs) -> figures
    pins: tuple[str, ...] = ()
    data_note: str = ""
    show: tuple[str, ...] = ("accuracy",)  # the figures a table cell shows


# --- data ------------------------------------------------------------------------------------

def mnist_train(count: int | None = None, labels: bool = True) -> Callable[[], dict]:
    def make():
        d = zoo.npz(zoo.DATA / "mnist_5k.npz")
        index = np.arange(len(d["x_train"]))
        if count is not None:
            index = np.sort(np.random.default_rng(0).permutation(index)[:count])
        out = {"input": d["x_train"][index].astype(np.float32) / 255.0}
        return {**out, "labels": d["y_train"][index]} if labels else out
    return make


def digits_train() -> dict:
    d = zoo.npz(zoo.DATA / "digits.npz")
    return {"input": d["x_train"].reshape(-1, 64).astype(np.float32) / 16.0, "labels": d["y_train"]}


def lines_train() -> dict:
    return {"x": zoo.npz(zoo.UNLABELED / "textlines.npz")["x"][:LINES_TRAIN]}


def photos_train(file: str, key: str, name: str) -> Callable[[], dict]:
    return lambda: {name: zoo.npz(zoo.UNLABELED / file)[key][:PHOTOS_TRAIN]}


def speech_with_context(chunks: np.ndarray) -> np.ndarray:
    """Each chunk preceded by the last 64 samples of the one before it (zeros for the first)."""
    context = np.concatenate([np.zeros((1, 64), np.float32), chunks[:-1, -64:]])
    return np.concatenate([context, chunks], axis=1).astype(np.float32)


def speech_train() -> dict:
    chunks = zoo.npz(zoo.UNLABELED / "speech.npz")["chunks"][:SPEECH_TRAIN]
    return {"input": speech_with_context(chunks), "state": np.zeros((len(chunks), 2, 128), np.float32)}


# --- held-out outputs and scores -------------------------------------------------------------

def classify(x_of: Callable[[], tuple[np.ndarray, np.ndarray]], name: str, output: int = 0):
    def run(sess):
        x, y = x_of()
        out = np.concatenate([sess.run(None, {name: x[i:i + 250]})[output] for i in range(0, len(x), 250)])
        return {"out": out, "labels": y}
    return run


def mnist_test():
    d = zoo.npz(zoo.DATA / "mnist_5k.npz")
    return d["x_test"].astype(np.float32) / 255.0, d["y_test"]


def digits_test():
    d = zoo.npz(zoo.DATA / "digits.npz")
    return d["x_test"].reshape(-1, 64).astype(np.float32) / 16.0, d["y_test"]


def lines_test():
    t = zoo.npz(zoo.UNLABELED / "textlines.npz")
    return t["x"][LINES_TRAIN:], t["rotated"][LINES_TRAIN:]


def photos_test(file: str, key: str, name: str):
    def run(sess):
        x = zoo.npz(zoo.UNLABELED / file)[key][PHOTOS_TRAIN:]
        return {"out": np.concatenate([sess.run(None, {name: x[i:i + 4]})[0] for i in range(0, len(x), 4)])}
    return run


def speech_test(with_sr: bool):
    def run(sess):
        s = zoo.npz(zoo.UNLABELED / "speech.npz")
        state, context = np.zeros((2, 1, 128), np.float32), np.zeros((1, 64), np.float32)
        extra = {"sr": np.array(16000, np.int64)} if with_sr else {}
        probs = []
        for chunk in s["chunks"][SPEECH_TRAIN:]:
            x = np.concatenate([context, chunk[None]], axis=1)
            out, state = sess.run(None, {"input": x, "state": state, **extra})
            probs.append(out[0, 0])
            context = x[:, -64:]
        return {"out": np.array(probs, np.float32), "labels": s["speech_mask"][SPEECH_TRAIN:]}
    return run


def score_accuracy(ref: dict, q: dict) -> dict:
    top_ref, top_q = ref["out"].argmax(-1), q["out"].argmax(-1)
    return {"accuracy": float(np.mean(top_q == ref["labels"])), "float": float(np.mean(top_ref == ref["labels"])),
            "agreement": float(np.mean(top_ref == top_q)), "sqnr_db": zoo.sqnr_db(ref["out"], q["out"])}


def score_sqnr(ref: dict, q: dict) -> dict:
    return {"sqnr_db": zoo.sqnr_db(ref["out"], q["out"])}


def score_text_map(ref: dict, q: dict) -> dict:
    a, b = ref["out"] > zoo.DETECTION_THRESHOLD, q["out"] > zoo.DETECTION_THRESHOLD
    union = np.sum(a | b)
    return {"sqnr_db": zoo.sqnr_db(ref["out"], q["out"]), "iou": float(np.sum(a & b) / union) if union else 1.0}


def score_vad(ref: dict, q: dict) -> dict:
    a, b = ref["out"] > zoo.SPEECH_THRESHOLD, q["out"] > zoo.SPEECH_THRESHOLD
    return {"agreement": float(np.mean(a == b)), "accuracy": float(np.mean(b == ref["labels"])),
            "float": float(np.mean(a == ref["labels"])), "sqnr_db": zoo.sqnr_db(ref["out"], q["out"])}


CASES: dict[str, Case] = {
    "lenet5_mnist": Case("lenet5_mnist.onnx", mnist_train(), classify(mnist_test, "input"), score_accuracy,
                         data_note="4000 labelled"),
    "resnet8_mnist": Case("resnet8_mnist.onnx", mnist_train(1000), classify(mnist_test, "input"), score_accuracy,
                          data_note="1000 labelled (seeded random)"),
    "vit_mnist": Case("vit_mnist.onnx", mnist_train(), classify(mnist_test, "input"), score_accuracy,
                      data_note="4000 labelled"),
    "vit_mnist_unlabeled": Case("vit_mnist.onnx", mnist_train(labels=False), classify(mnist_test, "input"),
                                score_accuracy, data_note="4000 unlabeled (distillation)"),
    "mlp_digits": Case("mlp_digits.onnx", digits_train, classify(digits_test, "input", output=1), score_accuracy,
                       data_note="1438 labelled"),
    "cls": Case("ch_ppocr_mobile_v2.0_cls_infer.onnx", lines_train, classify(lines_test, "x"), score_accuracy,
                data_note="320 unlabeled text lines"),
    "det": Case("ch_PP-OCRv4_det_infer.onnx", photos_train("photos_det.npz", "x_det", "x"),
                photos_test("photos_det.npz", "x_det", "x"), score_text_map, data_note="48 unlabeled photos",
                show=("sqnr_db", "iou")),
    "320n": Case("320n.onnx", photos_train("photos.npz", "x320", "images"), photos_test("photos.npz", "x320", "images"),
                 score_sqnr, data_note="48 unlabeled photos", show=("sqnr_db",)),
    "silero_vad_half": Case("silero_vad_half.onnx", speech_train, speech_test(False), score_vad,
                            data_note="1500 unlabeled speech chunks", show=("agreement", "sqnr_db")),
    "silero_vad": Case("silero_vad.onnx", speech_train, speech_test(True), score_vad, pins=("sr=16000",),
                       data_note="1500 unlabeled speech chunks, --pin sr=16000", show=("agreement", "sqnr_db")),
}


# --- runs ------------------------------------------------------------------------------------

def run_cli(args: list[str], log: Path) -> float:
    """Run `inq-onnx ARGS`; the wall time in seconds. Output goes to ``log``."""
    started = time.monotonic()
    with open(log, "a") as f:
        f.write("$ inq-onnx " + shlex.join(args) + "\n")
        f.flush()
        done = subprocess.run([sys.executable, "-m", "inq_onnx_cli.main", *args], stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"inq-onnx {shlex.join(args)} failed with exit {done.returncode}; see {log}")
    return time.monotonic() - started


def outputs_of(case: Case, path: Path) -> dict:
    return case.evaluate(session(str(path)))


def measure(name: str, bits: int, variants: dict[str, list[str]], work: Path, log: Path) -> dict:
    case = CASES[name]
    model = zoo.MODELS / case.file
    train = work / f"{name}.train.npz"
    if not train.exists():
        np.savez(train, **case.train())
    pins = [a for p in case.pins for a in ("--pin", p)]
    ref = outputs_of(case, model)
    row = {"model": name, "bits": bits, "data": case.data_note}
    one_shot = work / f"{name}.b{bits}.oneshot.onnx"
    seconds = run_cli(["quantize", str(model), "--bits", str(bits), "-o", str(one_shot), *pins, "-q"], log)
    row["one-shot"] = {**case.score(ref, outputs_of(case, one_shot)), "seconds": round(seconds, 1)}
    seconds = run_cli(["quantize", str(model), "--bits", str(bits), "--val", str(train), "-o", str(one_shot), *pins,
                       "-q"], log)
    row["one-shot --val"] = {**case.score(ref, outputs_of(case, one_shot)), "seconds": round(seconds, 1)}
    for label, flags in {"default": [], **variants}.items():
        out = work / f"{name}.b{bits}.{label}.onnx"
        args = ["quantize", str(model), "--bits", str(bits), "--data", str(train), "-o", str(out), *pins, *flags, "-q"]
        try:
            seconds = run_cli(args, log)
            row[label] = {**case.score(ref, outputs_of(case, out)), "seconds": round(seconds, 1)}
        except RuntimeError as error:
            row[label] = {"error": str(error)}
    return row


FORMATS = {"accuracy": "acc {:.3f}", "agreement": "agr {:.3f}", "iou": "IoU {:.3f}", "sqnr_db": "{:.1f} dB"}


def cell(figures: dict, show: tuple[str, ...]) -> str:
    if "error" in figures:
        return "failed"
    return " / ".join(FORMATS[k].format(figures[k]) for k in show) + f" ({figures['seconds']:.0f} s)"


def table(rows: list[dict], variants: list[str]) -> str:
    columns = ["one-shot", "one-shot --val", "default", *variants]
    lines = ["| model | data | bits | float | " + " | ".join(columns) + " |",
             "|---|---|---|---|" + "---|" * len(columns)]
    for r in rows:
        reference = r["one-shot"].get("float")
        lines.append(f"| {r['model']} | {r['data']} | {r['bits']} | "
                     f"{'-' if reference is None else format(reference, '.3f')} | "
                     + " | ".join(cell(r[c], CASES[r["model"]].show) if c in r else "-" for c in columns) + " |")
    return "\n".join(lines)


def parse_variant(text: str) -> tuple[str, list[str]]:
    label, sep, flags = text.partition("=")
    if not sep or not label:
        raise argparse.ArgumentTypeError(f"--variant '{text}' is not NAME=FLAGS")
    return label, shlex.split(flags)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--bits", type=int, nargs="+", default=[4])
    parser.add_argument("--variant", type=parse_variant, action="append", default=[],
                        help="NAME=FLAGS: also run full INQ with these flags, e.g. lr0.01='--lr 0.01'")
    parser.add_argument("--work", type=Path, help="folder for data, outputs and the log [default: a temporary one]")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    if not zoo.MODELS.is_dir():
        print(f"{zoo.MODELS} is absent: this benchmark needs the project's ../shared folder", file=sys.stderr)
        return 1
    work = args.work or Path(tempfile.mkdtemp(prefix="inq-zoo-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    variants = dict(args.variant)
    rows = []
    for name in args.models:
        for bits in args.bits:
            rows.append(measure(name, bits, variants, work, log))
            print(f"  {name} {bits} b: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1))
    print(f"commands and their output: {log}")
    print(table(rows, list(variants)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The model zoo of ../shared: each model's real inputs, and how a quantized copy is scored
against its float original. Shared by tests/test_zoo.py and bench/zoo_fidelity.py.

Inputs follow ../shared/data/README.md and ../shared/data/unlabeled/README.md exactly:
MNIST x/255 for the two CNNs, digits reshaped to 64 and /16 for the MLP, the text lines for the
PaddleOCR classifier, 16 letterboxed photos for YOLOv8n (320n) and the PP-OCR detector, and the
first speech chunks for Silero VAD, fed one at a time with 64 samples of context and the state
carried over, as Silero's own wrapper does.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

import inq_onnx
from inq_onnx.report import format_table
from inq_onnx.runtime import session

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MODELS = SHARED / "models"
DATA = SHARED / "data"
UNLABELED = DATA / "unlabeled"

PHOTOS = 16  # of 64: enough for a stable SQNR, a few seconds per run on 2 cores
SPEECH_CHUNKS = 400  # 12.8 s of audio: silence, then four or five sentences
TEXT_LINES = 400
BITS = (2, 3, 4, 5)
DETECTION_THRESHOLD = 0.3  # PP-OCR det: a pixel is text above this
SPEECH_THRESHOLD = 0.5


@dataclass(frozen=True)
class Outputs:
    """What a model produced on its real inputs: the compared output, and labels if any."""

    main: np.ndarray
    labels: np.ndarray | None = None


@dataclass(frozen=True)
class Score:
    """Fidelity of a quantized model against the float one on the same real inputs."""

    samples: int
    sqnr_db: float
    agreement: float | None = None  # top-1 (classifiers), same decision (VAD), mask IoU (det)
    agreement_kind: str = "top-1"
    accuracy: tuple[float, float] | None = None  # (float, quantized) against the labels
    extra: tuple[tuple[str, float], ...] = field(default=())


# --- inputs ----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as archive:
        return {k: archive[k] for k in archive.files}


def mnist() -> tuple[np.ndarray, np.ndarray]:
    d = npz(DATA / "mnist_5k.npz")
    return d["x_test"].astype(np.float32) / 255.0, d["y_test"]


def digits() -> tuple[np.ndarray, np.ndarray]:
    d = npz(DATA / "digits.npz")
    return d["x_test"].reshape(-1, 64).astype(np.float32) / 16.0, d["y_test"]


def run_batched(sess, feeds_of: Callable[[slice], dict], n: int, output: int, batch: int) -> np.ndarray:
    return np.concatenate([sess.run(None, feeds_of(slice(i, min(i + batch, n))))[output] for i in range(0, n, batch)])


def run_classifier(data, output=0, batch=250):
    def run(sess):
        x, y = data()
        return Outputs(run_batched(sess, lambda s: {sess.get_inputs()[0].name: x[s]}, len(x), output, batch), y)
    return run


def run_textlines(sess) -> Outputs:
    t = npz(UNLABELED / "textlines.npz")
    x, y = t["x"][:TEXT_LINES], t["rotated"][:TEXT_LINES]
    return Outputs(run_batched(sess, lambda s: {"x": x[s]}, len(x), 0, 100), y)


def run_photos(key: str, file: str, input_name: str):
    def run(sess):
        x = npz(UNLABELED / file)[key][:PHOTOS]
        return Outputs(run_batched(sess, lambda s: {input_name: x[s]}, len(x), 0, 4))
    return run


def run_speech(with_sr: bool):
    def run(sess):
        s = npz(UNLABELED / "speech.npz")
        state = np.zeros((2, 1, 128), np.float32)
        context = np.zeros((1, 64), np.float32)
        extra = {"sr": np.array(16000, np.int64)} if with_sr else {}
        probs = []
        for chunk in s["chunks"][:SPEECH_CHUNKS]:
            x = np.concatenate([context, chunk[None]], axis=1)
            out, state = sess.run(None, {"input": x, "state": state, **extra})
            probs.append(out[0, 0])
            context = x[:, -64:]
        return Outputs(np.array(probs, np.float32), s["speech_mask"][:SPEECH_CHUNKS])
    return run


# --- scores ----------------------------------------------------------------------------------

def sqnr_db(ref: np.ndarray, q: np.ndarray) -> float:
    ref, q = ref.astype(np.float64), q.astype(np.float64)
    noise = float(np.sum((ref - q) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(ref**2)) / noise)


def score_classifier(ref: Outputs, q: Outputs) -> Score:
    top_ref, top_q = ref.main.argmax(-1), q.main.argmax(-1)
    accuracy = None if ref.labels is None else (float(np.mean(top_ref == ref.labels)), float(np.mean(top_q == ref.labels)))
    return Score(len(ref.main), sqnr_db(ref.main, q.main), float(np.mean(top_ref == top_q)), "top-1", accuracy)


def score_yolo(ref: Outputs, q: Outputs) -> Score:
    """output0 [N, 4 + classes, anchors]: rows 0..3 are the boxes the DFL decodes."""
    boxes = sqnr_db(ref.main[:, :4], q.main[:, :4])
    classes = sqnr_db(ref.main[:, 4:], q.main[:, 4:])
    return Score(len(ref.main), sqnr_db(ref.main, q.main), extra=(("box SQNR", boxes), ("class SQNR", classes)))


def score_text_map(ref: Outputs, q: Outputs) -> Score:
    a, b = ref.main > DETECTION_THRESHOLD, q.main > DETECTION_THRESHOLD
    union = np.sum(a | b)
    iou = float(np.sum(a & b) / union) if union else 1.0
    return Score(len(ref.main), sqnr_db(ref.main, q.main), iou, f"mask IoU >{DETECTION_THRESHOLD}")


def score_vad(ref: Outputs, q: Outputs) -> Score:
    a, b = ref.main > SPEECH_THRESHOLD, q.main > SPEECH_THRESHOLD
    accuracy = (float(np.mean(a == ref.labels)), float(np.mean(b == ref.labels)))
    return Score(len(ref.main), sqnr_db(ref.main, q.main), float(np.mean(a == b)), "speech decision", accuracy)


@dataclass(frozen=True)
class ZooModel:
    file: str
    run: Callable | None  # session -> Outputs; None: nothing to run (no float weights)
    score: Callable | None
    inputs: str  # what the model is fed, for the table


ZOO: dict[str, ZooModel] = {m.file: m for m in (
    ZooModel("lenet5_mnist.onnx", run_classifier(mnist), score_classifier, "mnist_5k test x/255 (1000)"),
    ZooModel("resnet8_mnist.onnx", run_classifier(mnist), score_classifier, "mnist_5k test x/255 (1000)"),
    ZooModel("vit_mnist.onnx", run_classifier(mnist), score_classifier, "mnist_5k test x/255 (1000)"),
    ZooModel("mlp_digits.onnx", run_classifier(digits, output=1), score_classifier, "digits test /16 (359)"),
    ZooModel("ch_ppocr_mobile_v2.0_cls_infer.onnx", run_textlines, score_classifier, f"textlines x ({TEXT_LINES})"),
    ZooModel("320n.onnx", run_photos("x320", "photos.npz", "images"), score_yolo, f"photos x320 ({PHOTOS})"),
    ZooModel("ch_PP-OCRv4_det_infer.onnx", run_photos("x_det", "photos_det.npz", "x"), score_text_map,
             f"photos_det x_det ({PHOTOS})"),
    ZooModel("silero_vad.onnx", run_speech(True), score_vad, f"speech chunks, sr 16000 ({SPEECH_CHUNKS})"),
    ZooModel("silero_vad_half.onnx", run_speech(False), score_vad, f"speech chunks ({SPEECH_CHUNKS})"),
    ZooModel("common_old.onnx", None, None, "none: already integer"),
)}


def evaluate(file: str, model: onnx.ModelProto) -> Outputs | None:
    entry = ZOO[file]
    return None if entry.run is None else entry.run(session(model))


@functools.lru_cache(maxsize=None)
def float_model(file: str) -> onnx.ModelProto:
    return onnx.load(str(MODELS / file))


@functools.lru_cache(maxsize=None)
def float_outputs(file: str) -> Outputs | None:
    return evaluate(file, float_model(file))


def score(file: str, quantized: onnx.ModelProto) -> Score | None:
    ref = float_outputs(file)
    if ref is None:
        return None
    return ZOO[file].score(ref, evaluate(file, quantized))


# --- the table -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    model: str
    bits: int
    per_channel: bool
    quantized: int
    weights: int  # tensors on weight inputs, quantized or not
    score: Score | None
    note: str = ""


def fixed_skips(result) -> dict[str, str]:
    """Tensors skipped because they look hand-made (``inq_onnx.fixed_tensors``), with the reason."""
    return {t.name: t.skip_reason for t in result.skipped if "not a learned weight" in (t.skip_reason or "")}


def fixed_note(fixed: dict[str, str]) -> str:
    """'skipped as fixed: 2 x DFT/STFT basis' from {name: reason}."""
    if not fixed:
        return ""
    kinds: dict[str, int] = {}
    for reason in fixed.values():
        kind = reason.split(" (")[0].removeprefix("looks like ").removeprefix("a ").removeprefix("fixed ")
        kinds[kind] = kinds.get(kind, 0) + 1
    return "skipped as fixed: " + ", ".join(f"{n} x {kind}" for kind, n in sorted(kinds.items()))


def measure(file: str, bits: int, per_channel: bool, *, detector: bool = True, only_fixed: bool = False,
            label: str = "", range: str = "auto") -> Row:
    """Quantize one zoo model and score it. ``detector=False`` forces the tensors the fixed-tensor
    detector skips into quantization (``include``), to show what skipping them is worth;
    ``only_fixed`` quantizes those alone (every learned weight excluded). ``range``: the n1 rule."""
    model = float_model(file)
    result = inq_onnx.quantize(model, bits=bits, per_channel=per_channel, range=range)
    fixed = fixed_skips(result)
    note, weights = fixed_note(fixed), len(result.quantized) + len(fixed)
    if (not detector or only_fixed) and fixed:
        learned = [t.name for t in result.quantized] if only_fixed else []
        result = inq_onnx.quantize(model, bits=bits, per_channel=per_channel, include=sorted(fixed), exclude=learned,
                                   range=range)
        note = "only the fixed tensors quantized" if only_fixed else "fixed tensors quantized too (--include)"
    if not result.quantized and not fixed:
        already = sum(1 for t in result.skipped if (t.skip_reason or "").startswith("already quantized"))
        note = f"nothing quantized ({already} tensors reported 'already quantized')"
    return Row(file, bits, per_channel, len(result.quantized), weights, score(file, result.model), label or note)


RESULTS: list[Row] = []
"""Rows recorded by the slow zoo test, printed in pytest's terminal summary (see conftest)."""


def cell(value: float | None, fmt: str) -> str:
    if value is None:
        return "-"
    return "inf" if value == float("inf") else format(value, fmt)


def format_rows(rows: list[Row]) -> str:
    header = ["model", "bits", "codebook", "quantized", "agreement", "accuracy float -> quant", "SQNR dB", "other"]
    lines = []
    for r in sorted(rows, key=lambda r: (r.model, r.per_channel, r.bits)):
        s = r.score
        agreement = "-" if s is None or s.agreement is None else f"{s.agreement:.3f} {s.agreement_kind}"
        accuracy = "-" if s is None or s.accuracy is None else f"{s.accuracy[0]:.3f} -> {s.accuracy[1]:.3f}"
        other = [] if s is None else [f"{k} {cell(v, '.1f')}" for k, v in s.extra]
        lines.append([r.model.removesuffix(".onnx"), str(r.bits), "channel" if r.per_channel else "tensor",
                      f"{r.quantized}/{r.weights}", agreement, accuracy, "-" if s is None else cell(s.sqnr_db, ".1f"),
                      ", ".join(other + ([r.note] if r.note else []))])
    return format_table(lines, header)

"""Which ops ONNX Runtime 1.19.2 (CPU) can train through, each measured alone after a Conv.

For every op in the list: ``x -> Conv(W) -> OP -> y`` with static shapes, MSE loss on ``y``,
``W`` trainable; ``build_artifacts`` (generate_artifacts in a child), then one training step
through ``TrainingSession``. "trains" means the step ran and W's gradient is finite and not all
zero. Then the same graph after ``prepare_for_training``, when that changed it: whether it trains
through the rewrite and whether the rewrite keeps the forward outputs (max abs diff).

    nice -n 5 .venv/bin/python bench/gradient_blockers.py            # all ops, ~2-4 min on 2 cores
    nice -n 5 .venv/bin/python bench/gradient_blockers.py PRelu Mish  # some
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is run as a script

from inq_onnx.errors import TrainingError  # noqa: E402
from inq_onnx.train.artifacts import build_artifacts  # noqa: E402
from inq_onnx.train.losses import LossSpec  # noqa: E402
from inq_onnx.train.rewrites import prepare_for_training  # noqa: E402
from inq_onnx.train.session import TrainingSession  # noqa: E402

X_SHAPE = (2, 3, 6, 6)


def _f(*shape, seed=5, low=-1.0, high=1.0):
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


def _i(values):
    return np.asarray(values, np.int64)


# op -> (attributes, extra inputs as (name, array) or "" for an absent optional input, opset)
SPECS: dict[str, tuple[dict, list, int]] = {
    # activations and element-wise
    "Relu": ({}, [], 17), "LeakyRelu": ({"alpha": 0.1}, [], 17), "Sigmoid": ({}, [], 17), "Tanh": ({}, [], 17),
    "PRelu": ({}, [("slope", _f(4, 1, 1, low=0.05, high=0.3))], 17),
    "Elu": ({"alpha": 0.7}, [], 17), "Selu": ({}, [], 17), "Celu": ({"alpha": 0.8}, [], 17),
    "Softplus": ({}, [], 17), "Softsign": ({}, [], 17), "Mish": ({}, [], 18),
    "ThresholdedRelu": ({"alpha": 0.2}, [], 17), "HardSigmoid": ({}, [], 17), "HardSwish": ({}, [], 17),
    "Gelu": ({}, [], 20), "Erf": ({}, [], 17), "Exp": ({}, [], 17), "Abs": ({}, [], 17), "Neg": ({}, [], 17),
    "Sqrt": ({}, [], 17), "Log": ({}, [], 17), "Reciprocal": ({}, [], 17), "Sin": ({}, [], 17), "Cos": ({}, [], 17),
    "Atan": ({}, [], 17), "Sign": ({}, [], 17), "Round": ({}, [], 17), "Floor": ({}, [], 17), "Ceil": ({}, [], 17),
    "Mod": ({"fmod": 1}, [("d", np.array(0.7, np.float32))], 17),
    "Pow": ({}, [("p", np.array(2.0, np.float32))], 17),
    "Clip": ({}, [("lo", np.array(-0.5, np.float32)), ("hi", np.array(0.5, np.float32))], 17),
    "Where": ({}, [], 17),  # built specially below
    "Shrink": ({"lambd": 0.2}, [], 17),
    # softmax family
    "Softmax": ({"axis": 1}, [], 17), "LogSoftmax": ({"axis": 1}, [], 17), "Hardmax": ({"axis": 1}, [], 17),
    # pooling and reductions
    "GlobalAveragePool": ({}, [], 17), "GlobalMaxPool": ({}, [], 17), "GlobalLpPool": ({}, [], 17),
    "MaxPool": ({"kernel_shape": [2, 2]}, [], 17), "AveragePool": ({"kernel_shape": [2, 2]}, [], 17),
    "LpPool": ({"kernel_shape": [2, 2]}, [], 17),
    "ReduceMax": ({"axes": [2, 3]}, [], 17), "ReduceMin": ({"axes": [2, 3]}, [], 17),
    "ReduceMean": ({"axes": [2, 3]}, [], 17), "ReduceSum": ({}, [("axes", _i([2, 3]))], 17),
    "ReduceProd": ({"axes": [3]}, [], 17), "ReduceL1": ({"axes": [3]}, [], 17), "ReduceL2": ({"axes": [3]}, [], 17),
    "ReduceLogSumExp": ({"axes": [3]}, [], 17), "ReduceSumSquare": ({"axes": [3]}, [], 17),
    "ReduceLogSum": ({"axes": [3]}, [], 17),
    # normalization
    "InstanceNormalization": ({}, [("s", _f(4, low=0.5, high=1.5)), ("b", _f(4, seed=6))], 17),
    "LayerNormalization": ({"axis": -1}, [("s", _f(6, low=0.5, high=1.5)), ("b", _f(6, seed=6))], 17),
    "GroupNormalization": ({"num_groups": 2}, [("s", _f(2, low=0.5, high=1.5)), ("b", _f(2, seed=6))], 18),
    "LpNormalization": ({"axis": 1}, [], 17), "LRN": ({"size": 3}, [], 17),
    "MeanVarianceNormalization": ({}, [], 17),
    "BatchNormalization": ({}, [("s", _f(4, low=0.5, high=1.5)), ("b", _f(4, seed=6)), ("m", _f(4, seed=7)),
                                ("v", _f(4, seed=8, low=0.5, high=1.5))], 17),
    # shape and data movement
    "DepthToSpace": ({"blocksize": 2}, [], 17), "SpaceToDepth": ({"blocksize": 2}, [], 17),
    "Pad": ({}, [("pads", _i([0, 0, 1, 1, 0, 0, 1, 1]))], 17), "Tile": ({}, [("reps", _i([1, 1, 2, 1]))], 17),
    "Expand": ({}, [("shape", _i([2, 2, 4, 6, 6]))], 17),
    "Gather": ({"axis": 1}, [("idx", _i([0, 2]))], 17),
    "GatherElements": ({"axis": 1}, [("idx", np.zeros((2, 4, 6, 6), np.int64))], 17),
    "GatherND": ({}, [("idx", _i([[0], [1]]))], 17),
    "Slice": ({}, [("st", _i([1])), ("en", _i([3])), ("ax", _i([1]))], 17),
    "Transpose": ({"perm": [0, 2, 3, 1]}, [], 17), "Flatten": ({}, [], 17),
    "Split": ({"axis": 1}, [("split", _i([2, 2]))], 17),
    "CumSum": ({}, [("axis", np.array(1, np.int64))], 17),
    "Einsum": ({"equation": "nchw,kc->nkhw"}, [("e", _f(3, 4, seed=9))], 17),
    "Trilu": ({}, [], 17),
    "ScatterND": ({}, [("idx", _i([[0]])), ("upd", _f(1, 4, 6, 6, seed=10))], 17),
    "Resize": ({"mode": "nearest"}, ["", ("scales", np.array([1, 1, 2, 2], np.float32))], 17),
    "Upsample": ({"mode": "nearest"}, [("scales", np.array([1, 1, 2, 2], np.float32))], 9),
    "ConvTranspose": ({"kernel_shape": [2, 2], "strides": [2, 2]}, [("T", _f(4, 2, 2, 2, seed=11))], 17),
    "Dropout": ({}, [], 17), "TopK": ({}, [("k", _i([2]))], 17),
}

POSITIVE = {"Sqrt", "Log", "ReduceLogSum"}


def _model(op: str) -> onnx.ModelProto:
    attrs, extra, opset = SPECS[op]
    inits = [numpy_helper.from_array(_f(4, 3, 3, 3, seed=1), "W")]
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1])]
    if op in POSITIVE:  # c * c + 1 > 0 first
        inits.append(numpy_helper.from_array(np.array(1.0, np.float32), "one"))
        nodes += [helper.make_node("Mul", ["c", "c"], ["c2"]), helper.make_node("Add", ["c2", "one"], ["c"])]
        nodes[0].output[0] = "c0"
        nodes[1].input[:] = ["c0", "c0"]
    if op == "Where":
        nodes += [helper.make_node("Greater", ["c", "zero"], ["m"]), helper.make_node("Where", ["m", "c", "zero"], ["y"])]
        inits.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
    else:
        names = []
        for item in extra:
            if item == "":
                names.append("")
                continue
            name, value = item
            names.append(name)
            inits.append(numpy_helper.from_array(value, name))
        if op == "Resize":
            names = ["", *names[1:]]
            inits.append(numpy_helper.from_array(np.zeros(0, np.float32), "roi"))
            names[0] = "roi"
        outputs = ["y", "idx_out"] if op == "TopK" else ["y", "y2"] if op == "Split" else ["y"]
        nodes.append(helper.make_node(op, ["c", *names], outputs, **attrs))
    graph = helper.make_graph(nodes, op, [helper.make_tensor_value_info("x", TensorProto.FLOAT, X_SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    return onnx.shape_inference.infer_shapes(model)


def _declare_output(model: onnx.ModelProto, shape: tuple[int, ...]) -> None:
    """Give y the shape a forward run found (some ops defeat ONNX shape inference)."""
    dims = model.graph.output[0].type.tensor_type.shape
    if not len(dims.dim):
        for d in shape:
            dims.dim.add().dim_value = d


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def trains(model: onnx.ModelProto, x: np.ndarray, target: np.ndarray) -> str:
    """'trains', or why not (one line)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            artifacts = build_artifacts(model, trainable=["W"], folder=Path(tmp), loss=LossSpec(), timeout_s=120)
            session = TrainingSession(artifacts, threads=1)
            session.reset_grad()
            loss = session.train_step(x, target)
            grad = session.gradients()["W"]
        except TrainingError as error:
            return "blocks: " + str(error).split(". To fix this")[0][:400]
    if not np.isfinite(loss) or not np.all(np.isfinite(grad)):
        return "blocks: non-finite loss or gradient"
    return "trains" if np.any(grad != 0) else "runs, but W's gradient is all zero"


def main(argv: list[str]) -> int:
    ops = argv or list(SPECS)
    x = _f(*X_SHAPE, seed=3) * 2
    print(f"onnxruntime {onnxruntime.__version__}, onnx {onnx.__version__}; x {X_SHAPE}; per op: as is | after prepare_for_training")
    for op in ops:
        started = time.monotonic()
        model = _model(op)
        try:
            want = _run(model, x)
        except Exception as error:  # noqa: BLE001 - a bad spec is reported, not fatal
            print(f"{op:26s} | spec does not run: {str(error)[:120]}", flush=True)
            continue
        _declare_output(model, want.shape)
        target = (want + 0.1).astype(np.float32)
        raw = trains(model, x, target)
        prepared, steps = prepare_for_training(model, input_shapes={"x": X_SHAPE})
        fired = [name for name, result in steps if result.changed and name not in ("pin_input_shapes",)]
        after = "-"
        if fired and prepared is not model:
            diff = float(np.max(np.abs(_run(prepared, x).astype(np.float64) - want)))
            after = f"{trains(prepared, x, target)} via {'+'.join(fired)} (max abs diff {diff:.1e})"
        print(f"{op:26s} | {raw} | {after}   [{time.monotonic() - started:.1f} s]", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

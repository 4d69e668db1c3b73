"""Child process that runs ``generate_artifacts``: ``python -m inq_onnx.train._artifacts_child CONFIG``.

CONFIG is a JSON file: model, folder, trainable, loss (a ResolvedLoss), result. On success
the child writes ``{"ok": true, ...}`` to ``result``; on a Python exception it writes the
exception's type and text. A C++ abort or crash writes nothing: the parent reads the signal.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

from inq_onnx.train.pause import pause_point


def _generate(config: dict) -> dict:
    import onnx

    from inq_onnx.train.loss_blocks import loss_block, loss_input_names
    from inq_onnx.train.losses import ResolvedLoss
    from inq_onnx.train.ort_training import load_training_api

    artifacts = load_training_api().artifacts
    loss = ResolvedLoss.from_json(config["loss"])
    model = onnx.load(config["model"])
    artifacts.generate_artifacts(
        model,
        requires_grad=config["trainable"],
        loss=loss_block(loss),
        optimizer=artifacts.OptimType.AdamW,
        artifact_directory=config["folder"],
        loss_input_names=loss_input_names(loss),
    )
    evaluation = onnx.load(str(Path(config["folder"]) / "eval_model.onnx"), load_external_data=False)
    params = set(config["trainable"])
    return {"ok": True, "inputs": [v.name for v in evaluation.graph.input if v.name not in params]}


def main(argv: list[str]) -> int:
    config = json.loads(Path(argv[0]).read_text())
    try:
        result = _generate(config)
        pause_point("artifacts")
    except Exception as error:  # noqa: BLE001 - reported to the parent, which raises TrainingError
        traceback.print_exc()
        result = {"ok": False, "error": f"{type(error).__name__}: {error}"}
    Path(config["result"]).write_text(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

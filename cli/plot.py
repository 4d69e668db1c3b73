"""A run as a picture; matplotlib is an optional extra."""

from __future__ import annotations

from pathlib import Path

from inq_onnx.errors import InqError


def plot_run(records: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise InqError("drawing needs matplotlib, which is not installed", "pip install 'inq-onnx[plot]'") from e
    steps = [r for r in records if r["step"] >= 0]
    x = [r["sigma"] for r in steps]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    metric = "val_accuracy" if any(r.get("val_accuracy") is not None for r in steps) else "agreement"
    ax_acc.plot(x, [r.get(metric) for r in steps], "o-", label=f"quantized ({metric.replace('_', ' ')})")
    base = next((r.get(metric) for r in records if r["step"] < 0), None)
    if base is not None:
        ax_acc.axhline(base, color="gray", linestyle="--", label="float model")
    ax_acc.set(xlabel="share of weights quantized (sigma)", ylabel=metric.replace("_", " "), title="after each INQ step")
    ax_acc.legend()
    ax_loss.plot(x, [r.get("train_loss") for r in steps], "s-")
    ax_loss.set(xlabel="sigma", ylabel="mean train loss", title="retraining loss per step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

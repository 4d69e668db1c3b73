"""Checkpoints: what a killed save leaves behind is cleared by the next one, CURRENT always names
a complete checkpoint, and a model saved with external data stays whole in memory."""

import numpy as np
import onnx

from inq_onnx.graph.tensors import read_tensor
from inq_onnx.incremental import InqOptions, start, weight_sites
from inq_onnx.options import QuantizeOptions
from inq_onnx.train.checkpoint import CURRENT, Checkpoint, Progress, load_checkpoint, save_checkpoint
from tests.conftest import FIXTURE

INQ = InqOptions(QuantizeOptions(bits=4), schedule=(0.5, 1.0))


def checkpoint(progress: Progress = Progress(trained=True)) -> Checkpoint:
    model = onnx.load(str(FIXTURE))
    return Checkpoint(model, start(model, INQ), progress, None)


def test_save_clears_what_a_killed_save_left(tmp_path):
    first = save_checkpoint(tmp_path, checkpoint())
    (tmp_path / ".ckpt-killed").mkdir()  # a save killed while writing
    (tmp_path / ".ckpt-killed" / "model.onnx").write_bytes(b"half")
    (tmp_path / "ckpt-000007").mkdir()  # a save killed after its rename, before CURRENT
    (tmp_path / f".{CURRENT}.tmp").write_text("ckpt-000007")
    assert load_checkpoint(tmp_path).sidecar.step == -1  # CURRENT still names the first
    second = save_checkpoint(tmp_path, checkpoint(Progress(False, 1, 2, loss_sum=0.5, loss_count=3)))
    assert second.name == "ckpt-000008"  # numbers never go back to a folder that may be half deleted
    assert sorted(p.name for p in tmp_path.iterdir()) == [CURRENT, second.name]
    assert (tmp_path / CURRENT).read_text() == second.name and not first.exists()
    progress = load_checkpoint(tmp_path).progress
    assert (progress.epoch, progress.batch, progress.loss_sum, progress.loss_count) == (1, 2, 0.5, 3)


def test_a_checkpoint_written_before_the_loss_fields_still_loads(tmp_path):
    folder = save_checkpoint(tmp_path, checkpoint())
    text = (folder / "progress.json").read_text()
    (folder / "progress.json").write_text(text.replace(', "loss_sum": 0.0, "loss_count": 0', ""))
    assert load_checkpoint(tmp_path).progress.loss_count == 0


def test_saving_with_external_data_keeps_the_model_whole(tmp_path, monkeypatch):
    import inq_onnx.train.checkpoint as module

    ckpt = checkpoint()
    sites = weight_sites(ckpt.model, INQ.quantize)
    before = {k: read_tensor(ckpt.model, s).copy() for k, s in sites.items()}
    real = module.save_model
    monkeypatch.setattr(module, "save_model", lambda m, p, external_data: real(m, p, external_data=True))
    save_checkpoint(tmp_path, ckpt)
    for key, site in sites.items():  # the live model is still trained from after its save
        np.testing.assert_array_equal(read_tensor(ckpt.model, site), before[key])
    folder = tmp_path / (tmp_path / CURRENT).read_text()
    assert (folder / "model.onnx.data").exists()
    loaded = load_checkpoint(tmp_path).model
    for key, site in sites.items():
        np.testing.assert_array_equal(read_tensor(loaded, site), before[key])

import sys

from inq_onnx.train.ort_training import load_training_api, session_options


def test_training_api_loads_without_torch_and_is_cached():
    api = load_training_api()
    assert api is load_training_api()
    assert api.version == "1.19.2"
    assert hasattr(api.artifacts, "generate_artifacts") and hasattr(api.onnxblock, "Block")
    assert {api.Module.__name__, api.Optimizer.__name__, api.CheckpointState.__name__} == {
        "Module", "Optimizer", "CheckpointState"}
    assert "onnxruntime.training.optim" in sys.modules


def test_session_options_set_threads():
    assert session_options(2).intra_op_num_threads == 2
    assert session_options().log_severity_level == 3

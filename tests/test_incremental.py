"""INQ steps without training: masks grow to each sigma, frozen weights never move, the last
step equals one-shot rounding, and a sidecar of another model or with moved weights is refused."""

import numpy as np
import onnx
import pytest

import inq_onnx
from inq_onnx.errors import SidecarError
from inq_onnx.graph.tensors import read_tensor
from inq_onnx.incremental import InqOptions, check_sidecar, is_complete, partition_step, start, weight_sites
from inq_onnx.options import QuantizeOptions
from inq_onnx.quantize import quantized_tensors
from inq_onnx.verify import verify
from tests.conftest import FIXTURE, conv_gemm_model


def run_all(model, options):
    state = start(model, options)
    history = [(model, state)]
    while not is_complete(state):
        model, state = partition_step(model, state)
        history.append((model, state))
    return history


@pytest.mark.parametrize("per_channel, bits", [(False, 4), (True, 4), (False, 3), (True, 2)])
def test_steps_follow_the_schedule_and_end_at_one_shot(per_channel, bits):
    model = onnx.load(str(FIXTURE))
    options = InqOptions(QuantizeOptions(bits=bits, per_channel=per_channel))
    history = run_all(model, options)
    assert len(history) == len(options.schedule) + 1
    for (m_prev, s_prev), (m, s) in zip(history, history[1:]):
        sigma = options.schedule[s.step]
        sites = weight_sites(m, options.quantize)
        for key, state in s.tensors.items():
            assert state.mask.sum() == round(sigma * state.mask.size)
            old = s_prev.tensors[key].mask
            assert np.all(state.mask[old])  # masks only grow
            before, after = read_tensor(m_prev, sites[key]), read_tensor(m, sites[key])
            assert np.array_equal(before[old], after[old])  # frozen weights never move
            assert np.array_equal(before[~state.mask], after[~state.mask])  # float ones untouched here
    final = history[-1][0]
    one_shot = inq_onnx.quantize(model, bits=bits, per_channel=per_channel).model
    for a, b in zip(final.graph.initializer, one_shot.graph.initializer):
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(a), onnx.numpy_helper.to_array(b))
    assert quantized_tensors(final) is not None and verify(final).checked_tensors == 4
    rule = "mse" if bits == 2 or (bits == 3 and not per_channel) else "paper"  # the default, auto
    assert {s.range_rule.value for s in history[-1][1].tensors.values()} == {rule}
    assert {t["range"] for t in quantized_tensors(final)[1].values()} == {rule}


def test_pruned_zeros_are_frozen_from_the_start():
    model = conv_gemm_model()
    w = model.graph.initializer[0]
    values = onnx.numpy_helper.to_array(w).copy()
    values.reshape(-1)[:20] = 0
    w.CopyFrom(onnx.numpy_helper.from_array(values, w.name))
    state = start(model, InqOptions(QuantizeOptions(bits=5)))
    assert state.tensors["conv.w"].n_pruned == 20 and state.tensors["conv.w"].mask.sum() == 20


def test_sidecar_of_another_model_or_with_moved_weights_is_refused():
    model = onnx.load(str(FIXTURE))
    options = InqOptions(QuantizeOptions(bits=4))
    stepped, state = partition_step(model, start(model, options))
    with pytest.raises(SidecarError, match="another model"):
        check_sidecar(conv_gemm_model(), state, options)
    with pytest.raises(SidecarError, match="made for 4 bits, not 5"):
        check_sidecar(stepped, state, InqOptions(QuantizeOptions(bits=5)))
    moved = onnx.ModelProto.FromString(stepped.SerializeToString())
    site = weight_sites(moved, options.quantize)["fc1.weight"]
    w = read_tensor(moved, site).copy()
    w[state.tensors["fc1.weight"].mask] *= 1.01
    from inq_onnx.graph.tensors import write_tensor
    write_tensor(moved, site, w)
    with pytest.raises(SidecarError, match="left their codebook"):
        check_sidecar(moved, state, options)


def test_the_rounding_error_partition_freezes_the_best_rounded_weights_first():
    model = onnx.load(str(FIXTURE))
    options = InqOptions(QuantizeOptions(bits=4), schedule=(0.5, 1.0), strategy="rounding-error")
    state = start(model, options)
    stepped, state = partition_step(model, state)
    from inq_onnx.partition import relative_rounding_error
    for key, site in weight_sites(model, options.quantize).items():
        error = relative_rounding_error(read_tensor(model, site), state.tensors[key].codebook)
        mask = state.tensors[key].mask
        assert mask.sum() == round(0.5 * mask.size) and error[mask].max() <= error[~mask].min()
    assert verify(partition_step(stepped, state)[0]).checked_tensors == 4

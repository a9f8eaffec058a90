"""LiteRT's two call paths: the interpreter quantlab times and the CompiledModel that LiteRT
2.x and ``litert-benchmark`` use, run from the same checked bytes on a real tiny model."""

import numpy as np
import pytest

from quantlab import runtime
from quantlab.runtime import litert


def batch_for(predictor, images):
    return predictor.prepare(runtime.sample_batch(predictor.input_shape, images, seed=images))


@pytest.mark.parametrize("variant", ["float32", "int8"])
@pytest.mark.parametrize("images", [1, 5])
@pytest.mark.parametrize("kernels", ["xnnpack", "builtin"])
def test_compiled_model_gives_the_interpreters_outputs_for_the_same_prepared_batch(
        tiny_models, variant, images, kernels):
    predictor = runtime.load(tiny_models[variant], runtime="litert", threads=1, kernels=kernels)
    prepared = batch_for(predictor, images)
    expected = predictor.run(prepared).copy()
    with litert.compiled_model(predictor, prepared) as (call, output):
        call()
        got = output()
    assert got.shape == expected.shape == (images, 10)
    assert got.dtype == expected.dtype
    # Same kernels on the same bytes: the same numbers, to the bit for int8.
    if variant == "int8":
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_the_ratio_is_the_interpreters_seconds_over_the_compiled_models_round_by_round(tiny_models):
    """A patched clock (the real runtimes run): every reading advances it by one tick, and
    each interpreter call by three more, so a window of the interpreter lasts 4 ticks and one
    of CompiledModel 1: their ratio is exactly 4, never 1/4."""
    predictor = runtime.load(tiny_models["int8"], runtime="litert", threads=1)
    prepared = batch_for(predictor, 1)
    ticks = [0]

    def clock():
        ticks[0] += 1
        return ticks[0]

    real_run = predictor.run

    def slower_run(batch):
        ticks[0] += 3
        return real_run(batch)

    predictor.run = slower_run
    result = litert.call_paths(predictor, prepared, budget_seconds=0, clock=clock)
    assert result["ratio"].value == result["ratio"].low == result["ratio"].high == 4
    assert result["interpreter"].value == 4 and result["compiled_model"].value == 1
    assert result["rounds"] == 9 and result["stopped"] == "converged"


def test_both_paths_are_timed_in_rounds_on_the_real_clock(tiny_models):
    predictor = runtime.load(tiny_models["float32"], runtime="litert", threads=1)
    result = litert.call_paths(predictor, batch_for(predictor, 4), budget_seconds=0.2)
    assert result["rounds"] >= 9
    for name in ("interpreter", "compiled_model", "ratio"):
        interval = result[name]
        assert interval.rounds == result["rounds"]
        assert 0 < interval.low <= interval.value <= interval.high


def test_compiled_model_leaves_no_native_log_on_stderr(tiny_models, capfd):
    predictor = runtime.load(tiny_models["float32"], runtime="litert", threads=1)
    prepared = batch_for(predictor, 2)
    capfd.readouterr()
    with litert.compiled_model(predictor, prepared) as (call, output):
        call()
        output()
    assert capfd.readouterr().err == ""


def test_a_batch_the_interpreter_has_not_checked_is_checked_before_compiled_model_allocates(
        tiny_models, monkeypatch):
    """The activation cap applies to CompiledModel too: a batch the predictor was never
    resized to goes through the interpreter's size check first (here with a cap so low that
    a batch of 3 exceeds it)."""
    from quantlab.errors import QuantlabError
    from quantlab.runtime import tflite_check

    predictor = runtime.load(tiny_models["float32"], runtime="litert", threads=1)
    prepared = np.ascontiguousarray(batch_for(predictor, 3))
    predictor.prepare(runtime.sample_batch(predictor.input_shape, 1))  # back to batch 1
    monkeypatch.setattr(tflite_check, "MAX_ACTIVATION_BYTES", 64)
    with pytest.raises(QuantlabError, match="for its activations at batch 3"):
        with litert.compiled_model(predictor, prepared):
            pass

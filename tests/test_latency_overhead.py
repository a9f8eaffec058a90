"""What the latency suite pays per case besides timing: OpenVINO compiles a model once for the
batch a case runs, and profiles (or loads anew for the rounds) that very compiled model
rather than compiling it again."""

import numpy as np
import pytest

from quantlab import runtime
from quantlab.errors import QuantlabError


@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_openvino_profiles_the_graph_it_times_compiled_only_for_the_batch_asked(tiny_models, variant):
    predictor = runtime.load(tiny_models[variant], runtime="openvino", threads=1, batch=4)
    # Only batch 4 was compiled: no batch 1 first, which the case would never run (an int8
    # vit took seconds per compilation).
    assert list(predictor._requests) == [4]
    prepared = predictor.prepare(runtime.sample_batch(predictor.input_shape, 4))
    rows = predictor.layer_profile(prepared, runs=3)
    assert list(predictor._requests) == [4]
    # The profiled model runs the same primitives as the timed one (the execution graph of
    # the request that ``run`` calls), e.g. the int8 convolution's brgconv_..._I8.
    timed = set(predictor.primitives())
    profiled = {f"{row['type']}: {row['primitive']}" for row in rows
                if row["type"] in ("Convolution", "FullyConnected", "MatMul", "GroupConvolution")}
    assert timed and profiled == timed
    assert predictor.precision == ("int8" if variant == "int8" else "float32")
    assert all(row["seconds"] >= 0 for row in rows)


@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_openvino_loads_a_compiled_model_anew_in_memory_of_its_own(tiny_models, variant):
    first = runtime.load(tiny_models[variant], runtime="openvino", threads=1, batch=4)
    batch = runtime.sample_batch(first.input_shape, 4)
    expected = first.finish(first.run(first.prepare(batch)))
    second = first.anew()
    # Its own compiled model and request (the rounds go on with it while the first is
    # freed), for the same batch only, running the same primitives to the same numbers.
    assert second._request is not first._request
    assert list(second._requests) == [4] and list(first._requests) == [4]
    assert second.primitives() == first.primitives() and second.precision == first.precision
    np.testing.assert_array_equal(second.finish(second.run(second.prepare(batch))), expected)
    del first  # the second needs nothing of it
    np.testing.assert_array_equal(second.finish(second.run(second.prepare(batch))), expected)


def test_a_batch_size_below_one_is_a_one_line_error(tiny_models):
    with pytest.raises(QuantlabError, match="^batch size must be at least 1, got 0$"):
        runtime.load(tiny_models["float32"], runtime="openvino", batch=0)

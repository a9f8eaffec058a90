import numpy as np

from conftest import quick_config
from quantlab import training


def _train_both(digits):
    """A float net and its QAT fine-tune, trained afresh."""
    config = quick_config("medium", dataset="digits", limit=None, epochs=1)
    base = training.train(config, digits, use_cache=False)
    return base, training.train_qat(config, digits, use_cache=False, base=base)


def test_the_train_step_is_traced_once_and_trains_the_weights_it_did_when_traced_twice(
        digits, monkeypatch):
    # A trace of mobilenet's or vit's step costs seconds: creating the optimizer's and the
    # metrics' variables first spares the second one that a variable-creating trace forces.
    base, qat = _train_both(digits)
    for trained in (base, qat):
        assert trained.model.train_tf_function.experimental_get_tracing_count() == 1
    monkeypatch.setattr(training, "_create_variables", lambda *args: None)
    old_base, old_qat = _train_both(digits)
    assert old_base.model.train_tf_function.experimental_get_tracing_count() == 2
    for new, old in ((base, old_base), (qat, old_qat)):
        for a, b in zip(new.model.get_weights(), old.model.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
        assert new.info["test_accuracy"] == old.info["test_accuracy"]

"""The work of one net, stage by stage: each computes one result from its inputs; the
callers keep the results."""

from quantlab import variants
from quantlab.study.config import train_config


def export_net(config, net, data, progress):
    """{variant: Artifact} of one net (or of the user's own model): trained and exported, cached."""
    if config.model is not None:
        from quantlab import byo

        return byo.export(config.model, data, train_config(config, net), config.variants,
                          progress=progress)
    return variants.export(train_config(config, net), variants=config.variants, data=data,
                           progress=progress)


def pairs(artifacts, runtimes, cpu):
    """Every (variant, runtime) the study runs: each variant on each chosen runtime that can."""
    from quantlab.latency_suite import runtimes_for

    return [(v, r) for v in artifacts for r in runtimes if r in runtimes_for(v, cpu)]


def evaluate_net(net, artifacts, studied, data, progress):
    """Accuracy rows of every studied (variant, runtime) pair on the whole test split."""
    from quantlab import evaluate

    rows = evaluate.compare(artifacts, data, studied, progress=progress, label=f"{net}: evaluating")
    return [{"net": net, **row} for row in rows]


def layer_errors(config, net, artifacts, data, progress):
    """Per-layer error of the int8 variant (quantlab's own nets only)."""
    if "int8" not in artifacts or config.model is not None:
        return []
    from quantlab import layer_error, training

    progress(f"{net}: per-layer quantization error of int8 (TFLite quantization debugger)")
    trained = training.train(train_config(config, net), data)
    return layer_error.int8_layer_errors(trained.model, data, artifacts["int8"].meta)


def deployment_repeats(config):
    """Fresh processes per (variant, runtime) for load time, first inference and memory:
    three for the median and spread, one in the quick study (a TensorFlow process alone
    costs seconds)."""
    from quantlab import deployment

    return 1 if config.quick else deployment.REPEATS


def measure_deployment(config, net, artifacts, studied, progress):
    """What each (variant, runtime) costs a deployment beyond its steady call (load, first
    inference, memory), each measured in fresh processes, alone on the machine."""
    from quantlab import deployment

    return deployment.measure_net(net, artifacts, studied, config.threads[0], progress,
                                  repeats=deployment_repeats(config))


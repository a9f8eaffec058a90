"""Standard and quantization-aware training of the P17 nets, cached on disk.

Standard training follows P17 (Adam, batch 32, early stopping on validation loss with the
best weights restored, validation split 0.2) for at most ``defaults.EPOCHS`` epochs, fewer
than P17's 5 (see there). QAT fine-tunes those same float weights with tfmot's default 8-bit
scheme, on the first ``defaults.QAT_IMAGES`` training images, so every quantized variant
descends from one float net. Trained weights are cached under a hash of everything that
determines them: the settings, the full content of the data, and the code (this module, the
nets and TensorFlow's setup).
"""

import contextlib
import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import quantlab
from quantlab import _tf, cache, datasets, defaults, nets
from quantlab._tf import versions
from quantlab.errors import QuantlabError


# Training steps per call into TensorFlow. Keras pays its per-step Python work once per call
# and runs the steps in a loop inside the graph: an epoch of the P17 nets (1500 steps) took
# 5-13 % less CPU time on 2 cores, and the weights are those of one step per call (the same
# steps in the same order), so the cache keys stay as they are.
STEPS_PER_EXECUTION = 32


@dataclass(frozen=True)
class TrainConfig:
    net: str
    dataset: str = datasets.DEFAULT
    epochs: int = defaults.EPOCHS
    batch_size: int = 32
    learning_rate: float = 1e-3
    validation_split: float = 0.2
    patience: int = 1
    limit: int | None = None
    seed: int = 0
    qat_epochs: int = 1
    qat_learning_rate: float = 1e-6
    qat_images: int | None = defaults.QAT_IMAGES  # None: every image the float net trained on

    def __post_init__(self):
        # ``net`` is checked where a net is built: a user's own model has a name of its own.
        if self.epochs < 1 or self.qat_epochs < 1:
            raise QuantlabError("epochs must be at least 1")
        for what, images in (("--limit", self.limit), ("qat_images", self.qat_images)):
            if images is not None and images < 10:
                raise QuantlabError(f"{what} {images} is too small: use at least 10 images")
        if not 0 < self.validation_split < 1:
            raise QuantlabError("validation split must lie between 0 and 1")


@dataclass
class Trained:
    """A trained model with its cache folder and what training reported."""

    model: object
    path: Path
    info: dict
    from_cache: bool


def _key(config, data, qat, base_key=None):
    """Everything that determines a model; ``base_key`` names a float model not trained here."""
    fields = dataclasses.asdict(config)
    if not qat:
        for name in ("qat_epochs", "qat_learning_rate", "qat_images"):
            fields.pop(name)
    if base_key is not None:
        fields = {"base": base_key, "batch_size": config.batch_size,
                  **{k: fields[k] for k in ("qat_epochs", "qat_learning_rate", "qat_images",
                                            "limit", "seed", "validation_split", "patience")}}
    return {
        "stage": "qat" if qat else "float",
        "config": fields,
        "recipe": cache.code_digest(*RECIPE),
        "data": data.sha256,  # all of it: files that agree on a sample are still other data
        "quantlab": quantlab.__version__,
        "versions": versions(),
    }


def model_dir(config, data, qat=False, base_key=None):
    key = _key(config, data, qat, base_key)
    stage = "qat" if qat else "float"
    return cache.cache_root() / "models" / f"{config.net}-{data.name}-{stage}-{cache.config_hash(key)}"


def _seed(seed):
    from quantlab._tf import keras, tf

    keras().utils.set_random_seed(seed)
    tf().config.experimental.enable_op_determinism()


def _epoch_printer(progress, label, epochs):
    """A Keras callback that reports one line per epoch through ``progress``."""
    from quantlab._tf import keras

    class EpochPrinter(keras().callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            figures = " ".join(f"{name} {logs[name]:.4f}" for name in
                               ("loss", "accuracy", "val_loss", "val_accuracy") if name in logs)
            seconds = time.perf_counter() - self.started
            left = epochs - epoch - 1  # at most: early stopping may end sooner
            eta = f", at most ~{left * seconds:.0f} s to go" if left else ""
            progress(f"{label} epoch {epoch + 1}/{epochs}: {figures} ({seconds:.1f} s{eta})")

    return EpochPrinter()


def _compile(model, learning_rate):
    from quantlab._tf import keras

    k = keras()
    # Keras's older Adam: one fused ApplyAdam op per variable, where the newer one stages a
    # chain of small ops per variable (a longer trace, more ops per step). The same update
    # rule, rounded differently: test accuracies moved by at most 0.3 points either way.
    model.compile(
        optimizer=k.optimizers.legacy.Adam(learning_rate),
        loss=k.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=STEPS_PER_EXECUTION,
    )


def _create_variables(model, x, y):
    """Make the optimizer's and the metrics' variables before ``fit`` traces its train step.

    A tf.function whose first trace creates variables is traced a second time without, and
    each trace stages the step twice (autograph stages a loop's body once more to learn its
    outputs: ``STEPS_PER_EXECUTION``): mobilenet's and vit's quick training spent ~9-11 CPU-s
    on four stagings, now two. Adam's slots and the metrics' totals start at zero either way
    and the model is called in inference mode, so the weights are the same, bit for bit."""
    from quantlab._tf import tf

    # The older Adam's equivalent of ``build``: its step counter, hyperparameters and slots.
    model.optimizer._create_all_weights(model.trainable_variables)
    logits = model(x[:1])
    model.compiled_loss.build(logits)
    model.compiled_metrics.build(logits, tf().constant(y[:1]))


def _images(config, qat):
    """How many training images a stage fits on: QAT the first ``qat_images`` of the float
    net's."""
    if not qat or config.qat_images is None:
        return config.limit
    return min(config.limit or config.qat_images, config.qat_images)


def _fit(model, config, data, qat, progress, label):
    from quantlab._tf import keras

    epochs, learning_rate = ((config.qat_epochs, config.qat_learning_rate) if qat
                             else (config.epochs, config.learning_rate))
    _compile(model, learning_rate)
    train = data.subset(_images(config, qat))
    x, y = train.x_train, train.y_train
    _create_variables(model, x, y)
    callbacks = [
        keras().callbacks.EarlyStopping(
            monitor="val_loss", patience=config.patience, restore_best_weights=True
        )
    ]
    if progress:
        callbacks.append(_epoch_printer(progress, label, epochs))
    started = time.perf_counter()
    history = model.fit(
        x, y,
        batch_size=config.batch_size,
        epochs=epochs,
        validation_split=config.validation_split,
        shuffle=True,
        callbacks=callbacks,
        verbose=0,
    )
    _, test_accuracy = model.evaluate(data.x_test, data.y_test, batch_size=256, verbose=0)
    return {
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "epochs_run": len(history.history["loss"]),
        "train_images": int(len(x)),
        "test_accuracy": float(test_accuracy),
        "seconds": time.perf_counter() - started,
    }


def _quantize(model):
    from quantlab._tf import tfmot

    return tfmot().quantization.keras.quantize_model(model)


def _train_or_load(config, data, qat, progress, use_cache, build, base_key=None, prepare=None):
    """Load the cached model of this key, or ``build`` (then ``prepare``) and fit one."""
    folder = model_dir(config, data, qat, base_key)
    stage = "qat" if qat else "float"
    with cache.locked(folder, progress) if use_cache else contextlib.nullcontext():
        info = _cached_info(folder, progress) if use_cache else None
        if info is not None:
            if progress:
                progress(f"{config.net} ({stage}) loaded from cache: {folder}")
            model = build()
            model.load_weights(str(folder / "weights.h5"))
            _compile(model, config.qat_learning_rate if qat else config.learning_rate)
            return Trained(model, folder, info, from_cache=True)
        _seed(config.seed)
        model = build()
        if prepare:
            prepare(model)
        info = _fit(model, config, data, qat, progress, f"{config.net} {stage}")
        info.update(stage=stage, key=_key(config, data, qat, base_key), dataset_source=data.source)
        if use_cache:
            with cache.atomic_dir(folder) as tmp:
                model.save_weights(str(tmp / "weights.h5"))
                info["weights_sha256"] = cache.sha256_of(tmp / "weights.h5")
                cache.write_json(tmp / "info.json", info)
        return Trained(model, folder, info, from_cache=False)


def _cached_info(folder, progress):
    """The info of the model cached in ``folder``, or None when there is none or when its
    files are not the ones it was saved as, or were saved for another key (then the folder
    goes and the model is trained again): loading truncated, altered or other weights would
    fail, or worse, not fail."""
    if not folder.exists():
        return None
    try:
        info = json.loads((folder / "info.json").read_text())
        if (cache.is_folder_of(folder, info["key"])
                and info["weights_sha256"] == cache.sha256_of(folder / "weights.h5")):
            return info
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if progress:
        progress(f"the cached model in {folder} is damaged or incomplete: training it again")
    shutil.rmtree(folder, ignore_errors=True)
    return None


def train(config, data=None, data_dir=None, progress=None, use_cache=True):
    """Train net ``config.net`` (or load it from the cache) and return a ``Trained``."""
    data = data or datasets.load(config.dataset, data_dir)
    return _train_or_load(
        config, data, False, progress, use_cache,
        lambda: nets.build(config.net, data.input_shape, data.num_classes),
    )


from quantlab.defaults import CALIBRATION_SIZE as CALIBRATION_IMAGES  # noqa: E402 (QAT starts from the images int8 calibrates on)


def calibrate_ranges(qat_model, float_model, images):
    """Start the fake-quantization ranges at the float net's observed activation ranges.

    tfmot starts every activation range at [-6, 6] and moves it by an exponential moving
    average with decay 0.999, so a short fine-tune (a few hundred steps) would still clip
    activations above 6 and quantize with the wrong step. Calibrating first, as
    post-training quantization does, lets QAT start from the ranges the data needs.
    """
    from quantlab._tf import keras

    probe = keras().Model(float_model.inputs, [layer.output for layer in float_model.layers])
    outputs = dict(zip((layer.name for layer in float_model.layers),
                       probe.predict(images, batch_size=256, verbose=0)))
    outputs["quantize_layer"] = images
    for layer in qat_model.layers:
        inner = getattr(layer, "layer", None)
        observed = outputs.get(inner.name if inner is not None else layer.name)
        if observed is None:
            continue
        for weight in layer.weights:
            if weight.name.endswith(("post_activation_min:0", "quantize_layer_min:0")):
                weight.assign(min(0.0, float(observed.min())))
            elif weight.name.endswith(("post_activation_max:0", "quantize_layer_max:0")):
                weight.assign(max(0.0, float(observed.max())))


def train_qat(config, data=None, data_dir=None, progress=None, use_cache=True, base=None,
              base_key=None):
    """Fine-tune the float net of ``config`` with fake quantization (tfmot, 8-bit default).

    ``base`` is the float net when the caller already has it; ``base_key`` identifies a
    float model that quantlab did not train (a user's own), for the cache key.
    """
    data = data or datasets.load(config.dataset, data_dir)
    base = base or train(config, data, progress=progress, use_cache=use_cache)
    images = data.subset(config.limit).x_train[:CALIBRATION_IMAGES]
    return _train_or_load(
        config, data, True, progress, use_cache,
        build=lambda: _quantize(base.model), base_key=base_key,
        prepare=lambda qat: calibrate_ranges(qat, base.model, images),
    )


# The code that determines a trained model: part of its cache key, so that a change to the
# nets or to how they are trained never returns a model made by the old code. Whole modules,
# not a list of functions: any function or constant here can change the weights, and a list
# would miss the next one added (TensorFlow's setup in _tf included).
RECIPE = (_tf, nets, sys.modules[__name__])

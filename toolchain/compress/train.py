"""Fit the float model on the train split."""

from __future__ import annotations

import logging
from contextlib import contextmanager

import numpy as np

from toolchain.config.recipe import TrainSpec
from toolchain.errors import InputError, NonFiniteError
from toolchain.fsutil import progress
from toolchain.models.compat import keras

log = logging.getLogger(__name__)
#: Called after each epoch of ``fit`` with (epochs done, eval metric or None): ``toolchain search``'s pruner
#: stops a hopeless trial by raising (``watching``).
_watchers: list = []


@contextmanager
def watching(watcher):
    """Call ``watcher(epoch, eval_metric)`` after each training epoch while the block runs."""
    _watchers.append(watcher)
    try:
        yield
    finally:
        _watchers.remove(watcher)


def set_threads(n: int) -> None:
    """TensorFlow's thread pools for this process (``train.threads``), before its first op; a process that already
    runs with another count keeps it, and says so (its model may then differ from another run's)."""
    import tensorflow as tf

    now = tf.config.threading.get_intra_op_parallelism_threads()
    if now == n:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        log.warning(
            "train.threads %d: TensorFlow already runs in this process with %s threads; the trained weights may "
            "differ from a build that ran with %d",
            n,
            now or "every core's",
            n,
        )


def _all_layers(model) -> list:
    """Every layer, nested models included (tf_keras has ``submodules``; Keras 3 models have nested ``layers``)."""
    if hasattr(model, "submodules"):
        return list(model.submodules)
    return [sub for layer in model.layers for sub in (layer, *_all_layers(layer))] if hasattr(model, "layers") else []


def set_batchnorm_momentum(model, momentum: float) -> int:
    """Set the momentum of every BatchNormalization layer; returns how many were changed."""
    layers = [layer for layer in _all_layers(model) if type(layer).__name__ == "BatchNormalization"]
    for layer in layers:
        layer.momentum = momentum
    return len(layers)


def fit(model, x, y, spec: TrainSpec, x_val=None, y_val=None, task: str = "classification") -> dict:
    """Fit with the task's loss: cross-entropy (classification), MSE on the labels (regression), MSE reconstructing
    the (first) input (anomaly: an autoencoder). ``x``: an array, or one array per model input."""
    outputs = list(getattr(model, "outputs", None) or [])
    if len(outputs) > 1:  # one label array trains one output (and Keras names its metrics per output then)
        names = ", ".join(getattr(model, "output_names", None) or [t.name for t in outputs])
        raise InputError(
            f"train: a {task} model trained from the recipe must have one output; {model.name} has {len(outputs)} "
            f"({names}): train it outside the toolchain and build it without 'train'"
        )
    k = keras() if type(model).__module__.startswith("tf_keras") else __import__("keras")  # a Keras 3 model file
    k.utils.set_random_seed(spec.seed)
    if task == "anomaly":
        y = x[0] if isinstance(x, (list, tuple)) else x
        y_val = (x_val[0] if isinstance(x_val, (list, tuple)) else x_val) if x_val is not None else None
    samples = len(x[0]) if isinstance(x, (list, tuple)) else len(x)
    if spec.batchnorm_momentum is not None:
        n = set_batchnorm_momentum(model, spec.batchnorm_momentum)
        if n:
            log.info("train: BatchNorm momentum set to %s on %d layers", spec.batchnorm_momentum, n)
    per_epoch = int(np.ceil(samples / spec.batch_size))
    steps = spec.epochs * per_epoch
    lr = spec.learning_rate
    if spec.lr_schedule == "cosine":
        lr = k.optimizers.schedules.CosineDecay(spec.learning_rate, steps)
    if task == "language_model":  # logits of the next token at every position
        loss = k.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(k.optimizers.Adam(lr), loss, ["accuracy"])
    elif spec.label_smoothing:
        classes = model.output_shape[-1]
        y = np.eye(classes, dtype=np.float32)[y]
        y_val = np.eye(classes, dtype=np.float32)[y_val] if y_val is not None else None
        model.compile(
            k.optimizers.Adam(lr), k.losses.CategoricalCrossentropy(label_smoothing=spec.label_smoothing), ["accuracy"]
        )
    elif task == "classification":
        model.compile(k.optimizers.Adam(lr), "sparse_categorical_crossentropy", ["accuracy"])
    else:
        model.compile(k.optimizers.Adam(lr), "mse", ["mae"])

    class Progress(k.callbacks.Callback):
        at = 0  # the epoch running

        def on_epoch_begin(self, epoch, logs=None):
            self.at = epoch

        def on_train_batch_end(self, batch, logs=None):
            bar.update(self.at + (batch + 1) / per_epoch)

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            if not np.isfinite(logs.get("loss", 0.0)):
                raise NonFiniteError(
                    f"training diverged at epoch {epoch + 1}: loss {logs['loss']}; lower train.learning_rate "
                    f"(now {spec.learning_rate:g})"
                )
            metric = "acc" if "accuracy" in logs else "mae"
            value = logs.get("accuracy", logs.get("mae", float("nan")))
            val = (
                f", eval {metric} {logs['val_' + ('accuracy' if metric == 'acc' else 'mae')]:.3f}"
                if "val_loss" in logs
                else ""
            )
            bar.update(
                epoch + 1, f"train: epoch {epoch + 1}/{spec.epochs} loss {logs['loss']:.4f} {metric} {value:.3f}{val}"
            )
            for watcher in _watchers:
                watcher(epoch + 1, logs.get("val_accuracy", logs.get("val_mae")))

    val = (x_val, y_val) if x_val is not None else None
    with progress(log, "train", spec.epochs, "epochs") as bar:
        hist = model.fit(
            x,
            y,
            batch_size=spec.batch_size,
            epochs=spec.epochs,
            validation_data=val,
            verbose=0,
            shuffle=True,
            callbacks=[Progress()],
        )
    return {k_: [float(v) for v in vals] for k_, vals in hist.history.items()}

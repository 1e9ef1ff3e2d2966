"""Fit the float model on the train split."""

from __future__ import annotations

import logging

import numpy as np

from toolchain.config.recipe import TrainSpec
from toolchain.errors import NonFiniteError
from toolchain.models.compat import keras

log = logging.getLogger(__name__)


def set_batchnorm_momentum(model, momentum: float) -> int:
    """Set the momentum of every BatchNormalization layer; returns how many were changed."""
    k = keras()
    layers = [layer for layer in model.submodules if isinstance(layer, k.layers.BatchNormalization)]
    for layer in layers:
        layer.momentum = momentum
    return len(layers)


def fit(model, x: np.ndarray, y: np.ndarray, spec: TrainSpec, x_val=None, y_val=None) -> dict:
    k = keras()
    k.utils.set_random_seed(spec.seed)
    if spec.batchnorm_momentum is not None:
        n = set_batchnorm_momentum(model, spec.batchnorm_momentum)
        if n:
            log.info("train: BatchNorm momentum set to %s on %d layers", spec.batchnorm_momentum, n)
    steps = spec.epochs * int(np.ceil(len(x) / spec.batch_size))
    lr = spec.learning_rate
    if spec.lr_schedule == "cosine":
        lr = k.optimizers.schedules.CosineDecay(spec.learning_rate, steps)
    if spec.label_smoothing:
        classes = model.output_shape[-1]
        y = np.eye(classes, dtype=np.float32)[y]
        y_val = np.eye(classes, dtype=np.float32)[y_val] if y_val is not None else None
        model.compile(
            k.optimizers.Adam(lr), k.losses.CategoricalCrossentropy(label_smoothing=spec.label_smoothing), ["accuracy"]
        )
    else:
        model.compile(k.optimizers.Adam(lr), "sparse_categorical_crossentropy", ["accuracy"])

    class Progress(k.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            if not np.isfinite(logs.get("loss", 0.0)):
                raise NonFiniteError(
                    f"training diverged at epoch {epoch + 1}: loss {logs['loss']}; lower train.learning_rate "
                    f"(now {spec.learning_rate:g})"
                )
            val = f", eval acc {logs['val_accuracy']:.3f}" if "val_accuracy" in logs else ""
            log.info(
                "train: epoch %d/%d loss %.4f acc %.3f%s",
                epoch + 1,
                spec.epochs,
                logs.get("loss", float("nan")),
                logs.get("accuracy", float("nan")),
                val,
            )

    val = (x_val, y_val) if x_val is not None else None
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

"""What every compression step shares: the distribution strategy, fine-tuning (with optional
distillation), BatchNorm re-estimation, and the measurements steps report."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

import numpy as np

from toolchain.config.recipe import FineTune, Strategy
from toolchain.errors import CompressionError, ConfigError
from toolchain.fsutil import progress
from toolchain.models.compat import keras, tf

log = logging.getLogger(__name__)
_strategies: dict = {}


def strategy(spec: Strategy):
    """The tf.distribute strategy a recipe names (made once per process)."""
    key = spec.model_dump_json()
    if key in _strategies:
        return _strategies[key]
    t = tf()
    if spec.kind == "default":
        s = t.distribute.get_strategy()
    elif spec.kind == "mirrored":
        cpus = t.config.list_physical_devices("CPU")
        if spec.cpu_devices:
            try:
                t.config.set_logical_device_configuration(
                    cpus[0], [t.config.LogicalDeviceConfiguration()] * spec.cpu_devices
                )
            except RuntimeError:
                raise ConfigError(
                    "strategy.cpu_devices: TensorFlow is already initialized in this process; set it before "
                    "the first build"
                ) from None
        devices = [d.name for d in t.config.list_logical_devices("GPU")] or [
            d.name for d in t.config.list_logical_devices("CPU")
        ]
        s = t.distribute.MirroredStrategy(devices=devices)
    else:
        os.environ["TF_CONFIG"] = json.dumps(
            {"cluster": spec.cluster, "task": {"type": "worker", "index": spec.task_index}}
        )
        s = t.distribute.MultiWorkerMirroredStrategy()
    log.info("strategy: %s over %d replica(s)", type(s).__name__, s.num_replicas_in_sync)
    _strategies[key] = s
    return s


def clone(model):
    """A copy of ``model`` with fresh variables (created in the active strategy scope) and the same weights."""
    k = keras()
    copy = k.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def distillation_loss(classes: int, temperature: float, alpha: float):
    """Labels plus the teacher's softened outputs, packed as y = [one-hot labels | teacher soft targets]."""
    t = tf()

    def loss(y, q):
        labels, soft_teacher = y[:, :classes], y[:, classes:]
        q = t.clip_by_value(q, 1e-7, 1.0)
        hard = -t.reduce_sum(labels * t.math.log(q), axis=-1)
        soft_student = t.nn.softmax(t.math.log(q) / temperature, axis=-1)
        kl = t.reduce_sum(
            soft_teacher
            * (
                t.math.log(t.clip_by_value(soft_teacher, 1e-7, 1.0))
                - t.math.log(t.clip_by_value(soft_student, 1e-7, 1.0))
            ),
            axis=-1,
        )
        return alpha * temperature**2 * kl + (1 - alpha) * hard

    return loss


def soft_targets(teacher_probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T) of the teacher's probabilities."""
    logits = np.log(np.clip(teacher_probs, 1e-7, 1.0)) / temperature
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


@dataclass
class Teacher:
    """The float teacher's outputs on the training split, and its feature maps of the layers steps name."""

    probs: np.ndarray
    features: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of(cls, teacher, x: np.ndarray, layers: list[str]) -> Teacher:
        k = keras()
        missing = [n for n in layers if n not in {layer.name for layer in teacher.layers}]
        if missing:
            raise CompressionError(f"distill: the teacher has no layer {missing[0]!r}")
        if not layers:
            return cls(teacher.predict(x, batch_size=64, verbose=0))
        shapes = [teacher.get_layer(n).output.shape[1:] for n in layers]
        size = len(x) * sum(int(np.prod(s)) for s in shapes) * 4
        if size > 2 * 2**30:
            raise CompressionError(
                f"distill.features: the teacher's maps of {', '.join(layers)} take {size / 2**30:.1f} GiB over the "
                "training split; name later (smaller) layers"
            )
        tap = k.Model(teacher.inputs, [teacher.output, *(teacher.get_layer(n).output for n in layers)])
        probs, *maps = tap.predict(x, batch_size=64, verbose=0)  # one pass: outputs and maps together
        return cls(probs, dict(zip(layers, maps, strict=True)))


def find_layer(model, name: str):
    """``name`` in ``model``, or the tfmot wrapper (prune_low_magnitude_*, quant_*, cluster_*) around it."""
    for layer in model.layers:
        if layer.name == name or getattr(getattr(layer, "layer", None), "name", None) == name:
            return layer
    raise CompressionError(f"distill.features: the student has no layer {name!r}")


def feature_model(model, pairs, teacher: Teacher):
    """A training model: the student's output, then per pair its layer's map through a 1x1 adapter (a Dense on
    the channel axis) when the channel counts differ. Returns (model, adapters {student layer: (in, out)})."""
    k = keras()
    L = k.layers
    outputs, adapters = [L.Activation("linear", name="output")(model.output)], {}
    for i, pair in enumerate(pairs):
        x = find_layer(model, pair.student).output
        want = teacher.features[pair.teacher].shape[1:]
        if tuple(x.shape[1:-1]) != tuple(want[:-1]):
            raise CompressionError(
                f"distill.features: student {pair.student!r} gives {tuple(x.shape[1:])}, teacher {pair.teacher!r} "
                f"gives {tuple(want)}: only the channel count may differ"
            )
        if x.shape[-1] != want[-1]:
            adapters[pair.student] = (int(x.shape[-1]), int(want[-1]))
            x = L.Dense(int(want[-1]), use_bias=False, name=f"adapter_{i}")(x)  # a 1x1 conv on a feature map
        outputs.append(L.Activation("linear", name=f"feature_{i}")(x))
    return k.Model(model.inputs, outputs), adapters


def _learning_rate(spec: FineTune, samples: int):
    """The optimizer's learning rate: cosine decay to zero lets the weights settle; gradual pruning keeps a
    constant rate so the last masks can heal."""
    schedule = spec.lr_schedule or ("constant" if getattr(spec, "method", None) in ("magnitude", "2:4") else "cosine")
    if schedule != "cosine":
        return spec.learning_rate
    steps = max(1, spec.epochs * int(np.ceil(samples / spec.batch_size)))
    return keras().optimizers.schedules.CosineDecay(spec.learning_rate, steps)


def _objective(spec: FineTune, y: np.ndarray, teacher_train: Teacher | None, classes: int, name: str) -> tuple:
    """(target, accuracy metric, loss): the labels alone, or with ``spec.distill`` labels and the teacher's soft
    targets side by side."""
    k = keras()
    if not spec.distill:
        return y, "accuracy", "sparse_categorical_crossentropy"
    d = spec.distill
    if teacher_train is None:
        raise CompressionError(f"{name}: distillation needs the float teacher's outputs")
    target = np.concatenate(
        [np.eye(classes, dtype=np.float32)[y], soft_targets(teacher_train.probs, d.temperature)], axis=1
    )
    acc = k.metrics.MeanMetricWrapper(lambda yt, q: k.metrics.categorical_accuracy(yt[:, :classes], q), name="accuracy")
    return target, acc, distillation_loss(classes, d.temperature, d.alpha)


def _progress(bar, name: str, epochs: int, per_epoch: int, features: list[str]):
    """A callback moving ``bar`` (``fsutil.progress`` over the epochs) each batch and logging each epoch's loss,
    accuracy and (with feature distillation) feature loss."""

    class Progress(keras().callbacks.Callback):
        at = 0  # the epoch running

        def on_epoch_begin(self, epoch, logs=None):
            self.at = epoch

        def on_train_batch_end(self, batch, logs=None):
            bar.update(self.at + (batch + 1) / per_epoch)

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            loss = logs.get("loss", logs.get("loss_total", float("nan")))
            acc = logs.get("accuracy", logs.get("output_accuracy", float("nan")))
            feature = f" feature loss {sum(logs.get(f, 0.0) for f in features):.4f}" if features else ""
            terms = [f"{k[5:]} {v:.4f}" for k, v in logs.items() if k.startswith("loss_") and k != "loss_total"]
            said = f" ({', '.join(terms)})" if terms else ""  # the toolchain's own step: each term
            bar.update(
                epoch + 1, f"{name}: fine-tune epoch {epoch + 1}/{epochs} loss {loss:.4f} acc {acc:.3f}{feature}{said}"
            )

    return Progress()


def finetune(
    model,
    spec: FineTune,
    x: np.ndarray,
    y: np.ndarray,
    teacher_train: Teacher | None,
    scope,
    name: str,
    callbacks=(),
) -> dict:
    """Compile (in the strategy scope) and fit; with ``spec.distill`` against the teacher's outputs too, and with
    ``distill.features`` against its feature maps (a training model around ``model``; the adapters are dropped)."""
    k = keras()
    k.utils.set_random_seed(spec.seed)
    classes = model.output_shape[-1]
    lr = _learning_rate(spec, len(x))
    if spec.distill is not None and spec.distill.custom:  # relations, online, self: the toolchain's own step
        from toolchain.compress import distill

        distill.check(spec.distill, name)
        if spec.epochs == 0:
            return {}
        per_epoch = int(np.ceil(len(x) / spec.batch_size))
        with progress(log, f"{name}: fine-tune", spec.epochs, "epochs") as bar:
            callback = _progress(bar, name, spec.epochs, per_epoch, [])
            return distill.train(model, spec, x, y, teacher_train, scope, name, callbacks, lr, callback)
    pairs = spec.distill.features if spec.distill else []
    with scope.scope():
        target, acc, loss = _objective(spec, y, teacher_train, classes, name)
        trained, adapters = model, {}
        if pairs:
            trained, adapters = feature_model(model, pairs, teacher_train)
            target = [target, *(teacher_train.features[p.teacher] for p in pairs)]
            trained.compile(
                k.optimizers.Adam(lr),
                [loss] + ["mse"] * len(pairs),
                loss_weights=[1.0] + [spec.distill.feature_weight] * len(pairs),
                metrics={"output": [acc]},
            )
        else:
            model.compile(k.optimizers.Adam(lr), loss, [acc])
    features = [f"feature_{i}_loss" for i in range(len(pairs))]
    if spec.epochs == 0:
        return {}
    per_epoch = int(np.ceil(len(x) / spec.batch_size))
    with progress(log, f"{name}: fine-tune", spec.epochs, "epochs") as bar:
        hist = trained.fit(
            x,
            target,
            batch_size=spec.batch_size,
            epochs=spec.epochs,
            verbose=0,
            shuffle=True,
            callbacks=[*callbacks, _progress(bar, name, spec.epochs, per_epoch, features)],
        )
    history = {key: [float(v) for v in vals] for key, vals in hist.history.items()}
    if pairs:  # the student's own names, and the feature term (unweighted sum of the pairs' mean squared errors)
        history["accuracy"] = history.pop("output_accuracy")
        history["feature_loss"] = [float(sum(v)) for v in zip(*(history[f] for f in features), strict=True)]
        history["adapters"] = {n: list(shape) for n, shape in adapters.items()}
    return history


def reestimate_batchnorm(model, x: np.ndarray, batch_size: int = 64) -> int:
    """Recompute every BatchNorm's moving statistics as the average over ``x`` (forward passes in training
    mode, weights unchanged), so a pruned model is not evaluated on stale statistics. Returns batches used."""
    k = keras()
    layers = [layer for layer in model.submodules if isinstance(layer, k.layers.BatchNormalization)]
    if not layers:
        return 0
    saved = [layer.momentum for layer in layers]
    batches = [x[i : i + batch_size] for i in range(0, len(x), batch_size)]
    try:
        for i, xb in enumerate(batches):
            for layer in layers:
                layer.momentum = i / (i + 1)  # cumulative average: moving = mean of the batch statistics so far
            model(xb, training=True)
    finally:
        for layer, m in zip(layers, saved, strict=True):
            layer.momentum = m
    return len(batches)


def kernels(model) -> dict[str, np.ndarray]:
    """The weight kernels pruning acts on: Conv2D, DepthwiseConv2D and Dense."""
    k = keras()
    out = {}
    for layer in model.submodules:
        if isinstance(layer, k.layers.DepthwiseConv2D):
            w = layer.depthwise_kernel
        elif isinstance(layer, (k.layers.Conv2D, k.layers.Dense)):
            w = layer.kernel
        else:
            continue
        if hasattr(w, "numpy"):  # inside a QAT wrapper the attribute is a fake-quantized graph tensor
            out[layer.name] = w.numpy()
    return out


def sparsity(model, only: list[str] | None = None) -> dict:
    """Share of zero weights per kernel and overall (over ``only`` these layers, if given)."""
    ks = {name: w for name, w in kernels(model).items() if only is None or name in only}
    layers = {name: float(np.mean(w == 0)) for name, w in ks.items()}
    total = sum(w.size for w in ks.values())
    zeros = sum(int(np.sum(w == 0)) for w in ks.values())
    return {"overall": zeros / max(1, total), "weights": total, "zeros": zeros, "layers": layers}


def macs_and_params(model) -> dict:
    """Multiply-accumulates of conv and dense layers for one sample, and the parameter count."""
    k = keras()
    macs = 0
    for layer in model.submodules:
        if isinstance(layer, k.layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            macs += int(np.prod(layer.output.shape[1:])) * kh * kw
        elif isinstance(layer, k.layers.Conv2D):
            kh, kw = layer.kernel_size
            macs += int(np.prod(layer.output.shape[1:])) * kh * kw * int(layer.input.shape[-1])
        elif isinstance(layer, k.layers.Dense):
            macs += int(np.prod(layer.output.shape[1:])) * int(layer.input.shape[-1])
    return {"macs": macs, "params": int(model.count_params())}


def top1(model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=64, verbose=0), -1) == y))

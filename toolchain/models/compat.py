"""Every TensorFlow/Keras-version quirk lives here.

tensorflow-model-optimization needs Keras 2, so the toolchain uses ``tf_keras`` everywhere with
``TF_USE_LEGACY_KERAS=1``. Both variables must be set before TensorFlow is first imported.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


_configured = False


def tf():
    """TensorFlow, configured once: quiet, and with deterministic kernels so that the same recipe
    trains the same model again (seeds alone do not make multi-threaded CPU reductions repeatable)."""
    global _configured
    import tensorflow

    if not _configured:
        tensorflow.get_logger().setLevel("ERROR")
        tensorflow.config.experimental.enable_op_determinism()
        _configured = True
    return tensorflow


def keras():
    tf()
    import tf_keras

    return tf_keras


def keras3_twin(model, sample):
    """The same tf_keras network rebuilt in Keras 3, whose models the TFLite converter traces about twice as fast
    (MobileNetV2: 6-7 s against 13-14 s, measured side by side). ``None`` when a layer does not carry over (custom
    or tfmot layers, nested models) or the twin's outputs on ``sample`` differ by more than float rounding."""
    import inspect

    import numpy as np

    keras()
    import keras as keras3

    if type(model).__name__ not in ("Functional", "Sequential") or len(model.inputs) != 1 or len(model.outputs) != 1:
        return None
    try:
        config = model.get_config()
        for layer in config["layers"]:
            cls = getattr(keras3.layers, layer["class_name"], None)
            if cls is None or not isinstance(cls, type) or layer["class_name"] in ("Functional", "Sequential"):
                return None
            accepted = inspect.signature(cls.__init__).parameters
            general = ("name", "trainable", "dtype", "batch_input_shape", "batch_shape")
            layer["config"] = {k: v for k, v in layer["config"].items() if k in accepted or k in general}
            axis = layer["config"].get("axis")
            if layer["class_name"] == "BatchNormalization" and isinstance(axis, list) and len(axis) == 1:
                layer["config"]["axis"] = axis[0]
        kind = keras3.Sequential if type(model).__name__ == "Sequential" else keras3.Model
        twin = kind.from_config(config)
        twin.set_weights(model.get_weights())
        a = np.asarray(model(sample, training=False))
        b = np.asarray(twin(sample, training=False))
    except Exception:  # any layer or config keras 3 reads differently: convert the tf_keras model itself
        return None
    if a.shape != b.shape or not np.all(np.abs(a - b) <= 1e-4 * max(1.0, float(np.abs(a).max()))):
        return None
    return twin

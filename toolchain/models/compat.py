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

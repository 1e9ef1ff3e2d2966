"""Quantization-aware training: tfmot fake-quant nodes, fine-tuned, then converted to full int8."""

from __future__ import annotations

import re

from toolchain.compress.common import clone, finetune
from toolchain.config.recipe import QatStep
from toolchain.errors import CompressionError


def tfmot():
    from toolchain.models.compat import tf

    tf()
    import tensorflow_model_optimization as m

    return m


def quantize(model):
    """Annotate and apply the default 8-bit scheme; unsupported layers fail with their name and a hint."""
    try:
        return tfmot().quantization.keras.quantize_model(model)
    except (RuntimeError, ValueError) as exc:
        m = re.search(r"Layer (\S+?):<class '([\w.]+)'>", str(exc))
        what = f"layer {m.group(1)!r} ({m.group(2).rsplit('.', 1)[-1]})" if m else str(exc).splitlines()[0]
        raise CompressionError(
            f"qat: tensorflow-model-optimization cannot quantize {what}; replace it with a supported layer, "
            "annotate it with a QuantizeConfig, or drop the qat step and use post-training int8"
        ) from None


def run(model, step: QatStep, data, teacher_train, scope) -> tuple[object, dict]:
    with scope.scope():
        q = quantize(clone(model))
    history = finetune(q, step, data.x_train, data.y_train, teacher_train, scope, "qat")
    fake_quant = sum(1 for layer in q.layers if type(layer).__name__.startswith("Quantize"))
    return q, {"quantized_layers": fake_quant, "history": history}

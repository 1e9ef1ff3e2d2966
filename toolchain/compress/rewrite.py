"""Replace an op a runtime lacks by an equivalent it has, then (optionally) fine-tune: ``{step: rewrite, gelu: ...}``.

GELU (tflite-micro has no kernel for it) becomes one of its two published approximations, which the TFLite
converter leaves as ops every runtime here runs:

- ``sigmoid``: x * sigmoid(1.702 x)  -> LOGISTIC, MUL
- ``tanh``: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))  -> MUL, ADD, TANH (the converter folds
  ``tf.nn.gelu(approximate=True)`` back into GELU, so the form is written out)

Every Dense / Conv / Activation layer whose activation is GELU is rebuilt with the replacement; the weights stay.
"""

from __future__ import annotations

from toolchain.compress.common import finetune, top1
from toolchain.models.compat import keras
from toolchain.models.custom import register


def _is_gelu(activation) -> bool:
    name = activation if isinstance(activation, str) else getattr(activation, "__name__", "")
    return name == "gelu"


def rewrite_gelu(model, form: str) -> tuple[object, list[str]]:
    """A copy of ``model`` with every GELU activation replaced by ``form``; the layers rewritten."""
    k = keras()
    form_layer = register()["GeluForm"]
    changed: list[str] = []

    def clone_layer(layer):
        config = layer.get_config()
        if _is_gelu(getattr(layer, "activation", None)):
            config["activation"] = form_layer(form=form)
            changed.append(layer.name)
        return layer.__class__.from_config(config)

    copy = k.models.clone_model(model, clone_function=clone_layer)
    copy.set_weights(model.get_weights())
    return copy, changed


def run(model, step, data, teacher_train, scope) -> tuple[object, dict]:
    with scope.scope():
        new, changed = rewrite_gelu(model, step.gelu)
    report: dict = {"rewritten": changed, "float_top1_rewritten": top1(new, data.x_eval, data.y_eval)}
    if step.epochs:
        report["history"] = finetune(new, step, data.x_train, data.y_train, teacher_train, scope, "rewrite")
    return new, report

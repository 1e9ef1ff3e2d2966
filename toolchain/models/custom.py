"""The toolchain's own Keras objects, registered (package ``toolchain``) before any model is built or loaded, so
that a saved model using them loads by name: the Transformer's ``PositionEmbedding`` and the two GELU forms the
``rewrite`` step puts in place of GELU (``compress.rewrite``)."""

from __future__ import annotations

import math

from toolchain.models.compat import keras, tf

_objects: dict = {}


def register() -> dict:
    """{name: class or function}, registered once."""
    if _objects:
        return _objects
    k, t = keras(), tf()

    @k.utils.register_keras_serializable(package="toolchain")
    class PositionEmbedding(k.layers.Layer):
        """Adds a learnt ``(tokens, features)`` term."""

        def build(self, input_shape):
            self.position = self.add_weight(
                name="position", shape=(1, *input_shape[1:]), initializer=k.initializers.RandomNormal(0, 0.02)
            )

        def call(self, x):
            return x + self.position

    @k.utils.register_keras_serializable(package="toolchain")
    def gelu_sigmoid(x):
        """GELU as x * sigmoid(1.702 x): LOGISTIC and MUL."""
        return x * t.sigmoid(1.702 * x)

    @k.utils.register_keras_serializable(package="toolchain")
    def gelu_tanh(x):
        """GELU's tanh form, written out (the converter folds ``tf.nn.gelu(approximate=True)`` back into GELU)."""
        return 0.5 * x * (1.0 + t.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)))

    @k.utils.register_keras_serializable(package="toolchain")
    class GeluForm(k.layers.Layer):
        """A GELU approximation as a layer, usable as a layer's ``activation`` (an object saved models, .h5
        included, load by its registered name, where a plain function is not found again)."""

        def __init__(self, form: str = "sigmoid", **kwargs):
            super().__init__(**kwargs)
            self.form = form

        def call(self, x):
            return (gelu_sigmoid if self.form == "sigmoid" else gelu_tanh)(x)

        def get_config(self):
            return {**super().get_config(), "form": self.form}

    k.utils.get_custom_objects()["GeluForm"] = GeluForm  # .h5 files look activations up by the class's own name
    _objects.update(
        PositionEmbedding=PositionEmbedding, GeluForm=GeluForm, gelu_sigmoid=gelu_sigmoid, gelu_tanh=gelu_tanh
    )
    return _objects

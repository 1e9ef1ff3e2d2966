"""The toolchain's own Keras objects, registered (package ``toolchain``) before any model is built or loaded, so
that a saved model using them loads by name: the Transformer's ``PositionEmbedding`` and the two GELU forms the
``rewrite`` step puts in place of GELU (``compress.rewrite``)."""

from __future__ import annotations

import math

from toolchain.models.compat import keras, tf

_objects: dict = {}
#: the score a masked (future) token gets before the softmax: far enough below any real score that its weight is
#: 0 (e^-20 < 1e-8; int8 softmax outputs step by 1/256), near enough that an int8 grid spanning it keeps the real
#: scores' resolution (a -1e9 would not)
MASKED = -20.0


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

    @k.utils.register_keras_serializable(package="toolchain")
    class CausalAttention(k.layers.Layer):
        """Multi-head attention of projected ``[q, k, v]`` (each ``(tokens, dim)``) where a token sees itself and
        the tokens before it: the decoder's training graph (its export writes the same attention out, with a
        KV cache: ``models.decoder``)."""

        def __init__(self, heads: int = 4, **kwargs):
            super().__init__(**kwargs)
            self.heads = heads

        def call(self, qkv):
            q, k_, v = qkv
            n, d = t.shape(q)[1], q.shape[-1]

            def split(x):  # (batch, tokens, dim) -> (batch, heads, tokens, dim / heads)
                return t.transpose(t.reshape(x, [-1, n, self.heads, d // self.heads]), [0, 2, 1, 3])

            s = t.matmul(split(q), split(k_), transpose_b=True) / math.sqrt(d // self.heads)
            causal = t.linalg.band_part(t.ones([n, n], t.bool), -1, 0)
            s = t.where(causal, s, MASKED)
            out = t.matmul(t.nn.softmax(s, axis=-1), split(v))
            return t.reshape(t.transpose(out, [0, 2, 1, 3]), [-1, n, d])

        def get_config(self):
            return {**super().get_config(), "heads": self.heads}

    k.utils.get_custom_objects()["GeluForm"] = GeluForm  # .h5 files look activations up by the class's own name
    _objects.update(
        PositionEmbedding=PositionEmbedding,
        GeluForm=GeluForm,
        gelu_sigmoid=gelu_sigmoid,
        gelu_tanh=gelu_tanh,
        CausalAttention=CausalAttention,
    )
    return _objects

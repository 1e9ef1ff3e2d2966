"""The toolchain's own attention model: a small Transformer encoder over an image's rows (or any ``(tokens,
features[, 1])`` input), built from scratch like a Keras application (``model.application: Transformer``).

Each row is a token: a Dense embedding, a learnt position term, ``blocks`` post-norm encoder blocks
(``MultiHeadAttention``, residual, ``LayerNormalization``, a feed-forward of ``ffn`` with ``activation``), mean
pooling over the tokens and a softmax head. Its ops are the ones transformers bring to a device: BATCH_MATMUL,
SOFTMAX, the LayerNorm chain (MEAN, SQUARED_DIFFERENCE, RSQRT) and GELU.
"""

from __future__ import annotations

from toolchain.models.compat import keras
from toolchain.models.custom import register


def build_transformer(spec) -> object:
    """The encoder for a ``ModelSpec`` with ``application: Transformer`` (its ``transformer`` block, or defaults)."""
    from toolchain.config.recipe import TransformerSpec

    t = spec.transformer or TransformerSpec()
    k = keras()
    layers = k.layers
    shape = tuple(spec.input_shape)
    tokens, features = shape[0], shape[1] * shape[2]
    x_in = k.Input(shape, name="x")
    h = layers.Reshape((tokens, features), name="tokens")(x_in)
    h = layers.Dense(t.dim, name="embed")(h)
    h = register()["PositionEmbedding"](name="position")(h)
    for b in range(t.blocks):
        attention = layers.MultiHeadAttention(num_heads=t.heads, key_dim=t.dim // t.heads, name=f"attention_{b}")
        up = layers.Dense(t.ffn, activation=t.activation, name=f"ffn_{b}_up")
        down = layers.Dense(t.dim, name=f"ffn_{b}_down")
        if t.norm == "pre":  # x + f(LayerNorm(x)): the norm's output feeds only the sub-block (SmoothQuant's case)
            n = layers.LayerNormalization(name=f"norm_{b}a")(h)
            h = layers.Add(name=f"residual_{b}a")([h, attention(n, n)])
            h = layers.Add(name=f"residual_{b}b")([h, down(up(layers.LayerNormalization(name=f"norm_{b}b")(h)))])
        else:
            h = layers.LayerNormalization(name=f"norm_{b}a")(layers.Add(name=f"residual_{b}a")([h, attention(h, h)]))
            h = layers.LayerNormalization(name=f"norm_{b}b")(layers.Add(name=f"residual_{b}b")([h, down(up(h))]))
    if t.norm == "pre":
        h = layers.LayerNormalization(name="norm_out")(h)
    h = layers.GlobalAveragePooling1D(name="pool")(h)
    out = layers.Dense(spec.classes, activation="softmax", name="head")(h)
    return k.Model(x_in, out, name="transformer")

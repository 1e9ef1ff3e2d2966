"""``application: Decoder``: a character-level decoder language model, and its export with an explicit KV cache.

Training graph (Keras): tokens ``(context,)`` -> embedding + learnt positions -> ``blocks`` pre-norm blocks
(causal multi-head attention, a feed-forward of ``ffn``) -> LayerNorm -> logits over the vocabulary at every
position (the next token's). Its layers are named (``embed``, ``pos``, ``ln_{i}a``, ``q_{i}``, ``k_{i}``,
``v_{i}``, ``o_{i}``, ``ln_{i}b``, ``up_{i}``, ``down_{i}``, ``ln_f``, ``head``) so that the export finds them.

The export is one ``.tflite`` with two signatures over the same weights, the cache passed in and out as tensors
(no resource variables: its bytes are the tensors' sizes, read from the artifact):

- ``prefill``: ``tokens`` (1, context) int32 -> ``logits`` (1, context, vocab) and the cache ``k_{i}``, ``v_{i}``
  (1, heads, context, dim / heads) per block; a prompt shorter than the context is padded (what follows it is
  masked by the decode steps, then overwritten);
- ``decode``: ``token`` (1, 1) int32, ``pos`` (1,) int32 and the cache -> ``logits`` (1, vocab) and the cache with
  position ``pos`` written (a one-hot SELECT, copied not recomputed, so an int8 cache does not drift); the query
  sees positions 0..pos.
"""

from __future__ import annotations

import math

import numpy as np

from toolchain.config.recipe import ModelSpec
from toolchain.errors import ConversionError
from toolchain.models.compat import keras, tf

CACHE = ("k", "v")
FIXED = ("token", "pos")  # the decode inputs that are not the cache


def cache_inputs(blob: bytes) -> dict[str, dict]:
    """The decode signature's cache inputs: {name: LiteRT's input details}."""
    from ai_edge_litert.interpreter import Interpreter

    return cache_of(signatures(Interpreter(model_content=blob))[1])


def signatures(interpreter) -> tuple:
    """The (prefill, decode) signature runners of a decoder artifact's interpreter."""
    if set(interpreter.get_signature_list()) != {"prefill", "decode"}:
        raise ConversionError(
            f"a decoder artifact has signatures prefill and decode, not {interpreter.get_signature_list()}"
        )
    return interpreter.get_signature_runner("prefill"), interpreter.get_signature_runner("decode")


def cache_of(decode) -> dict[str, dict]:
    """A decode runner's cache inputs: {name: LiteRT's input details}."""
    return {n: d for n, d in decode.get_input_details().items() if n not in FIXED}


def build_decoder(spec: ModelSpec):
    from toolchain.models.custom import register

    objects = register()
    k = keras()
    d = spec.decoder
    act = objects["GeluForm"](name="gelu") if d.activation == "gelu" else "relu"
    tokens = k.Input((d.context,), dtype="int32", name="tokens")
    x = k.layers.Embedding(spec.classes, d.dim, name="embed")(tokens)
    x = objects["PositionEmbedding"](name="pos")(x)
    for i in range(d.blocks):
        h = k.layers.LayerNormalization(epsilon=1e-5, name=f"ln_{i}a")(x)
        q, kk, v = (k.layers.Dense(d.dim, name=f"{n}_{i}")(h) for n in ("q", "k", "v"))
        a = objects["CausalAttention"](d.heads, name=f"attn_{i}")([q, kk, v])
        x = k.layers.Add(name=f"res_{i}a")([x, k.layers.Dense(d.dim, name=f"o_{i}")(a)])
        h = k.layers.LayerNormalization(epsilon=1e-5, name=f"ln_{i}b")(x)
        h = k.layers.Dense(d.dim, name=f"down_{i}")(k.layers.Dense(d.ffn, activation=act, name=f"up_{i}")(h))
        x = k.layers.Add(name=f"res_{i}b")([x, h])
    x = k.layers.LayerNormalization(epsilon=1e-5, name="ln_f")(x)
    return k.Model(tokens, k.layers.Dense(spec.classes, name="head")(x), name="decoder")


def cache_names(blocks: int) -> list[str]:
    return [f"{c}_{i}" for i in range(blocks) for c in CACHE]


def _shape(model) -> tuple[int, int, int, int]:
    """(context, blocks, heads, head width) of a built decoder."""
    context = int(model.inputs[0].shape[1])
    blocks = sum(1 for layer in model.layers if layer.name.startswith("attn_"))
    attn = model.get_layer("attn_0")
    return context, blocks, attn.heads, model.get_layer("q_0").units // attn.heads


def export(model, folder) -> bytes:
    """The float ``.tflite`` with ``prefill`` and ``decode`` (module docstring); ``folder``: a scratch folder for
    the SavedModel the converter reads."""
    from toolchain.models.custom import MASKED

    t = tf()
    context, blocks, heads, width = _shape(model)
    dim = heads * width
    layer = model.get_layer
    pos_table = layer("pos").position  # (1, context, dim)
    iota = t.constant(np.arange(context, dtype=np.int32))
    scale = 1.0 / math.sqrt(width)

    def heads_of(x, n):  # (1, n, dim) -> (1, heads, n, width)
        return t.transpose(t.reshape(x, [1, n, heads, width]), [0, 2, 1, 3])

    def ffn(i, x):
        h = layer(f"ln_{i}b")(x)
        return x + layer(f"down_{i}")(layer(f"up_{i}")(h))

    def attend(i, q, k_, v, visible, n):
        s = t.where(visible, t.matmul(q, k_, transpose_b=True) * scale, MASKED)
        out = t.transpose(t.matmul(t.nn.softmax(s, axis=-1), v), [0, 2, 1, 3])
        return layer(f"o_{i}")(t.reshape(out, [1, n, dim]))

    causal = t.constant(np.tril(np.ones((context, context), dtype=bool))[None, None])

    class Exported(t.Module):
        @t.function(input_signature=[t.TensorSpec([1, context], t.int32, name="tokens")])
        def prefill(self, tokens):
            x = layer("embed")(tokens) + pos_table
            out = {}
            for i in range(blocks):
                h = layer(f"ln_{i}a")(x)
                q, k_, v = (heads_of(layer(f"{n}_{i}")(h), context) for n in ("q", "k", "v"))
                x = x + attend(i, q, k_, v, causal, context)
                x = ffn(i, x)
                out[f"k_{i}"], out[f"v_{i}"] = k_, v
            return {"logits": layer("head")(layer("ln_f")(x)), **out}

        @t.function(
            input_signature=[t.TensorSpec([1, 1], t.int32, name="token"), t.TensorSpec([1], t.int32, name="pos")]
            + [t.TensorSpec([1, heads, context, width], t.float32, name=n) for n in cache_names(blocks)]
        )
        def decode(self, token, pos, *cache):
            x = layer("embed")(token) + t.reshape(t.gather(pos_table[0], pos), [1, 1, dim])
            here = t.reshape(t.equal(iota, pos), [1, 1, context, 1])  # the cache row this token writes
            visible = t.reshape(t.less_equal(iota, pos), [1, 1, 1, context])
            out = {}
            for i in range(blocks):
                h = layer(f"ln_{i}a")(x)
                q, k_new, v_new = (heads_of(layer(f"{n}_{i}")(h), 1) for n in ("q", "k", "v"))
                k_ = t.where(here, k_new, cache[2 * i])
                v = t.where(here, v_new, cache[2 * i + 1])
                x = x + attend(i, q, k_, v, visible, 1)
                x = ffn(i, x)
                out[f"k_{i}"], out[f"v_{i}"] = k_, v
            return {"logits": t.reshape(layer("head")(layer("ln_f")(x)), [1, -1]), **out}

    m = Exported()
    m.model = model  # tracked: the functions read its variables
    path = str(folder / "decoder_savedmodel")
    t.saved_model.save(m, path, signatures={"prefill": m.prefill, "decode": m.decode})
    conv = t.lite.TFLiteConverter.from_saved_model(path, signature_keys=["prefill", "decode"])
    return bytes(conv.convert())

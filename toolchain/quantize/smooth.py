"""SmoothQuant (Xiao et al. 2023): move per-channel activation outliers into the next layer's weights.

For a tensor X feeding only Dense layers (weights W), a per-channel scale s_j = max|X_j|^alpha / max|W_j|^(1-alpha)
makes X' = X / s and W' = diag(s) W: the product, hence the float function, is unchanged, but X' has its outlier
channels pulled in, so one int8 scale for the whole tensor (activations are per-tensor) loses less on the others.
X / s is folded into the layer producing X: a LayerNormalization's gamma and beta, or a linear Dense's kernel
columns and bias. A producer whose output feeds anything else (a residual Add) is left alone: scaling it would
change that path. Channel maxima come from the calibration split.
"""

from __future__ import annotations

import numpy as np

from toolchain.models.compat import keras


def _consumers(layer) -> list:
    return [node.outbound_layer for node in layer._outbound_nodes]


def _producers(model) -> list[tuple[object, list]]:
    """(producer, its Dense consumers) pairs SmoothQuant can rewrite."""
    k = keras()
    L = k.layers
    pairs = []
    for layer in model.layers:
        linear = isinstance(layer, L.Dense) and getattr(layer.activation, "__name__", "") == "linear"
        norm = False
        if isinstance(layer, L.LayerNormalization) and layer.scale and layer.center:
            axis = list(layer.axis) if isinstance(layer.axis, (list, tuple)) else [layer.axis]
            norm = axis in ([-1], [len(layer.output.shape) - 1])  # over the channels only
        users = _consumers(layer)
        if (linear or norm) and users and all(isinstance(u, L.Dense) for u in users):
            pairs.append((layer, users))
    return pairs


def smooth(model, xs: list[np.ndarray], alpha: float) -> tuple[object, list[dict]]:
    """A copy of ``model`` smoothed on ``xs`` (the calibration split) and, per producer, the activation's channel
    range before and after: the largest channel maximum over the median one."""
    k = keras()
    copy = k.models.clone_model(model)
    copy.set_weights(model.get_weights())
    pairs = _producers(copy)
    if not pairs:
        return copy, []
    probe = k.Model(copy.inputs, [p.output for p, _ in pairs])
    outs = probe.predict(xs if len(xs) > 1 else xs[0], batch_size=64, verbose=0)
    outs = outs if isinstance(outs, list) else [outs]
    rows = []
    for (producer, users), out in zip(pairs, outs, strict=True):
        act = np.abs(out.reshape(-1, out.shape[-1])).max(axis=0)
        wmax = np.max([np.abs(u.get_weights()[0]).max(axis=1) for u in users], axis=0)
        s = np.power(np.maximum(act, 1e-5), alpha) / np.power(np.maximum(wmax, 1e-5), 1 - alpha)
        s = np.where(act > 0, s, 1.0).astype(np.float32)
        weights = producer.get_weights()
        if isinstance(producer, k.layers.LayerNormalization):
            producer.set_weights([weights[0] / s, weights[1] / s])
        else:
            producer.set_weights([weights[0] / s[None, :], *(w / s for w in weights[1:])])
        for u in users:
            w = u.get_weights()
            u.set_weights([w[0] * s[:, None], *w[1:]])
        after = act / s
        rows.append(
            {
                "layer": producer.name,
                "into": [u.name for u in users],
                "channel_range_before": float(act.max() / max(np.median(act), 1e-12)),
                "channel_range_after": float(after.max() / max(np.median(after), 1e-12)),
                "max_before": float(act.max()),
                "max_after": float(after.max()),
            }
        )
    return copy, rows

"""Structured L1 filter pruning (Li et al., "Pruning Filters for Efficient ConvNets", 2017).

A *channel group* is a Conv2D (the producer) whose output channels flow only through channel-wise layers
(BatchNorm, activations, padding, pooling, depthwise convs) into Conv2D/Dense consumers. Removing a
producer filter then removes that channel everywhere in the group and the matching input weights of the
consumers. A channel that reaches an Add, a Concatenate, a reshape or a model output is constrained by
other branches and is left alone: in MobileNetV2 that leaves mostly the expansion channels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from toolchain.compress.common import finetune, macs_and_params, reestimate_batchnorm, top1
from toolchain.config.recipe import PruneStep
from toolchain.errors import CompressionError
from toolchain.models.compat import keras


@dataclass
class Group:
    producer: str
    passthrough: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    flattened: dict[str, int] = field(default_factory=dict)  # Dense consumer behind a Flatten -> spatial positions


def _channelwise(layer) -> bool:
    L = keras().layers
    if isinstance(layer, L.DepthwiseConv2D):
        return layer.depth_multiplier == 1
    return isinstance(
        layer,
        (
            L.BatchNormalization,
            L.Activation,
            L.ReLU,
            L.ZeroPadding2D,
            L.MaxPooling2D,
            L.AveragePooling2D,
            L.GlobalAveragePooling2D,
            L.GlobalMaxPooling2D,
            L.Dropout,
        ),
    )


def _consumers(model, layer) -> list:
    names = {layer.name for layer in model.layers}
    return [node.outbound_layer for node in layer._outbound_nodes if node.outbound_layer.name in names]


def channel_groups(model) -> list[Group]:
    """Every producer whose output channels can be removed without touching another branch."""
    L = keras().layers
    outputs = {t.name for t in model.outputs}
    groups = []
    for layer in model.layers:
        if type(layer) is not L.Conv2D or layer.groups != 1 or len(layer._inbound_nodes) != 1:
            continue
        group, frontier, ok = Group(layer.name), [layer], True
        while frontier and ok:
            current = frontier.pop()
            if current.output.name in outputs:
                ok = False
                break
            nxt = _consumers(model, current)
            if not nxt:
                ok = False
            for c in nxt:
                if len(c._inbound_nodes) != 1:
                    ok = False
                elif _channelwise(c):
                    group.passthrough.append(c.name)
                    frontier.append(c)
                elif type(c) in (L.Conv2D, L.Dense) and (not isinstance(c, L.Conv2D) or c.groups == 1):
                    group.consumers.append(c.name)
                elif (
                    isinstance(c, L.Flatten)
                    and len(c.input.shape) == 4
                    and [type(d) for d in _consumers(model, c)] == [L.Dense]
                ):
                    dense = _consumers(model, c)[0]
                    group.passthrough.append(c.name)
                    group.consumers.append(dense.name)
                    group.flattened[dense.name] = int(np.prod(c.input.shape[1:3]))
                else:
                    ok = False
        if ok and group.consumers:
            groups.append(group)
    return groups


def _slice(layer, weights: list[np.ndarray], out_keep=None, in_keep=None) -> list[np.ndarray]:
    L = keras().layers
    w = [a.copy() for a in weights]
    if isinstance(layer, (L.DepthwiseConv2D, L.BatchNormalization)) and out_keep is None:
        return w
    if isinstance(layer, L.DepthwiseConv2D):  # pass-through: channels are its output channels
        w[0] = w[0][:, :, out_keep, :]
        if len(w) > 1:
            w[1] = w[1][out_keep]
    elif isinstance(layer, L.BatchNormalization):
        w = [a[out_keep] for a in w]
    elif isinstance(layer, L.Conv2D):
        if in_keep is not None:
            w[0] = w[0][:, :, in_keep, :]
        if out_keep is not None:
            w[0] = w[0][..., out_keep]
            if len(w) > 1:
                w[1] = w[1][out_keep]
    elif isinstance(layer, L.Dense) and in_keep is not None:
        w[0] = w[0][in_keep, :]
    return w


def keep_indices(kernel: np.ndarray, ratio: float, multiple: int) -> np.ndarray:
    """The filters with the largest L1 norms, ``1 - ratio`` of them (rounded up to ``multiple``)."""
    n = kernel.shape[-1]
    norms = np.abs(kernel).reshape(-1, n).sum(axis=0)
    keep = int(np.ceil(n * (1 - ratio) / multiple) * multiple)
    keep = min(n, max(multiple, keep))
    return np.sort(np.argsort(-norms, kind="stable")[:keep])


def prune_filters(model, ratio: float, multiple: int = 1, keep: dict[str, np.ndarray] | None = None):
    """A new, smaller model with ``ratio`` of each group's filters removed (smallest L1 first).

    ``keep`` may fix the kept channels per producer instead (tests use it). Returns (model, groups, keep).
    """
    groups = channel_groups(model)
    if not groups:
        raise CompressionError(
            "prune l1_filter: no convolution's output channels can be removed without touching a residual, "
            "concatenation or output"
        )
    keep = dict(keep or {})
    for g in groups:
        keep.setdefault(g.producer, keep_indices(model.get_layer(g.producer).get_weights()[0], ratio, multiple))
    role_out = {g.producer: keep[g.producer] for g in groups}
    role_out.update({p: keep[g.producer] for g in groups for p in g.passthrough})
    role_in = {c: keep[g.producer] for g in groups for c in g.consumers}
    for g in groups:  # Flatten orders (h, w, c) with the channel fastest: keep those rows of the Dense kernel
        channels = model.get_layer(g.producer).filters
        for dense, positions in g.flattened.items():
            role_in[dense] = (np.arange(positions)[:, None] * channels + keep[g.producer][None, :]).reshape(-1)
    config = model.get_config()
    for layer_cfg in config["layers"]:
        name = layer_cfg["config"]["name"]
        if name in keep:
            layer_cfg["config"]["filters"] = int(len(keep[name]))
    smaller = model.__class__.from_config(config)
    for layer in smaller.layers:
        old = model.get_layer(layer.name)
        if old.get_weights():
            layer.set_weights(_slice(old, old.get_weights(), role_out.get(layer.name), role_in.get(layer.name)))
    return smaller, groups, keep


def run(model, step: PruneStep, data, teacher_train, scope) -> tuple[object, dict]:
    before = macs_and_params(model)
    with scope.scope():
        smaller, groups, keep = prune_filters(model, step.target_sparsity, step.channel_multiple)
    removed = {g.producer: int(model.get_layer(g.producer).filters - len(keep[g.producer])) for g in groups}
    acc_pruned = top1(smaller, data.x_eval, data.y_eval)
    reestimate_batchnorm(smaller, data.x_train)
    acc_bn = top1(smaller, data.x_eval, data.y_eval)
    history = finetune(smaller, step, data.x_train, data.y_train, teacher_train, scope, "prune l1_filter")
    after = macs_and_params(smaller)
    return smaller, {
        "groups": len(groups),
        "channels_removed": sum(removed.values()),
        "channels_removed_per_layer": removed,
        "macs_before": before["macs"],
        "macs_after": after["macs"],
        "macs_removed": 1 - after["macs"] / before["macs"],
        "params_before": before["params"],
        "params_after": after["params"],
        "top1_after_removal": acc_pruned,
        "top1_after_batchnorm_reestimate": acc_bn,
        "history": history,
    }

"""Low-rank factorization: a layer's kernel replaced by a product of smaller ones, then fine-tuned.

- Dense and 1x1 Conv2D (a Dense per pixel): truncated SVD, W (in x out) ~ (U S^1/2)(S^1/2 V^T): two layers
  with ``rank`` units / channels between them (Denton et al., 2014).
- k x k Conv2D, ``conv: spatial``: a k x 1 conv to ``rank`` channels, then a 1 x k conv (Jaderberg et al., 2014,
  scheme 2; the SVD of the kernel reshaped to (kh * cin) x (kw * cout), as Tai et al., 2016).
- k x k Conv2D, ``conv: tucker``: 1x1 (cin -> r1), k x k (r1 -> r2), 1x1 (r2 -> cout) from the kernel's
  higher-order SVD over its input and output channel modes (Kim et al., 2016).

The rank is chosen per layer: the smallest that keeps ``energy`` of the squared singular values, or the largest
whose factorized layers remove ``macs_removed`` of the layer's MACs. A layer whose factorized form would cost as
many MACs as the original (or more) is left alone. The bias and activation go on the last layer of the
replacement, the strides and padding on the layers that move over the image the same way as the original.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from toolchain.compress.common import clone, finetune, macs_and_params, reestimate_batchnorm, top1
from toolchain.config.recipe import LowRankStep
from toolchain.errors import CompressionError
from toolchain.models.compat import keras

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """One layer's factorization: the replacement kernels (last one gets the bias) and what it costs."""

    layer: str
    kind: str  # svd | spatial | tucker
    rank: int | list[int]
    energy: float  # share of the squared singular values kept
    kernels: list[np.ndarray]
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int

    def report(self) -> dict:
        return {
            "layer": self.layer,
            "kind": self.kind,
            "rank": self.rank,
            "energy_kept": round(self.energy, 4),
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "params_before": self.params_before,
            "params_after": self.params_after,
        }


def _rank_for_energy(s: np.ndarray, energy: float) -> int:
    share = np.cumsum(s**2) / max(float(np.sum(s**2)), 1e-30)
    return int(min(len(s), np.searchsorted(share, energy - 1e-9) + 1))


def _kept(s: np.ndarray, r: int) -> float:
    return float(np.sum(s[:r] ** 2) / max(float(np.sum(s**2)), 1e-30))


def svd_factors(w: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """(in x rank, rank x out) factors of the matrix ``w`` (in x out) whose product is its best rank-``rank`` fit."""
    u, s, vt = np.linalg.svd(w.astype(np.float64), full_matrices=False)
    root = np.sqrt(s[:rank])
    return (u[:, :rank] * root).astype(np.float32), (root[:, None] * vt[:rank]).astype(np.float32)


def spatial_factors(w: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """A (kh, 1, cin, rank) and a (1, kw, rank, cout) kernel composing to about ``w`` (kh, kw, cin, cout)."""
    kh, kw, cin, cout = w.shape
    a, b = svd_factors(w.transpose(0, 2, 1, 3).reshape(kh * cin, kw * cout), rank)
    return a.reshape(kh, cin, rank)[:, None], b.reshape(rank, kw, cout).transpose(1, 0, 2)[None]


def tucker_factors(w: np.ndarray, r_in: int, r_out: int) -> list[np.ndarray]:
    """1x1 (cin -> r_in), core (kh, kw, r_in, r_out) and 1x1 (r_out -> cout) kernels (HOSVD of modes 3 and 4)."""
    kh, kw, cin, cout = w.shape
    w64 = w.astype(np.float64)
    u_in = np.linalg.svd(w64.transpose(2, 0, 1, 3).reshape(cin, -1), full_matrices=False)[0][:, :r_in]
    u_out = np.linalg.svd(w64.transpose(3, 0, 1, 2).reshape(cout, -1), full_matrices=False)[0][:, :r_out]
    core = np.einsum("hwco,cr,os->hwrs", w64, u_in, u_out)
    return [u_in[None, None].astype(np.float32), core.astype(np.float32), u_out.T[None, None].astype(np.float32)]


def _singular(m: np.ndarray) -> np.ndarray:
    return np.linalg.svd(m.astype(np.float64), compute_uv=False)


def _svd(w: np.ndarray, conv: bool, step: LowRankStep, budget, out_positions: int, bias: int) -> tuple:
    """Dense or 1x1 Conv2D: truncated SVD of the kernel matrix into two layers of rank r."""
    m = w.reshape(-1, w.shape[-1])
    cin, cout = m.shape
    s = _singular(m)  # a strided 1x1 conv: the first layer strides, both run at the output's size
    r = _rank_for_energy(s, step.energy) if budget is None else int(budget // (out_positions * (cin + cout)))
    r = max(1, min(r, len(s)))
    a, b = svd_factors(m, r)
    if conv:
        a, b = a[None, None], b[None, None]
    return [a, b], "svd", r, _kept(s, r), out_positions * r * (cin + cout), r * (cin + cout) + bias


def _spatial(layer, w: np.ndarray, step: LowRankStep, budget, out_positions: int, bias: int) -> tuple:
    """kxk Conv2D: spatial SVD into a kx1 and a 1xk convolution of rank r."""
    kh, kw, cin, cout = w.shape
    ho = int(layer.output.shape[1])
    win = int(layer.input.shape[2])
    per_rank = ho * win * kh * cin + out_positions * kw * cout
    s = _singular(w.transpose(0, 2, 1, 3).reshape(kh * cin, kw * cout))
    r = _rank_for_energy(s, step.energy) if budget is None else int(budget // per_rank)
    r = max(1, min(r, len(s)))
    return list(spatial_factors(w, r)), "spatial", r, _kept(s, r), per_rank * r, r * (kh * cin + kw * cout) + bias


def _tucker(layer, w: np.ndarray, step: LowRankStep, budget, out_positions: int, bias: int) -> tuple:
    """kxk Conv2D: Tucker-2 into 1x1 (cin -> r1), kxk (r1 -> r2) and 1x1 (r2 -> cout) convolutions."""
    kh, kw, cin, cout = w.shape
    in_positions = int(np.prod(layer.input.shape[1:-1]))
    s_in = _singular(w.transpose(2, 0, 1, 3).reshape(cin, -1))
    s_out = _singular(w.transpose(3, 0, 1, 2).reshape(cout, -1))

    def cost(r1, r2):
        m = in_positions * cin * r1 + out_positions * (kh * kw * r1 * r2 + r2 * cout)
        return m, cin * r1 + kh * kw * r1 * r2 + r2 * cout + bias

    if budget is None:
        r1, r2 = _rank_for_energy(s_in, step.energy), _rank_for_energy(s_out, step.energy)
    else:  # the same share of each channel mode, the largest that fits the budget
        r1 = r2 = 1
        for rho in np.linspace(1.0, 0.0, 201)[:-1]:
            c1, c2 = max(1, int(round(rho * cin))), max(1, int(round(rho * cout)))
            if cost(c1, c2)[0] <= budget:
                r1, r2 = c1, c2
                break
    r1, r2 = max(1, min(r1, len(s_in))), max(1, min(r2, len(s_out)))
    kept = min(_kept(s_in, r1), _kept(s_out, r2))
    return tucker_factors(w, r1, r2), "tucker", [r1, r2], kept, *cost(r1, r2)


def plan_layer(layer, step: LowRankStep, keep_costlier: bool = False) -> Plan | str:
    """The factorization of one Dense or Conv2D layer, or why it is left alone (``keep_costlier``: also when it
    costs more MACs than the layer; tests compare full-rank factorizations with the original)."""
    L = keras().layers
    w = layer.get_weights()[0]
    bias = int(layer.use_bias) * w.shape[-1]
    params = int(w.size) + bias
    out_positions = int(np.prod(layer.output.shape[1:-1]))
    macs = out_positions * int(np.prod(w.shape[:-1])) * int(w.shape[-1])
    budget = (1 - step.macs_removed) * macs if step.macs_removed is not None else None
    if isinstance(layer, L.Dense) or (isinstance(layer, L.Conv2D) and w.shape[:2] == (1, 1)):
        plan = _svd(w, isinstance(layer, L.Conv2D), step, budget, out_positions, bias)
    elif step.conv == "spatial":
        plan = _spatial(layer, w, step, budget, out_positions, bias)
    else:
        plan = _tucker(layer, w, step, budget, out_positions, bias)
    kernels, kind, rank, kept, mac_after, par_after = plan
    if mac_after >= macs and not keep_costlier:
        return f"rank {rank} would cost {mac_after:,} MACs, the layer costs {macs:,}"
    if budget is not None and mac_after > budget:
        return f"even rank {rank} keeps {mac_after / macs:.0%} of its {macs:,} MACs"
    return Plan(layer.name, kind, rank, kept, kernels, macs, mac_after, params, par_after)


def _eligible(layer) -> str | None:
    """Why a layer cannot be factorized, or None."""
    L = keras().layers
    if type(layer) is L.Dense:
        return None
    if type(layer) is not L.Conv2D:
        return "not a Dense or Conv2D layer"
    if layer.groups != 1 or tuple(layer.dilation_rate) != (1, 1) or layer.data_format != "channels_last":
        return "grouped, dilated or channels-first convolution"
    return None


def _replacement(layer, plan: Plan) -> Callable:
    """A function building the replacement layers on a tensor (the last one gets the bias and activation)."""
    L = keras().layers
    cfg = layer.get_config()
    n = len(plan.kernels)
    built = []
    for i, kernel in enumerate(plan.kernels):
        last = i == n - 1
        common = {
            "name": f"{layer.name}_lr{i + 1}",
            "use_bias": bool(cfg["use_bias"]) and last,
            "activation": cfg["activation"] if last else None,
            "dtype": cfg.get("dtype"),
        }
        if isinstance(layer, L.Dense):
            built.append(L.Dense(kernel.shape[-1], **common))
            continue
        sh, sw = layer.strides
        if plan.kind == "svd":
            strides, padding = ((sh, sw), cfg["padding"]) if i == 0 else ((1, 1), "valid")
        elif plan.kind == "spatial":
            strides, padding = ((sh, 1) if i == 0 else (1, sw)), cfg["padding"]
        else:
            strides, padding = ((sh, sw), cfg["padding"]) if i == 1 else ((1, 1), "valid")
        built.append(L.Conv2D(kernel.shape[-1], kernel.shape[:2], strides=strides, padding=padding, **common))

    def apply(x):
        for i, new in enumerate(built):
            x = new(x)
            weights = [plan.kernels[i]]
            if new.use_bias:
                weights.append(layer.get_weights()[1])
            new.set_weights(weights)
        return x

    return apply


def rebuild(model, replace: dict[str, Callable]):
    """The functional graph of ``model`` run on fresh inputs, with the named layers replaced by functions of their
    input; every other layer is reused as it is (its weights shared with ``model``)."""
    k = keras()
    inputs = [k.Input(shape=t.shape[1:], dtype=t.dtype, name=t.name.split(":")[0]) for t in model.inputs]
    tensors = {str(id(old)): new for old, new in zip(model.inputs, inputs, strict=True)}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input:
                continue
            args, kwargs = node.map_arguments({i: [tensors[i]] for i in node.flat_input_ids})
            name = node.layer.name  # a replacement takes the layer's input alone
            outputs = replace[name](*args) if name in replace else node.layer(*args, **kwargs)
            flat = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            tensors.update(zip(node.flat_output_ids, flat, strict=True))
    outputs = [tensors[str(id(t))] for t in model.outputs]
    # a clone: every layer of the result has one inbound node and its own variables
    return clone(k.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name))


def factorize(model, step: LowRankStep, keep_costlier: bool = False):
    """A new model with the chosen layers factorized; returns (model, plans, skipped {layer: reason})."""
    plans, skipped = [], {}
    names = {layer.name for layer in model.layers}
    for pattern in step.layers:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise CompressionError(f"low_rank.layers: no layer matches {pattern!r}")
    for layer in model.layers:
        chosen = not step.layers or any(fnmatch.fnmatchcase(layer.name, p) for p in step.layers)
        if not chosen or not layer.get_weights():
            continue
        why = _eligible(layer)
        if why is None:
            planned = plan_layer(layer, step, keep_costlier)
            if isinstance(planned, Plan):
                plans.append(planned)
                continue
            why = planned
        if step.layers or type(layer).__name__ in ("Dense", "Conv2D"):
            skipped[layer.name] = why
    if not plans:
        raise CompressionError(
            "low_rank: no layer is worth factorizing at this rank setting "
            + (
                f"({'; '.join(f'{k}: {v}' for k, v in list(skipped.items())[:3])})"
                if skipped
                else "(no Dense or Conv2D)"
            )
        )
    replaced = {p.layer: _replacement(model.get_layer(p.layer), p) for p in plans}
    return rebuild(model, replaced), plans, skipped


def run(model, step: LowRankStep, data, teacher_train, scope) -> tuple[object, dict]:
    before = macs_and_params(model)
    with scope.scope():
        small, plans, skipped = factorize(model, step)
    for p in plans:
        log.info(
            "low_rank: %s %s rank %s keeps %.1f%% energy: %s -> %s MACs",
            p.layer,
            p.kind,
            p.rank,
            100 * p.energy,
            f"{p.macs_before:,}",
            f"{p.macs_after:,}",
        )
    acc_factorized = top1(small, data.x_eval, data.y_eval)
    reestimate_batchnorm(small, data.x_train)
    history = finetune(small, step, data.x_train, data.y_train, teacher_train, scope, "low_rank")
    after = macs_and_params(small)
    in_layers = sum(p.macs_before for p in plans)
    return small, {
        "layers": [p.report() for p in plans],
        "skipped": skipped,
        "factorized_macs_before": in_layers,
        "factorized_macs_after": sum(p.macs_after for p in plans),
        "factorized_macs_removed": 1 - sum(p.macs_after for p in plans) / in_layers,
        "macs_before": before["macs"],
        "macs_after": after["macs"],
        "params_before": before["params"],
        "params_after": after["params"],
        "top1_after_factorization": acc_factorized,
        "history": history,
    }

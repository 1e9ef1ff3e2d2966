"""Cross-layer equalization and high-bias absorption (Nagel et al. 2019, "Data-Free Quantization Through Weight
Equalization and Bias Correction"), on the float graph the converter will quantize (BatchNorm already folded).

For two linear ops in a row (conv, depthwise conv, dense; the first one's output read only by the second),
output channel ``c`` of the first is divided by ``s_c`` and input channel ``c`` of the second multiplied by it,
``s_c = sqrt(r1_c * r2_c) / r2_c`` with ``r`` the channel's largest absolute weight: both ranges become
``sqrt(r1_c * r2_c)``, which a per-tensor grid serves far better. This preserves the function only through an
activation with ``f(x / s) = f(x) / s`` for ``s > 0``: none or ReLU. **ReLU6 is not** (its clip at 6 would move to
``6 / s``), so pairs joined by ReLU6 (or any other activation) are left alone and counted in the report;
MobileNetV2 has few pairs to equalize for that reason.

High-bias absorption: after equalization, a channel whose ReLU input never fell below ``m_c > 0`` on the
calibration data gives ``m_c`` to the next layer's bias (``b1_c -= m_c``, ``b2 += W2 @ m``); exact on that data,
and applied only where the next layer sees no zero padding (dense, 1x1 or VALID convolutions).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from toolchain.quantize.graph import Graph, LinearOp

HOMOGENEOUS = ("NONE", "RELU")


@dataclass
class EqualizeReport:
    pairs: list[str] = field(default_factory=list)  # "first -> second" op output names
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    absorbed: int = 0  # channels whose bias moved to the next layer
    range_ratio_before: float = 0.0  # median over pairs of (largest / smallest channel range) of the first op
    range_ratio_after: float = 0.0


def _out_axis(op: LinearOp) -> int:
    return 3 if op.kind == "DEPTHWISE_CONV_2D" else 0


def _in_ranges(op: LinearOp, w: np.ndarray) -> np.ndarray:
    """Largest |w| per input channel of the second op."""
    if op.kind == "FULLY_CONNECTED":  # [out, in]
        return np.abs(w).max(axis=0)
    if op.kind == "CONV_2D":  # [out, kh, kw, in]
        return np.abs(w).max(axis=(0, 1, 2))
    return np.abs(w).max(axis=(0, 1, 2))  # depthwise [1, kh, kw, C], multiplier 1: input c = output c


def _scale_in(op: LinearOp, w: np.ndarray, s: np.ndarray) -> np.ndarray:
    return w * s.reshape((1, -1) if op.kind == "FULLY_CONNECTED" else (1, 1, 1, -1))


def _scale_out(op: LinearOp, w: np.ndarray, s: np.ndarray) -> np.ndarray:
    shape = [1] * w.ndim
    shape[_out_axis(op)] = -1
    return w / s.reshape(shape)


def _out_ranges(op: LinearOp, w: np.ndarray) -> np.ndarray:
    axis = _out_axis(op)
    return np.abs(w).max(axis=tuple(a for a in range(w.ndim) if a != axis))


def pairs(g: Graph) -> tuple[list[tuple[LinearOp, LinearOp]], dict[str, int]]:
    ops = g.linear_ops()
    by_index = {op.index: op for op in ops}
    found, skipped = [], {}

    def skip(reason):
        skipped[reason] = skipped.get(reason, 0) + 1

    for first in ops:
        readers = g.consumers(first.output)
        if len(readers) != 1 or readers[0] not in by_index or g.is_output(first.output):
            continue
        second = by_index[readers[0]]
        if second.input != first.output:
            continue
        if first.activation not in HOMOGENEOUS:
            skip(f"{first.activation} between the layers (not positively homogeneous)")
            continue
        w2 = g.array(second.weights)
        n = g.array(first.weights).shape[_out_axis(first)]
        if second.kind == "DEPTHWISE_CONV_2D" and w2.shape[3] != n:
            skip("depthwise multiplier > 1")
            continue
        if sum(x == first.weights for x in (o.weights for o in ops)) > 1 or first.weights == second.weights:
            skip("shared weights")
            continue
        found.append((first, second))
    return found, skipped


def equalize(g: Graph, sweeps: int = 20) -> EqualizeReport:
    """Equalize every eligible pair in place (repeated sweeps: a layer can be second of one pair and first of the
    next); returns what was done."""
    found, skipped = pairs(g)
    report = EqualizeReport(pairs=[f"{g.name(a.output)} -> {g.name(b.output)}" for a, b in found], skipped=skipped)
    before = [_spread(_out_ranges(a, g.array(a.weights))) for a, _ in found]
    for _ in range(sweeps):
        change = 0.0
        for first, second in found:
            w1, w2 = g.array(first.weights), g.array(second.weights)
            r1, r2 = _out_ranges(first, w1), _in_ranges(second, w2)
            ok = (r1 > 0) & (r2 > 0)
            s = np.ones_like(r1)
            s[ok] = np.sqrt(r1[ok] * r2[ok]) / r2[ok]
            change = max(change, float(np.abs(np.log(s)).max()) if len(s) else 0.0)
            g.set_array(first.weights, _scale_out(first, w1, s))
            if first.bias is not None:
                g.set_array(first.bias, g.array(first.bias) / s)
            g.set_array(second.weights, _scale_in(second, w2, s))
        if change < 1e-4:
            break
    after = [_spread(_out_ranges(a, g.array(a.weights))) for a, _ in found]
    report.range_ratio_before = float(np.median(before)) if before else 0.0
    report.range_ratio_after = float(np.median(after)) if after else 0.0
    return report


def absorb_high_bias(g: Graph, channel_min: dict[int, np.ndarray], report: EqualizeReport) -> None:
    """Move each always-positive ReLU channel's floor into the next layer's bias (see the module docstring)."""
    found, _ = pairs(g)
    for first, second in found:
        if first.activation != "RELU" or first.bias is None or second.bias is None or first.output not in channel_min:
            continue
        w2 = g.array(second.weights)
        if second.kind != "FULLY_CONNECTED" and second.padding == "SAME" and w2.shape[1:3] != (1, 1):
            continue
        m = np.maximum(channel_min[first.output], 0.0)
        if not np.any(m > 0):
            continue
        g.set_array(first.bias, g.array(first.bias) - m)
        if second.kind == "FULLY_CONNECTED":
            shift = w2 @ m
        elif second.kind == "CONV_2D":
            shift = np.einsum("ohwi,i->o", w2, m)
        else:
            shift = w2[0].sum(axis=(0, 1)) * m
        g.set_array(second.bias, g.array(second.bias) + shift)
        report.absorbed += int(np.sum(m > 0))


def _spread(r: np.ndarray) -> float:
    r = r[r > 0]
    return float(r.max() / r.min()) if len(r) else 1.0

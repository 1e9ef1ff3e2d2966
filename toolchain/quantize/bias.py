"""Bias correction (Nagel et al. 2019, section 4.2): weight quantization error ``dW = Q(W) - W`` shifts a layer's
expected output by ``dW @ E[x]``; subtracting that shift from the float bias removes it.

``Q(W)`` is the grid the converter really uses: the graph is quantized once (about 0.1 s), each layer's int8
weights and scales are read back and dequantized. ``E[x]`` is the per-channel mean of the layer's input on the
calibration data (the float graph's statistics); for convolutions every kernel tap sees that mean (zero padding
at the borders is ignored, as in the paper).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolchain.quantize.graph import Graph
from toolchain.tflite_model import TFLiteModel


@dataclass
class BiasReport:
    layers: int = 0  # layers corrected
    skipped: int = 0  # linear layers without a bias or without statistics
    mean_abs_shift: float = 0.0  # mean |dW @ E[x]| over corrected output channels
    max_abs_shift: float = 0.0


def _dequantized(m: TFLiteModel, blob_tensors, i: int) -> np.ndarray | None:
    t = m.tensors[i]
    q = blob_tensors(i)
    if q is None or t.dtype != "int8" or not t.scales:
        return None
    scales = np.asarray(t.scales, dtype=np.float64)
    shape = [1] * q.ndim
    if len(scales) > 1:
        shape[t.quantized_dimension] = -1
    return q.astype(np.float64) * scales.reshape(shape)


def correct(g: Graph, quantized: bytes, channel_mean: dict[int, np.ndarray]) -> BiasReport:
    """Correct every linear layer's bias in ``g`` in place, from the trial int8 model ``quantized``."""
    from ai_edge_litert import schema_py_generated as fb

    m = TFLiteModel(quantized)
    qm = fb.ModelT.InitFromObj(fb.Model.GetRootAs(quantized, 0))
    qsg = qm.subgraphs[0]

    def int8(i: int) -> np.ndarray | None:
        buf = qm.buffers[qsg.tensors[i].buffer]
        if buf.data is None or not len(buf.data):
            return None
        return np.asarray(buf.data, dtype=np.uint8).view(np.int8).reshape(m.tensors[i].shape)

    by_weights = {m.tensors[op.inputs[1]].name: op for op in m.ops if len(op.inputs) > 1 and op.inputs[1] >= 0}
    report, shifts = BiasReport(), []
    for op in g.linear_ops():
        qop = by_weights.get(g.name(op.weights))  # output names can move to a DEQUANTIZE; weights keep theirs
        mean = channel_mean.get(op.input)
        if op.bias is None or qop is None or mean is None or len(qop.inputs) < 2:
            report.skipped += 1
            continue
        wq = _dequantized(m, int8, qop.inputs[1])
        w = g.array(op.weights).astype(np.float64)
        if wq is None or wq.shape != w.shape:
            report.skipped += 1
            continue
        dw = wq - w
        if op.kind == "FULLY_CONNECTED":  # [out, in]
            shift = dw @ mean
        elif op.kind == "CONV_2D":  # [out, kh, kw, in]
            shift = np.einsum("ohwi,i->o", dw, mean)
        else:  # depthwise [1, kh, kw, C * multiplier]: output channel o reads input channel o // multiplier
            mult = dw.shape[3] // len(mean)
            shift = dw[0].sum(axis=(0, 1)) * np.repeat(mean, mult)
        bias = g.array(op.bias)
        g.set_array(op.bias, bias - shift.reshape(bias.shape).astype(np.float32))
        report.layers += 1
        shifts.append(np.abs(shift))
    if shifts:
        allv = np.concatenate(shifts)
        report.mean_abs_shift, report.max_abs_shift = float(allv.mean()), float(allv.max())
    return report

"""Quantization parameters optimized on the calibration split, layer by layer, not only measured:

- ``eq`` (EasyQuant, Wu et al. 2020): per linear layer, the scale of its input activation (one, a share of its
  minmax range) and of its weights (per output channel, a share of its largest |w|) chosen to maximize the cosine
  similarity of the layer's output with int8 input and weights against its float output, alternating between
  the two (two rounds); the weight scale is written by clipping the weights to it, the input's by its range.
- ``admm`` (Leng et al. 2018): the weights on the grid that reconstruct the layer's output from its quantized
  input best (least squares), by ADMM: a ridge step on continuous weights, a projection onto the grid, the
  dual step; 40 iterations with a growing penalty.
- ``adaround`` (Nagel et al. 2020): per weight, round up or down, learnt: a rectified sigmoid per weight trained
  (Adam, 600 steps) on the layer's output reconstruction plus a regularizer annealed from 20 to 2 that drives
  each to 0 or 1; then rounded.

Each works on CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED with float weights, on the pre-activation output
(bias and fused activation aside), from the float graph's own tensors on the calibration samples (up to ``ROWS``
output positions per layer, sampled). The result is written into the float graph as weights already on the
grid the converter (or ai-edge-quantizer, for 4-bit layers) will use: each output channel keeps its largest |w|,
so the quantizer's scale is the one optimized for and its rounding gives back exactly the integers chosen. No
format changes: the artifact is an ordinary int8 (or 4-bit) model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from toolchain.quantize.graph import Graph, LinearOp

log = logging.getLogger(__name__)
ROWS = 2048  # output positions sampled per layer
METHODS = ("eq", "admm", "adaround")


# --- the layer's problem: rows of its input and its weights as a matrix ----------------------------------------


@dataclass
class Layer:
    """One linear op's reconstruction problem. ``x``: (rows, D) for conv / dense, (rows, D, C) for depthwise (each
    output channel reads its own input channel's patch); ``w`` in the same layout as ``x``'s last axes: (C, D)
    or (D, C); the graph's weight tensor is ``w`` reshaped back (``shape``, ``kind``)."""

    op: LinearOp
    name: str
    x: np.ndarray
    w: np.ndarray
    shape: tuple
    bits: int = 8
    per_channel: bool = True
    input_range: tuple[float, float] | None = None
    report: dict = field(default_factory=dict)

    @property
    def depthwise(self) -> bool:
        return self.op.kind == "DEPTHWISE_CONV_2D"

    @property
    def levels(self) -> int:
        return 2 ** (self.bits - 1) - 1  # symmetric: 127 or 7

    def out(self, w: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
        x = self.x if x is None else x
        return np.einsum("rdc,dc->rc", x, w) if self.depthwise else x @ w.T

    def scale(self, w: np.ndarray | None = None) -> np.ndarray:
        """The quantizer's symmetric scale of ``w``: largest |w| per output channel (or of the tensor) / levels."""
        w = self.w if w is None else w
        m = np.abs(w).max(axis=0 if self.depthwise else 1) if self.per_channel else np.abs(w).max()
        m = np.maximum(m, 1e-12)
        return (m / self.levels) if self.per_channel else np.full(w.shape[1 if self.depthwise else 0], m / self.levels)

    def grid(self, w: np.ndarray, s: np.ndarray) -> np.ndarray:
        """``w / s`` in the layout of ``w`` (s per output channel)."""
        return w / (s[None, :] if self.depthwise else s[:, None])

    def back(self, q: np.ndarray, s: np.ndarray) -> np.ndarray:
        return q * (s[None, :] if self.depthwise else s[:, None])

    def to_graph(self, w: np.ndarray) -> np.ndarray:
        return w.reshape(self.shape)


def quant_input(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``x`` through the int8 grid of the range [lo, hi] (asymmetric, as the converter nudges it)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    s = (hi - lo) / 255.0 or 1.0
    zp = np.round(-128 - lo / s)
    return (np.clip(np.round(x / s) + zp, -128, 127) - zp) * s


def nearest(layer: Layer, w: np.ndarray | None = None) -> np.ndarray:
    """Nearest rounding on the layer's grid (what the quantizer does by itself)."""
    w = layer.w if w is None else w
    s = layer.scale(w)
    return layer.back(np.clip(np.round(layer.grid(w, s)), -layer.levels, layer.levels), s)


def error(layer: Layer, w_hat: np.ndarray, xq: np.ndarray | None = None) -> float:
    """Relative squared error of the layer's output: float weights and input against ``w_hat`` on ``xq``."""
    y = layer.out(layer.w)
    e = y - layer.out(w_hat, xq)
    return float((e**2).sum() / max((y**2).sum(), 1e-30))


def cosine(a: np.ndarray, b: np.ndarray, axis=None) -> np.ndarray:
    num = (a * b).sum(axis=axis)
    den = np.sqrt((a * a).sum(axis=axis) * (b * b).sum(axis=axis))
    return num / np.maximum(den, 1e-30)


# --- the methods -----------------------------------------------------------------------------------------------


def _keep_max(layer: Layer, w: np.ndarray, q: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Integers ``q`` with each channel's largest |w| kept at +-levels: the quantizer then derives the same scale."""
    r = layer.grid(w, s)
    axis = 0 if layer.depthwise else 1
    if layer.per_channel:
        idx = np.abs(r).argmax(axis=axis)
        if layer.depthwise:
            q[idx, np.arange(q.shape[1])] = np.round(r[idx, np.arange(q.shape[1])])
        else:
            q[np.arange(q.shape[0]), idx] = np.round(r[np.arange(q.shape[0]), idx])
    else:
        flat = np.abs(r).argmax()
        q.flat[flat] = np.round(r.flat[flat])
    return q


def adaround(layer: Layer, xq: np.ndarray, steps: int = 600, lr: float = 0.01, lam: float = 0.01) -> np.ndarray:
    """Learnt rounding (AdaRound): weights on the grid, each rounded up or down to reconstruct the output."""
    w, s = layer.w, layer.scale()
    r = layer.grid(w, s)
    lo = np.floor(r)
    frac = r - lo
    zeta, gamma = 1.1, -0.1
    v = -np.log((zeta - gamma) / (np.clip(frac, 0.01, 0.99) - gamma) - 1)  # h(v) = frac to start
    if layer.depthwise:
        a = np.einsum("rdc,rec->cde", xq, xq) / len(xq)  # (C, D, D)
        b = np.einsum("rdc,rc->cd", xq, layer.out(w)) / len(xq)  # (C, D)
    else:
        a = xq.T @ xq / len(xq)  # (D, D)
        b = layer.out(w).T @ xq / len(xq)  # (C, D)
    m1, m2 = np.zeros_like(v), np.zeros_like(v)
    for t in range(steps):
        sig = 1 / (1 + np.exp(-v))
        h = np.clip(sig * (zeta - gamma) + gamma, 0, 1)
        w_hat = layer.back(lo + h, s)
        if layer.depthwise:  # d/dw_hat of the mean squared error: 2 (w_hat A - b)
            g_w = 2 * (np.einsum("dc,cde->ec", w_hat, a) - b.T)
        else:
            g_w = 2 * (w_hat @ a - b)
        beta = 20 + (2 - 20) * t / max(steps - 1, 1)  # annealed: late steps push each h to 0 or 1
        warm = t >= steps // 5  # the regularizer after a warm-up of pure reconstruction
        u = 2 * h - 1
        g_reg = -lam * beta * np.abs(u) ** (beta - 1) * np.sign(u) * 2 if warm else 0.0
        dh = sig * (1 - sig) * (zeta - gamma) * ((h > 0) & (h < 1))
        g = (layer.back(g_w, s) + g_reg) * dh  # dw_hat/dh = s
        m1 = 0.9 * m1 + 0.1 * g
        m2 = 0.999 * m2 + 0.001 * g * g
        v -= lr * (m1 / (1 - 0.9 ** (t + 1))) / (np.sqrt(m2 / (1 - 0.999 ** (t + 1))) + 1e-8)
    h = np.clip(1 / (1 + np.exp(-v)) * (zeta - gamma) + gamma, 0, 1)
    q = np.clip(lo + (h >= 0.5), -layer.levels, layer.levels)
    return layer.back(_keep_max(layer, w, q, s), s)


def admm(layer: Layer, xq: np.ndarray, iterations: int = 40) -> np.ndarray:
    """Weights on the grid minimizing the output's squared error, by ADMM (ridge step, projection, dual step)."""
    w, s = layer.w, layer.scale()
    y = layer.out(w)
    if layer.depthwise:
        a = np.einsum("rdc,rec->cde", xq, xq) / len(xq)
        b = np.einsum("rdc,rc->cd", xq, y) / len(xq)
        wt = w.T.copy()  # (C, D)
    else:
        a = xq.T @ xq / len(xq)
        b = y.T @ xq / len(xq)
        wt = w.copy()
    st = s[:, None]
    g = np.clip(np.round(wt / st), -layer.levels, layer.levels) * st
    u = np.zeros_like(wt)
    rho = 1e-3 * (np.trace(a, axis1=-2, axis2=-1).mean() / a.shape[-1] + 1e-12)
    eye = np.eye(a.shape[-1])
    for _ in range(iterations):
        rhs = b + rho * (g - u)
        if layer.depthwise:
            wt = np.linalg.solve(a + rho * eye, rhs[..., None])[..., 0]
        else:
            wt = np.linalg.solve(a + rho * eye, rhs.T).T
        g = np.clip(np.round((wt + u) / st), -layer.levels, layer.levels) * st
        u += wt - g
        rho *= 1.3
    q = np.round(g / st)
    q = q.T if layer.depthwise else q
    return layer.back(_keep_max(layer, w, q, s), s)


def easyquant(layer: Layer, lo: float, hi: float, rounds: int = 2) -> tuple[np.ndarray, tuple[float, float]]:
    """EasyQuant: the input range (a share of [lo, hi]) and per-channel weight clipping (a share of each channel's
    largest |w|) maximizing the cosine of the layer's output, alternately. Returns (weights, input range)."""
    shares = np.linspace(0.5, 1.0, 11)
    y = layer.out(layer.w)
    rng = (lo, hi)
    w_best = layer.w
    axis = 0 if layer.depthwise else 1
    m = np.abs(layer.w).max(axis=axis, keepdims=True)
    if not layer.per_channel:
        m = np.abs(layer.w).max()
    for _ in range(rounds):
        xq = quant_input(layer.x, *rng)
        before, kept = float(cosine(y, layer.out(nearest(layer, w_best), xq))), w_best
        best = np.full(y.shape[1], -np.inf) if layer.per_channel else -np.inf
        for a in shares:  # per output channel (per-tensor weights: all at once) the clip with the best cosine
            w_c = np.clip(layer.w, -a * m, a * m)
            y_hat = layer.out(nearest(layer, w_c), xq)
            if not layer.per_channel:
                cos = float(cosine(y, y_hat))
                if cos > best + 1e-12:
                    best, w_best = cos, w_c
                continue
            cos = cosine(y, y_hat, axis=0)
            better = cos > best + 1e-12
            best = np.where(better, cos, best)
            if layer.depthwise:
                w_best = np.where(better[None, :], w_c, w_best)
            else:
                w_best = np.where(better[:, None], w_c, w_best)
        if float(cosine(y, layer.out(nearest(layer, w_best), xq))) < before:  # each channel's best, not the layer's
            w_best = kept
        w_hat = nearest(layer, w_best)
        scores = [float(cosine(y, layer.out(w_hat, quant_input(layer.x, a * lo, a * hi)))) for a in shares]
        a = shares[int(np.argmax(scores))]
        rng = (a * lo, a * hi)
    return w_best, rng


# --- from the graph to layers and back -------------------------------------------------------------------------


def _options(g: Graph, op: LinearOp) -> dict:
    o = g.sg.operators[op.index].builtinOptions
    return {
        "stride": (getattr(o, "strideH", 1) or 1, getattr(o, "strideW", 1) or 1),
        "dilation": (getattr(o, "dilationHFactor", 1) or 1, getattr(o, "dilationWFactor", 1) or 1),
        "multiplier": getattr(o, "depthMultiplier", 1) or 1,
    }


def _patches(x: np.ndarray, kh: int, kw: int, op: LinearOp, opts: dict, rows: int, rng) -> np.ndarray:
    """``rows`` sampled output positions' input patches of an NHWC tensor: (rows, kh, kw, C)."""
    n, h, w, c = x.shape
    (sh, sw), (dh, dw) = opts["stride"], opts["dilation"]
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if op.padding == "SAME":
        oh, ow = -(-h // sh), -(-w // sw)
        ph = max((oh - 1) * sh + eh - h, 0)
        pw = max((ow - 1) * sw + ew - w, 0)
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    else:
        oh, ow = (h - eh) // sh + 1, (w - ew) // sw + 1
    pick = rng.choice(n * oh * ow, size=min(rows, n * oh * ow), replace=False)
    ni, rest = np.divmod(pick, oh * ow)
    yi, xi = np.divmod(rest, ow)
    ky = yi[:, None] * sh + np.arange(kh)[None, :] * dh  # (rows, kh)
    kx = xi[:, None] * sw + np.arange(kw)[None, :] * dw
    return x[ni[:, None, None], ky[:, :, None], kx[:, None, :], :]  # (rows, kh, kw, C)


def layers(
    g: Graph,
    xs: list[np.ndarray],
    per_channel: bool,
    bits: dict[str, tuple[int, bool]] | None = None,
    rows: int = ROWS,
    seed: int = 0,
) -> list[Layer]:
    """The graph's linear ops with float weights as reconstruction problems, their inputs run through the float
    graph on ``xs`` (rows sampled). ``bits``: op output name -> (weight bits, per channel) for 4-bit layers."""
    from toolchain.quantize.stats import _batches

    ops = [op for op in g.linear_ops() if op.input in g.slots()]
    want = {op.input for op in ops}
    rng = np.random.default_rng(seed)
    chunks: dict[int, list[np.ndarray]] = {op.index: [] for op in ops}
    blob = g.to_bytes()
    batches = 0
    for interp in _batches(blob, xs):
        batches += 1
        got = {i: interp.get_tensor(i) for i in want}
        for op in ops:
            x = got[op.input].astype(np.float64)
            w = g.array(op.weights)
            if op.kind == "FULLY_CONNECTED":
                flat = x.reshape(-1, w.shape[1])
                chunks[op.index].append(flat[rng.choice(len(flat), size=min(rows, len(flat)), replace=False)])
            else:
                kh, kw = w.shape[1], w.shape[2]
                chunks[op.index].append(_patches(x, kh, kw, op, _options(g, op), rows, rng))
    out = []
    for op in ops:
        rows_x = np.concatenate(chunks[op.index])
        if len(rows_x) > rows:
            rows_x = rows_x[rng.choice(len(rows_x), size=rows, replace=False)]
        w = g.array(op.weights).astype(np.float64)
        b, pc = (bits or {}).get(g.name(op.output), (8, per_channel))
        if op.kind == "FULLY_CONNECTED":
            x, wm = rows_x, w
        elif op.kind == "CONV_2D":
            x, wm = rows_x.reshape(len(rows_x), -1), w.reshape(w.shape[0], -1)
        else:  # depthwise [1, kh, kw, C*mult]: channel o reads input channel o // mult
            mult = _options(g, op)["multiplier"]
            p = np.repeat(rows_x, mult, axis=-1) if mult > 1 else rows_x
            x, wm = p.reshape(len(p), -1, p.shape[-1]), w.reshape(-1, w.shape[-1])
        lo_hi = g.range(op.input)
        out.append(Layer(op, g.name(op.output), x, wm, w.shape, b, pc, lo_hi))
    return out


#: the last optimizations of this process, by what they read: a build's targets share one (it does not depend on
#: a target's I/O type or batch), computed once
_DONE: dict[str, tuple[dict, dict]] = {}


def _key(g: Graph, xs: list[np.ndarray], method: str, per_channel: bool, bits, rows: int) -> str:
    import hashlib

    h = hashlib.sha256(repr((method, per_channel, sorted((bits or {}).items()), rows)).encode())
    for op in g.linear_ops():
        h.update(g.array(op.weights).tobytes())
        h.update(np.asarray(g.range(op.input) if op.input in g.slots() else (0, 0)).tobytes())
    for x in xs:
        h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()


def run(g: Graph, xs: list[np.ndarray], method: str, per_channel: bool, bits=None, rows: int = ROWS) -> dict:
    """Optimize ``g``'s weights (and, for ``eq``, its linear ops' input ranges) in place; the report: per layer
    the output error before (nearest rounding, the ranges as calibrated) and after, and the seconds it took. The
    same graph, ranges and samples again (another target of the build): the result of the first time."""
    key = _key(g, xs, method, per_channel, bits, rows)
    if key in _DONE:
        changes, report = _DONE[key]
        for i, w in changes["weights"].items():
            g.set_array(i, w)
        for i, r in changes["ranges"].items():
            g.set_range(i, *r)
        log.info("quantize: %s as computed for another target of this build", method)
        return {**report, "seconds": 0.0, "reused": True}
    t0 = time.perf_counter()
    found = layers(g, xs, per_channel, bits, rows)
    done, report = set(), []
    for layer in found:
        lo, hi = layer.input_range
        xq = quant_input(layer.x, lo, hi)
        before = error(layer, nearest(layer), xq)
        row = {"layer": layer.name, "op": layer.op.kind, "bits": layer.bits, "error_before": before}
        if method == "eq":
            w, rng = easyquant(layer, lo, hi)
            if layer.op.input in done:  # a tensor read by two layers keeps the first's range
                rng = (lo, hi)
            done.add(layer.op.input)
            g.set_range(layer.op.input, *rng)
            xq = quant_input(layer.x, *rng)
            w_hat = nearest(layer, w)
            clipped = float(np.mean(np.abs(layer.w) > np.abs(w) + 1e-12))
            row |= {"input_range_share": (rng[1] - rng[0]) / max(hi - lo, 1e-30), "weights_clipped": clipped}
            row["cosine_before"] = float(
                cosine(layer.out(layer.w), layer.out(nearest(layer), quant_input(layer.x, lo, hi)))
            )
            row["cosine_after"] = float(cosine(layer.out(layer.w), layer.out(w_hat, xq)))
        elif method == "admm":
            w_hat = admm(layer, xq)
        elif method == "adaround":
            w_hat = adaround(layer, xq)
        else:
            raise ValueError(method)
        row["error_after"] = error(layer, w_hat, xq)
        g.set_array(layer.op.weights, layer.to_graph(w_hat).astype(np.float32))
        report.append(row)
    seconds = time.perf_counter() - t0
    changes = {
        "weights": {layer.op.weights: g.array(layer.op.weights) for layer in found},
        "ranges": {layer.op.input: g.range(layer.op.input) for layer in found},
    }
    _DONE.clear()  # one kept: the build's
    _DONE[key] = (changes, {"method": method, "layers": report, "seconds": round(seconds, 2), "rows": rows})
    log.info(
        "quantize: %s on %d layers, output error %.3g -> %.3g (mean), %.1f s",
        method,
        len(report),
        float(np.mean([r["error_before"] for r in report])) if report else 0.0,
        float(np.mean([r["error_after"] for r in report])) if report else 0.0,
        seconds,
    )
    return {"method": method, "layers": report, "seconds": round(seconds, 2), "rows": rows}

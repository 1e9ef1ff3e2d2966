"""Per-layer diagnosis of an int8 plan: which layer loses the accuracy, why, and what the toolchain can do about it.

For every quantized op, on eval samples, its int8 output against the float op's (TensorFlow's NumericVerify
ops, as the QuantizationDebugger uses them): **isolated** (the float op runs on the same, quantized input: the
layer's own error) and **accumulated** (the float op runs on the float model's own input: the error of everything
up to there). Metrics: SNR (dB), cosine, RMSE in units of the output's quantization step. With them, from the
calibration statistics and the float weights: the activation range, the share of calibration values it clips,
and the spread of per-channel weight ranges (what a per-tensor grid suffers from).

Layers are ranked by isolated SNR, per output channel and averaged (lowest first; a few large channels cannot hide
the others): a layer that is bad on its own is a cause; accumulated error only shows where the damage is felt.

Fixes are ranked by expected gain: to first order the layers' relative errors (1 / isolated per-channel SNR) add up
along the network, so a layer's **share** of their sum is what fixing it entirely could remove (ops whose grid TFLite
fixes are left out of the sum: no range choice changes them); a fix removes the part of that share it acts on
(16-bit activations: the output rounding, RMSE 0.29 steps; per-channel weights: the rest, the weights' grid; ...).
A layer holding a large share is a culprit. The :func:`verdict` says whether any layer needs
a fix at all: not when the artifact's own drop is within the acceptance gate (or, without a gate, negligible).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from toolchain.quantize import ranges
from toolchain.quantize.graph import Graph
from toolchain.quantize.stats import TensorStats

SPREAD_HINT = 10.0  # a channel-range spread above this hurts per-tensor weights
CLIP_HINT = 0.001  # clipping more than 0.1 % of a tensor's calibration values
HEADROOM_HINT = 20.0
CULPRIT_SHARE = 0.1  # a layer holding this share of the model's summed int8 error is a culprit
NEGLIGIBLE_POINTS = 0.5  # without a gate, a top-1 drop this small (points) needs no fix
ROUNDING_STEPS = 12**-0.5  # the RMSE of rounding alone, in grid steps (0.29)
#: Ops whose int8 output grid TFLite fixes (softmax: scale 1/256, zero point -128): ranked last, since no range
#: choice changes them; their per-channel SNR mostly measures probabilities near 0 rounding to 0.
FIXED_RANGE = (
    "SOFTMAX",
    "LOGISTIC",
    "TANH",
    "LOG_SOFTMAX",
)  # observed max this many times the 99.99th percentile: outliers own the range


@dataclass
class Error:
    channel_snr_db: float  # SNR per output channel, averaged: a few big channels cannot hide the others
    snr_db: float  # over the whole tensor
    cosine: float
    rmse_steps: float  # RMSE / the output's quantization scale (pure rounding: ~0.29)


@dataclass
class Fix:
    what: str
    gain: float  # expected: the share of the model's summed int8 error (relative, first order) it removes


@dataclass
class LayerDiagnosis:
    depth: int  # position among the quantized ops
    tensor: str
    layer: str | None  # the Keras layer it comes from, when the name says
    op: str
    isolated: Error
    accumulated: Error | None
    range: list[float]  # the activation range given
    observed: list[float]  # calibration min / max
    clipped: float  # share of calibration values outside the range
    headroom: float  # observed |max| / 99.99th-percentile |value|
    weight_spread: float | None  # largest / smallest per-channel weight range (linear ops)
    share: float = 0.0  # of the model's summed isolated error (per-channel noise-to-signal ratios)
    culprit: bool = False  # holds CULPRIT_SHARE or more of it (an op whose grid TFLite fixes never is)
    fixes: list[Fix] = field(default_factory=list)  # largest expected gain first


def layer_of(tensor: str, layer_names: set[str]) -> str | None:
    """The Keras layer a TFLite tensor comes from: a scope in its (fused) name that is a layer's name (a Keras 3
    trace adds ``_1`` to scopes); a convolution's or dense layer's own scope first."""
    scopes = [part.split("/")[0] for part in tensor.split(";") if "/" in part]
    ordered = sorted(scopes, key=lambda s: not any(k in tensor for k in (s + "/convolution", s + "/depthwise")))
    for scope in ordered:
        for name in (scope, re.sub(r"_1$", "", scope)):
            if name in layer_names:
                return name
    return None


def _errors(layer_statistics: dict, names: list[str]) -> dict[str, Error]:
    out = {}
    for key, m in layer_statistics.items():
        qname = re.sub(r":\d+$", "", key.removeprefix("NumericVerify/"))
        name = qname[:-1] if qname[:-1] in names else qname
        snr = 10 * np.log10(m["ss"] / m["se"]) if m["se"] > 0 else float("inf")
        cosine = m["dot"] / np.sqrt(m["ss"] * m["qq"]) if m["ss"] > 0 and m["qq"] > 0 else 1.0
        rmse = float(np.sqrt(m["se"] / m["n"]) / m["scale"])
        out[name] = Error(float(m["csnr"]), float(snr), float(cosine), rmse)
    return out


def _metrics() -> dict:
    def deq(q, scale, zero):
        return (q.astype(np.float64) - zero) * scale

    return {
        "se": lambda f, q, s, z: float(((f.astype(np.float64) - deq(q, s, z)) ** 2).sum()),
        "ss": lambda f, q, s, z: float((f.astype(np.float64) ** 2).sum()),
        "qq": lambda f, q, s, z: float((deq(q, s, z) ** 2).sum()),
        "dot": lambda f, q, s, z: float((f.astype(np.float64) * deq(q, s, z)).sum()),
        "n": lambda f, q, s, z: float(f.size),
        "scale": lambda f, q, s, z: float(s),
        "csnr": lambda f, q, s, z: _channel_snr(f, deq(q, s, z)),
    }


def _channel_snr(f: np.ndarray, q: np.ndarray, cap: float = 100.0) -> float:
    """Mean over output channels (last axis) of each channel's SNR in dB, capped; silent channels left out."""
    f64 = f.astype(np.float64).reshape(-1, f.shape[-1] if f.ndim else 1)
    err = ((f64 - q.reshape(f64.shape)) ** 2).sum(axis=0)
    signal = (f64**2).sum(axis=0)
    live = signal > 0
    if not live.any():
        return cap
    snr = 10 * np.log10(signal[live] / np.maximum(err[live], signal[live] * 10 ** (-cap / 10)))
    return float(snr.mean())


def measure(debug_model: bytes, xs: list[np.ndarray], names: list[str]) -> dict[str, Error]:
    """Run a NumericVerify model over the samples (one per invoke) and summarise each layer's error."""
    from tensorflow.lite.tools.optimize.debugging.python import debugger

    options = debugger.QuantizationDebugOptions(layer_direct_compare_metrics=_metrics())
    d = debugger.QuantizationDebugger(
        quant_debug_model_content=debug_model,
        debug_dataset=lambda: ([x[j : j + 1].astype(np.float32) for x in xs] for j in range(len(xs[0]))),
        debug_options=options,
    )
    d.run()
    return _errors(d.layer_statistics, names)


def diagnose(
    graph: bytes,
    stats: dict[int, TensorStats],
    xs: list[np.ndarray],
    *,
    method: str,
    percentile: float,
    symmetric: bool,
    per_channel: bool,
    layer_names: set[str],
    can_float: bool,
) -> list[LayerDiagnosis]:
    """Every quantized layer of the plan, ranked (culprits first)."""
    from toolchain.quantize.converter import debug_graph

    g = Graph(graph)
    chosen = {}
    for i in g.slots():
        lo, hi = ranges.compute(stats[i], method, percentile)
        chosen[i] = ranges.symmetric(lo, hi) if symmetric else (lo, hi)
        g.set_range(i, *chosen[i])
    ranged = g.to_bytes()
    names = [g.name(i) for i in g.slots()]
    isolated = measure(debug_graph(ranged, per_channel, accumulated=False), xs, names)
    accumulated = measure(debug_graph(ranged, per_channel, accumulated=True), xs, names)
    slot_of = {g.name(i): i for i in g.slots()}
    linear = {g.name(op.output): op for op in g.linear_ops()}
    producer = {g.name(int(o.outputs[0])): g.opnames[o.opcodeIndex] for o in g.sg.operators if len(o.outputs)}
    out = []
    for depth, (name, err) in enumerate(isolated.items()):
        i = slot_of.get(name)
        if i is None:
            continue
        s, (lo, hi) = stats[i], chosen[i]
        p9999 = max(map(abs, ranges.compute(s, "percentile", 99.99)))
        spread = None
        if name in linear:
            w = g.array(linear[name].weights)
            axis = 3 if linear[name].kind == "DEPTHWISE_CONV_2D" else 0
            r = np.abs(w).max(axis=tuple(a for a in range(w.ndim) if a != axis))
            spread = float(r.max() / r[r > 0].min()) if np.any(r > 0) else None
        d = LayerDiagnosis(
            depth=depth,
            tensor=name,
            layer=layer_of(name, layer_names),
            op=producer.get(name, "?"),
            isolated=err,
            accumulated=accumulated.get(name),
            range=[lo, hi],
            observed=[s.min, s.max],
            clipped=ranges.clipped_share(s, lo, hi),
            headroom=float(s.absmax / p9999) if p9999 > 0 else 1.0,
            weight_spread=spread,
        )
        out.append(d)
    rank_fixes(out, method, per_channel, can_float)
    return sorted(out, key=lambda d: (d.op in FIXED_RANGE, d.isolated.channel_snr_db))


def _noise(d: LayerDiagnosis) -> float:
    """The layer's own relative error (noise-to-signal power) its isolated per-channel SNR stands for; none for an
    op whose output grid TFLite fixes."""
    snr = d.isolated.channel_snr_db
    return 0.0 if d.op in FIXED_RANGE or not np.isfinite(snr) else 10 ** (-snr / 10)


def rank_fixes(layers: list[LayerDiagnosis], method: str, per_channel: bool, can_float: bool) -> None:
    """Each layer's share of the summed isolated error, its fixes by expected gain, and whether it is a culprit."""
    total = sum(map(_noise, layers))
    for d in layers:
        d.share = _noise(d) / total if total > 0 else 0.0
        d.fixes = sorted(fixes(d, method, per_channel, can_float), key=lambda f: -f.gain)
        d.culprit = d.share >= CULPRIT_SHARE and d.op not in FIXED_RANGE


def fixes(d: LayerDiagnosis, method: str, per_channel: bool, can_float: bool) -> list[Fix]:
    """What the toolchain can apply to this layer, each with its expected gain (``d.share`` of the model's error
    times the part of the layer's own error it acts on)."""
    rounding = min(1.0, (ROUNDING_STEPS / d.isolated.rmse_steps) ** 2) if d.isolated.rmse_steps > 0 else 1.0
    rest = 1.0 - rounding  # beyond the output's rounding: the weights' grid, clipping

    def fix(what: str, part: float) -> Fix:
        return Fix(what, d.share * part)

    if d.op in FIXED_RANGE:
        return [
            fix(f"none needed for int8: TFLite fixes the {d.op} output grid", 0.0),
            fix("16-bit activations (mode: int16x8)", rounding),
        ]
    out = []
    if d.headroom > HEADROOM_HINT and d.clipped < CLIP_HINT:  # a finer grid: rounding shrinks by the headroom
        part = rounding * (1 - d.headroom**-2)
        out.append(fix("a clipping range: calibration: percentile (or mse): outliers set this range", part))
    if d.clipped > CLIP_HINT and method != "minmax":
        out.append(fix(f"calibration: minmax: {method} clips {100 * d.clipped:.2f} % of this tensor's values", rest))
    if d.weight_spread and d.weight_spread > SPREAD_HINT and not per_channel:
        what = f"per_channel: true, or equalize: true (channel weight ranges spread {d.weight_spread:.0f}x)"
        out.append(fix(what, rest * (1 - 1 / d.weight_spread)))
    out.append(fix("16-bit activations for this layer (mode: int16x8 for the model)", rounding))
    if can_float:
        out.append(fix("keep this layer in float (the target's runtime falls back to float)", 1.0))
    return out


def verdict(
    layers: list[LayerDiagnosis],
    drop: float | None,
    allowed: float | None,
    metric: str = "top-1",
    points: bool = True,
    failed: tuple[str, ...] = (),
) -> dict:
    """Whether any layer needs a fix, as a headline: not when the artifact's ``drop`` below float (``points`` of
    top-1, else the metric's units) is within the gate's ``allowed`` (without a gate: NEGLIGIBLE_POINTS of
    top-1) and it ``failed`` no accuracy gate; a NaN drop never passes. ``drop`` None: not measured here, the
    culprits decide."""
    unit = " points" if points else ""
    culprits = [d for d in layers if d.culprit]
    limit = allowed if allowed is not None else (NEGLIGIBLE_POINTS if points else 0.0)
    if drop is not None and drop <= limit and not failed:  # False for NaN
        gate = (
            f"the gate allows {allowed:g}"
            if allowed is not None
            else (f"under {limit:g}{unit}: negligible" if points else "no gate is set")
        )
        within = f"{drop:.2f}{unit} below float" if drop > 0 else f"no worse than float ({-drop:.2f}{unit} above)"
        return {
            "needs_fix": False,
            "drop": drop,
            "allowed": allowed,
            "headline": f"No layer needs a fix: the int8 artifact's {metric} is {within} ({gate}).",
        }
    if failed:
        lost = f"The int8 artifact fails its gate ({'; '.join(failed)})"
    elif drop is None:
        lost = "The int8 artifact's accuracy is not measured here (`build --diagnose` compares it with the gate)"
    elif drop != drop:
        lost = f"The int8 artifact's {metric} drop is not a number (NaN)"
    else:
        lost = f"The int8 artifact loses {drop:.2f}{unit} of {metric}" + (
            f" (the gate allows {allowed:g})" if allowed is not None else ""
        )
    if culprits:
        names = ", ".join(dict.fromkeys(d.layer or d.tensor for d in culprits))
        headline = f"{lost}: fix {names} first, largest expected gain first."
        return {"needs_fix": True, "drop": drop, "allowed": allowed, "headline": headline}
    top = max((d.share for d in layers), default=0.0)
    return {
        "needs_fix": drop is not None,  # measured and over: a model-wide fix; not measured: nothing stands out
        "drop": drop,
        "allowed": allowed,
        "headline": f"{lost}; no single layer stands out (the largest holds {100 * top:.0f} % of the int8 error)"
        + (
            ": a model-wide fix: mode: int16x8, or quantization-aware training (compress: [{step: qat}])."
            if drop is not None
            else "."
        ),
    }

"""The toolchain's int8 post-training quantization, in two steps the build caches apart:

``calibrate``: trace the model once (dynamic batch), equalize if asked, collect every tensor's statistics.
``quantize``: for one target's numerics (I/O type, per-channel, batch), compute the ranges, correct biases if
asked, and let the converter's quantizer write the artifact. A report says what the ranges clipped.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

import numpy as np

from toolchain.errors import ConversionError
from toolchain.fsutil import progress
from toolchain.quantize import ranges
from toolchain.quantize.graph import Graph
from toolchain.quantize.stats import TensorStats, collect

log = logging.getLogger(__name__)
MOST_CLIPPED = 5


def calibrate(model, xs: list[np.ndarray], equalize: bool, batch: int | None = None):
    """(graph with calibration slots, statistics per slot, meta): the model traced once, equalized if asked.
    ``model``: a Keras model (traced by the converter) or the bytes of a float flatbuffer (its own graph)."""
    traced = not isinstance(model, bytes)
    with progress(log, "calibrate", traced + equalize + 1, "steps") as bar:  # trace, equalize, statistics
        if traced:
            from toolchain.quantize.converter import calibration_graph

            graph, route = calibration_graph(model, xs, batch)
            bar.update(1)
        else:
            graph, route = slotted(model), "flatbuffer"
        meta: dict = {"route": route}
        if equalize:
            from toolchain.quantize.equalize import absorb_high_bias
            from toolchain.quantize.equalize import equalize as equalize_graph

            g = Graph(graph)
            report = equalize_graph(g)
            graph = g.to_bytes()
            first = collect(graph, xs)
            g = Graph(graph)
            absorb_high_bias(g, {i: s.channel_min for i, s in first.items() if s.channel_min.size}, report)
            graph = g.to_bytes()
            meta["equalization"] = asdict(report)
            bar.update(traced + 1)
        meta["batch_fixable"] = Graph(graph).fix_batch(1)
        return graph, collect(graph, xs), meta


def slotted(blob: bytes) -> bytes:
    """A float flatbuffer (a float .tflite, litert-torch's output) as a graph to calibrate: a slot on every float
    tensor that is not a constant."""
    g = Graph(blob)
    if len(g.m.subgraphs) != 1:
        raise ConversionError(f"calibration: the model has {len(g.m.subgraphs)} subgraphs; the toolchain quantizes one")
    if not g.add_slots():
        raise ConversionError("calibration: the model has no float tensor to quantize")
    return g.to_bytes()


def quantize(
    graph: bytes,
    stats: dict[int, TensorStats],
    *,
    method: str,
    percentile: float,
    symmetric: bool,
    bias_correction: bool,
    io_type: str,
    per_channel: bool,
    batch: int | None,
    float_nodes: list[str] | None = None,
    int16_nodes: list[str] | None = None,
    int4_nodes: dict[str, str] | None = None,
    int4_choose=None,
    max_clipped: float | None = None,
    input_ranges: list[list[float]] | None = None,
    rounding: str = "nearest",
    xs: list[np.ndarray] | None = None,
) -> tuple[bytes, dict]:
    """The int8 artifact and the report of its ranges. ``float_nodes``/``int16_nodes``/``int4_nodes``: op outputs
    kept in float, given 16-bit activations, or whose ops get 4-bit weights ({node: weight granularity}; with
    16- or 4-bit ones, ai-edge-quantizer writes the artifact; see ``mixed``). ``int4_choose``: picks the 4-bit
    ops among ``int4_nodes`` from a function building the artifact of a choice (``int4_select.select``).
    ``method`` eq and ``rounding`` adaround / admm optimize on the calibration samples ``xs`` (``optimize``)."""
    from toolchain.quantize.converter import quantize_graph

    g = Graph(graph)
    rows, guarded = _set_ranges(g, stats, "minmax" if method == "eq" else method, percentile, symmetric, max_clipped)
    if input_ranges is not None:  # quantize.input_range: the inputs' ranges from the training data or the recipe
        for i, (lo, hi) in zip([int(t) for t in g.sg.inputs], input_ranges, strict=False):
            if i in g.slots():
                lo, hi = min(lo, 0.0), max(hi, 0.0)
                g.set_range(i, *(ranges.symmetric(lo, hi) if symmetric else (lo, hi)))
    inputs = _input_scales(g, stats)
    if batch is not None and not g.fix_batch(batch):
        raise ConversionError("calibration: the graph reads its batch size as data: trace it with the fixed batch")
    if batch is not None and g.batch() != batch:
        raise ConversionError(f"calibration: the graph's batch is fixed at {g.batch()}; the target wants {batch}")
    report: dict = {"method": method, "percentile": percentile if method == "percentile" else None, "inputs": inputs}
    if method == "eq" or rounding != "nearest":
        from toolchain.quantize import optimize

        four = {n: (4, gran == "channelwise") for n, gran in (int4_nodes or {}).items()}
        report["optimization"] = optimize.run(g, xs, "eq" if method == "eq" else rounding, per_channel, four)
        inputs = _input_scales(g, stats)  # eq moves the inputs' ranges too
    if guarded:
        report["guarded"] = guarded
    if bias_correction:
        from toolchain.quantize.bias import correct

        trial = quantize_graph(g.to_bytes(), "float32", per_channel)
        means = {i: s.channel_mean for i, s in stats.items() if s.channel_mean.size}
        report["bias_correction"] = asdict(correct(g, trial, means))
    if int16_nodes or int4_nodes:
        from toolchain.quantize.mixed import quantize_mixed

        bounds = {g.name(i): g.range(i) for i in g.slots()}
        graph = g.to_bytes()

        def build(four: dict[str, str] | None) -> bytes:
            return quantize_mixed(graph, bounds, int16_nodes or [], float_nodes or [], io_type, per_channel, four)

        if int4_choose is not None:
            int4_nodes, report["int4_selection"] = int4_choose(build)
        blob = build(int4_nodes)
    else:
        blob = quantize_graph(g.to_bytes(), io_type, per_channel, float_nodes)
    if float_nodes or int16_nodes or int4_nodes:  # what the exceptions cost: the same ranges, every op int8
        report |= {"float_ops": float_nodes or [], "int16_ops": int16_nodes or [], "int4_ops": sorted(int4_nodes or [])}
        report["int8_bytes"] = len(quantize_graph(g.to_bytes(), io_type, per_channel))
    return blob, report | _range_report(rows, symmetric)


def _input_scales(g: Graph, stats: dict[int, TensorStats]) -> list[dict]:
    """Per graph input: its range, its int8 scale and the share of calibration values the range holds (a scale set
    by a few samples holds nearly all of them in a few of its 256 levels: the report says how the range was set)."""
    out = []
    for i in (int(t) for t in g.sg.inputs):
        if i not in g.slots() or i not in stats:
            continue
        lo, hi = g.range(i)
        s = stats[i]
        out.append(
            {
                "input": g.name(i),
                "range": [lo, hi],
                "scale": (hi - lo) / (ranges.LEVELS - 1),
                "observed": [s.min, s.max],
                "clipped": ranges.clipped_share(s, lo, hi),
                "utilisation": ranges.utilisation(s, lo, hi),
            }
        )
    return out


def _set_ranges(
    g: Graph, stats: dict[int, TensorStats], method: str, percentile: float, symmetric: bool, max_clipped=None
) -> tuple[list, list[dict]]:
    """Write each activation's range from its statistics into ``g``; one row (stats, lo, hi, clipped share,
    utilisation) per tensor, and the tensors whose range fell back to minmax (``ranges.guarded``)."""
    rows, guarded = [], []
    for i in g.slots():
        s = stats.get(i)
        if s is None:  # never leave the one-sample range of the calibrate-only conversion in place
            raise ConversionError(f"calibration: no statistics for tensor {g.name(i)!r}")
        lo, hi, fell = ranges.guarded(s, method, percentile, max_clipped)
        if fell:
            would = ranges.compute(s, method, percentile)
            clipped = ranges.clipped_share(s, *would)
            guarded.append({"tensor": s.name, "range": list(would), "observed": [s.min, s.max], "clipped": clipped})
        if symmetric:
            lo, hi = ranges.symmetric(lo, hi)
        g.set_range(i, lo, hi)
        rows.append((s, lo, hi, ranges.clipped_share(s, lo, hi), ranges.utilisation(s, lo, hi)))
    return rows, guarded


def _range_report(rows: list, symmetric: bool) -> dict:
    """The report's summary of the ranges chosen: clipping and utilisation, the most clipped tensors."""
    shares = [r[3] for r in rows]
    worst = sorted(rows, key=lambda r: -r[3])[:MOST_CLIPPED]
    return {
        "activations": "symmetric" if symmetric else "asymmetric",
        "tensors": len(rows),
        "clipped_tensors": sum(x > 0 for x in shares),
        "clipped_share_max": max(shares, default=0.0),
        "clipped_share_mean": float(np.mean(shares)) if shares else 0.0,
        "utilisation_mean": float(np.mean([r[4] for r in rows])) if rows else 0.0,
        "most_clipped": [
            {"tensor": s.name, "range": [lo, hi], "observed": [s.min, s.max], "clipped": share}
            for s, lo, hi, share, _ in worst
            if share > 0
        ],
    }

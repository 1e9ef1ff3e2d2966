"""Mixed precision: int8 everywhere but on chosen ops, which get 16-bit activations (8-bit weights), 4-bit
weights (8-bit activations) or stay float.

The converter's quantizer has one activation width per model; Google's ai-edge-quantizer takes per-op recipes
and inserts the QUANTIZE ops that move a tensor between int8 and int16. The activation ranges are the
toolchain's own (every calibration method applies): they are handed to it as its calibration result.
Which runtimes have int16 kernels for which ops is data (``int16_ops.yaml``, measured by
``tools/probe_int16_ops.py``), and so is which run 4-bit weights (``int4_ops.yaml``, ``tools/probe_int4_ops.py``).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

import yaml

from toolchain.errors import ConfigError, ConversionError
from toolchain.quantize.graph import Graph


@cache
def int16_data() -> dict:
    """The measured int16 op support: ``runtimes: {runtime: {ok: [...], refused: {op: reason}}}`` and
    ``quantizer_refused: {op: reason}`` (ops the quantizer cannot give 16-bit activations)."""
    return yaml.safe_load(resources.files("toolchain.quantize").joinpath("int16_ops.yaml").read_text())


def int16_runtimes() -> list[str]:
    return list(int16_data()["runtimes"])


@cache
def int4_data() -> dict:
    """The measured 4-bit-weight op support: ``runtimes: {runtime: {ok: {op: granularity}, refused: {op: reason}}}``
    (granularity: channelwise or tensorwise, the one the runtime's kernel takes)."""
    return yaml.safe_load(resources.files("toolchain.quantize").joinpath("int4_ops.yaml").read_text())


def int4_plan(runtime: str, ops: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Of ``ops`` ({node: op kind}, the weighted ops the recipe named), those ``runtime`` runs with 4-bit weights
    ({node: granularity}) and those it keeps at 8 bits ({node: the reason measured})."""
    table = int4_data()["runtimes"][runtime]
    ok = {n: table["ok"][op] for n, op in ops.items() if op in table["ok"]}
    kept = {
        n: f"{op}: " + table["refused"].get(op, "not among the ops tools/probe_int4_ops.py measured")
        for n, op in ops.items()
        if op not in table["ok"]
    }
    return ok, kept


def refused_int16(runtime: str, ops: set[str]) -> dict[str, str]:
    """The ops that cannot have 16-bit activations on ``runtime``, each with the reason measured."""
    data = int16_data()
    table = data["runtimes"][runtime]
    return {
        op: data["quantizer_refused"].get(op)
        or table["refused"].get(op, "not among the ops tools/probe_int16_ops.py measured")
        for op in sorted(ops)
        if op not in table["ok"]
    }


def _scope(nodes: list[str]) -> str:
    """The quantizer's scope of an op is its output names joined by ';' with a trailing ';'."""
    return "^(?:" + "|".join(re.escape(n) for n in nodes) + ");"


def quantize_mixed(
    graph: bytes,
    ranges: dict[str, tuple[float, float]],
    int16_nodes: list[str],
    float_nodes: list[str],
    io_type: str,
    per_channel: bool,
    int4_nodes: dict[str, str] | None = None,
) -> bytes:
    """The artifact of ``graph`` (float, ranges chosen) with the ops producing ``int16_nodes`` in 16-bit
    activations, those producing ``float_nodes`` in float and those producing ``int4_nodes`` with 4-bit weights
    ({node: channelwise|tensorwise}); int8 elsewhere."""
    import numpy as np
    from ai_edge_quantizer import qtyping, quantizer

    if io_type not in ("int8", "float32"):
        raise ConfigError(f"quantize.int16_layers: artifacts take int8 or float32 input/output, not {io_type!r}")
    op = qtyping.TFLOperationName.ALL_SUPPORTED
    granularity = qtyping.QuantGranularity.CHANNELWISE if per_channel else qtyping.QuantGranularity.TENSORWISE
    q = quantizer.Quantizer(graph)
    q.add_static_config(".*", op, 8, 8, granularity)
    if int16_nodes:
        q.add_static_config(_scope(int16_nodes), op, 16, 8, granularity)
    by_granularity: dict[str, list[str]] = {}
    for node, g in (int4_nodes or {}).items():
        by_granularity.setdefault(g, []).append(node)
    for g, nodes in by_granularity.items():
        q.add_static_config(_scope(nodes), op, 8, 4, getattr(qtyping.QuantGranularity, g.upper()))
    if float_nodes:
        q.update_quantization_recipe(_scope(float_nodes), op, algorithm_key="no_quantize")
    if io_type == "float32":
        for io in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
            q.update_quantization_recipe(".*", io, algorithm_key="no_quantize")
    qsv = {name: {"min": np.float32(lo), "max": np.float32(hi)} for name, (lo, hi) in ranges.items()}
    try:
        blob = bytes(q.quantize(qsv).quantized_model)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise ConversionError(f"mixed precision: ai-edge-quantizer refused the graph: {exc}") from exc
    g = Graph(blob)
    dtypes = {g.name(i): int(t.type) for i, t in enumerate(g.sg.tensors)}
    missed = [n for n in int16_nodes if dtypes.get(n) != 7]  # TensorType.INT16
    if missed:
        raise ConversionError(f"mixed precision: the quantizer left {', '.join(missed)} without 16-bit activations")
    four = {
        g.name(int(o.outputs[0]))
        for o in g.sg.operators
        if any(i >= 0 and dtypes.get(g.name(int(i))) == 17 for i in o.inputs)
    }
    missed = [n for n in (int4_nodes or {}) if n not in four]  # TensorType.INT4 weights
    if missed:
        raise ConversionError(f"mixed precision: the quantizer left {', '.join(missed)} without 4-bit weights")
    return blob

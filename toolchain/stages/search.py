"""The plan search (``quantize.mode: auto``): per target, climb a ladder of plans, cheapest first, until one
passes every gate; when none does, the most accurate is kept, failing. Every rung tried is in the target's
``plan_search`` (record and report).

A rung is a whole target build (``stages.target.build``) of the recipe with that rung's ``quantize`` fields:
its stages are cached like any build's, so trying a rung again costs nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace

from toolchain.config import Target
from toolchain.errors import ConfigError
from toolchain.fsutil import progress
from toolchain.record import TargetResult
from toolchain.stages import target as one
from toolchain.stages.context import Build
from toolchain.stages.data import Data
from toolchain.stages.diagnose import worst_layers
from toolchain.stages.model import ModelStage, stage_compress
from toolchain.stages.plan import FLATBUFFER_MODES, resolve_plan
from toolchain.stages.publish import write_reports

log = logging.getLogger(__name__)

#: cheapest first: (name, quantize fields). int8 rungs keep the target's I/O type.
LADDER = (
    ("int8 minmax", {"mode": "int8", "calibration": "minmax"}),
    ("int8 percentile 99.99", {"mode": "int8", "calibration": "percentile", "percentile": 99.99}),
    ("int8 percentile 99.9", {"mode": "int8", "calibration": "percentile", "percentile": 99.9}),
    ("int8 mse", {"mode": "int8", "calibration": "mse"}),
    ("int8 kl, guarded", {"mode": "int8", "calibration": "kl"}),  # quantize.max_clipped keeps a range from clipping
    ("int8 minmax, input range from the training data", {"mode": "int8", "input_range": "training"}),
    ("int8 minmax, equalized, bias-corrected", {"mode": "int8", "equalize": True, "bias_correction": True}),
    # where they pay (benchmarks.rounding): per-tensor weights or 4-bit layers; nearest rounding is as good otherwise
    ("int8 minmax, ADMM weights", {"mode": "int8", "rounding": "admm", "coarse_grid": True}),
    ("int8 minmax, AdaRound weights", {"mode": "int8", "rounding": "adaround", "coarse_grid": True}),
    ("int8, the 3 worst layers (diagnosis) in float", {"mode": "int8", "float_worst": 3}),
    ("int8, the sensitive ops with 16-bit activations", {"mode": "int8", "int16_sensitive": True}),
    ("int8, the 3 worst layers (diagnosis) with 16-bit activations", {"mode": "int8", "int16_worst": 3}),
    ("int8, quantization-aware training", {"mode": "int8", "qat": True}),
    ("int16x8 (16-bit activations)", {"mode": "int16x8"}),
    ("float16", {"mode": "float16"}),
    ("float32", {"mode": "float32"}),
)


def plan_search(b: Build, target: Target, data: Data, model: ModelStage) -> TargetResult:
    """The first rung that passes every gate, or the most accurate one; its reports carry every rung."""
    tried: list[tuple[str, Build, ModelStage, TargetResult]] = []
    most = sum(_runs(b, target, fields) for _, fields in LADDER)  # the search stops at the first that passes
    with progress(log, f"plan search on {target.name}", most, "plans at most") as step:
        for name, rb, qat in _rungs(b, target, data, model):
            log.info("plan search on %s: trying %s", target.name, name)
            rung_model = stage_compress(rb, model, data) if qat else model
            result = one.build(rb, target, resolve_plan(rb.recipe, target), data, rung_model)
            tried.append((name, rb, rung_model, result))
            step.update(len(tried))
            if result.passed:
                break
    if not tried:
        raise ConfigError(f"quantize.mode auto: {target.name} runs none of the plans the search tries")
    name, rb, rung_model, chosen = tried[-1] if tried[-1][3].passed else min(tried, key=lambda t: _drop(t[3]))
    if chosen is not tried[-1][3]:  # publish the most accurate rung again (its stages are cached)
        chosen = one.build(rb, target, resolve_plan(rb.recipe, target), data, rung_model)
    verdict = "meets the gates" if chosen.passed else "is the most accurate; no plan met the gates"
    log.info("plan search on %s: %s %s", target.name, name, verdict)
    chosen = chosen.model_copy(update={"plan_search": [_rung(n, r) for n, _, _, r in tried]})
    write_reports(one.inside(b.out, b.dir / target.name), b.recipe.name, chosen)
    return chosen


def _rungs(b: Build, target: Target, data: Data, model: ModelStage) -> Iterator[tuple[str, Build, bool]]:
    """The ladder's rungs this target can run: (name, the build with the rung's recipe, whether it trains QAT)."""
    for name, fields in LADDER:
        if not _runs(b, target, fields):
            continue
        fields = dict(fields)
        if fields.get("input_range") and (b.recipe.data.calibration is None or not data.sizes["train"]):
            continue  # only a calibration set apart from the training data can set the inputs' range wrong
        if fields.pop("float_worst", None):
            if "float32" not in target.numerics.modes:
                continue  # an integer-only runtime cannot keep layers in float
            fields["float_layers"] = worst_layers(b, data, model, 3)
            if not fields["float_layers"]:
                continue
            name = f"int8, {', '.join(fields['float_layers'])} in float (the diagnosis' worst)"
        if fields.pop("int16_worst", None):
            fields["int16_layers"] = _int16_worst(b, target, data, model)
            if not fields["int16_layers"]:
                continue
            name = f"int8, {', '.join(fields['int16_layers'])} with 16-bit activations (the diagnosis' worst)"
        if fields.pop("int16_sensitive", None):
            fields["int16_layers"] = _int16_sensitive(b, target, data, model)
            if not fields["int16_layers"]:
                continue
            name = f"int8, {', '.join(fields['int16_layers'])} with 16-bit activations (the sensitive ops)"
        q = b.recipe.quantize
        if fields.pop("coarse_grid", False) and q.per_channel and not q.int4_patterns:
            continue  # learnt weights pay on a coarse grid only: per-tensor scales or 4-bit layers
        qat = fields.pop("qat", False)
        if qat and (b.recipe.train is None or b.recipe.task != "classification"):
            continue  # QAT trains: only where the recipe trains a classifier
        yield name, replace(b, recipe=_rung_recipe(b, fields, qat)), qat


def _runs(b: Build, target: Target, fields: dict) -> bool:
    """Whether the target runs the rung's mode (a flatbuffer model: float32 and int8 only, the other modes start
    from TensorFlow)."""
    mode = fields["mode"]
    return mode in target.numerics.modes and (b.recipe.model.kind == "keras" or mode in FLATBUFFER_MODES)


def _int16_worst(b: Build, target: Target, data: Data, model: ModelStage) -> list[str]:
    """The diagnosis' 3 worst layers whose op the target runs with 16-bit activations (none: no such kernels)."""
    table = target.numerics.int16_ops
    if table is None:
        return []
    from toolchain.quantize.mixed import refused_int16

    return worst_layers(b, data, model, 3, lambda op: not refused_int16(table, {op}))


def _int16_sensitive(b: Build, target: Target, data: Data, model: ModelStage) -> list[str]:
    """The op types of an attention model that quantization is known to hurt (softmax, the LayerNorm chain, GELU,
    the attention matmuls: ``report.diagnosis.ROLES``, and MEAN) that the target's runtime runs with 16-bit
    activations (measured: ``int16_ops.yaml``); empty without such kernels, or for a model with none of attention,
    LayerNorm or GELU."""
    table = target.numerics.int16_ops
    if table is None:
        return []
    from toolchain.quantize.mixed import refused_int16
    from toolchain.report.diagnosis import ROLES
    from toolchain.stages.quantize import stage_calibrate
    from toolchain.tflite_model import TFLiteModel

    ops = TFLiteModel(stage_calibrate(b, model, data, None).graph).op_counts()
    if not set(ops) & (set(ROLES) - {"SOFTMAX"}):  # no attention, LayerNorm or GELU: a CNN's softmax head alone
        return []
    return sorted(op for op in ops if (op in ROLES or op == "MEAN") and not refused_int16(table, {op}))


def _rung_recipe(b: Build, fields: dict, qat: bool):
    update = {"calibration": "minmax", "equalize": False, "bias_correction": False, "input_range": "calibration"}
    update["rounding"] = "nearest"
    update |= {"float_layers": [], "int16_layers": [], **fields}
    if fields["mode"] != "int8":
        update["io_type"] = None
    changes: dict = {"quantize": b.recipe.quantize.model_copy(update=update)}
    if qat:
        from toolchain.config.recipe import QatStep

        changes["compress"] = [QatStep(step="qat")]
    return b.recipe.model_copy(update=changes)


def _drop(r: TargetResult) -> float:
    return r.metrics.drop if r.metrics and r.metrics.drop is not None else float("inf")


def _rung(name: str, r: TargetResult) -> dict:
    return {
        "plan": name,
        "mode": r.mode,
        "passed": r.passed,
        "metric": r.metrics.headline[1] if r.metrics else None,
        "drop": r.metrics.drop if r.metrics else None,
        "size_bytes": r.size_bytes,
        "latency_ms": r.latency.ms if r.latency else None,
        "latency_kind": r.latency.kind if r.latency else None,
        "failures": [f.message for f in r.failures],
    }

"""The diagnosis stage: where an int8 plan loses accuracy, layer by layer (``toolchain.quantize.diagnose``).

``toolchain diagnose``, ``build --diagnose`` (each int8 target's folder) and the plan search (its worst layers)
all read the per-layer errors from here, on the build's shared calibration.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from toolchain.config import Recipe, Target, load_target
from toolchain.convert.plan import ConvertPlan
from toolchain.errors import CompatibilityError
from toolchain.fsutil import atomic_write
from toolchain.record import TargetResult
from toolchain.stages.context import Build
from toolchain.stages.data import Data
from toolchain.stages.model import ModelStage
from toolchain.stages.plan import resolve_plan
from toolchain.stages.quantize import stage_calibrate

log = logging.getLogger(__name__)


def layers(b: Build, data: Data, model: ModelStage, q, per_channel: bool, samples: int, can_float: bool = True):
    """The per-layer diagnosis of the int8 plan ``q`` (the recipe's quantize settings) on eval samples."""
    from toolchain.quantize.diagnose import diagnose

    cal = stage_calibrate(b, model, data, None, equalize=q.equalize)
    return diagnose(
        cal.graph,
        cal.stats,
        [x[:samples] for x in data.xs_eval],
        method=q.calibration,
        percentile=q.percentile,
        symmetric=q.activations == "symmetric",
        per_channel=per_channel,
        layer_names=model.layer_names(),
        can_float=can_float,
    )


def worst_layers(b: Build, data: Data, model: ModelStage, n: int, op_ok=lambda op: True) -> list[str]:
    """The Keras layers (a flatbuffer model: the op output tensors, as patterns) the per-layer diagnosis ranks
    worst for int8 minmax (64 eval samples), among those whose op ``op_ok`` accepts."""
    from toolchain.quantize.diagnose import FIXED_RANGE

    plain = {"calibration": "minmax", "activations": "asymmetric", "equalize": False}
    found = layers(b, data, model, b.recipe.quantize.model_copy(update=plain), b.recipe.quantize.per_channel, 64)
    flat = model.float_graph is not None
    worst = [
        _literal(d.tensor) if flat else d.layer
        for d in found
        if (flat or d.layer) and d.op not in FIXED_RANGE and op_ok(d.op)
    ]
    return list(dict.fromkeys(worst))[:n]


def _literal(name: str) -> str:
    """A tensor name as an fnmatch pattern matching only itself."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def diagnosis(
    b: Build,
    target: Target,
    plan: ConvertPlan,
    data: Data,
    model: ModelStage,
    samples: int,
    result: TargetResult | None = None,
) -> dict:
    """The diagnosis of the recipe's int8 plan for ``target``, as the dict the reports render; with the target's
    built ``result``, its verdict weighs the artifact's measured drop against the recipe's gate."""
    from toolchain.quantize.diagnose import verdict

    q = b.recipe.quantize
    log.info("diagnose: %s on %s, each layer isolated and accumulated", b.recipe.name, target.name)
    found = layers(b, data, model, q, plan.per_channel, samples, can_float=target.kind == "phone")
    m = result.metrics if result else None
    points = m is None or m.task == "classification"
    drop = None if m is None or m.drop is None else m.drop * (100 if points else 1)
    gate = b.recipe.acceptance  # the stricter of the gates on the headline metric, in the drop's units
    scaled = None if gate.max_metric_drop is None else gate.max_metric_drop * (100 if points else 1)
    allowed = min((x for x in (gate.max_accuracy_drop if points else None, scaled) if x is not None), default=None)
    metric = "top-1" if points else m.headline[0]
    failed = (
        tuple(f.message for f in result.failures if f.kind == "gate" and f.check != "max_size_kb") if result else ()
    )
    drift = stage_calibrate(b, model, data, None, equalize=q.equalize).meta.get("drift", [])
    method = q.calibration + (f" {q.percentile}" if q.calibration == "percentile" else "")
    return {
        "recipe": b.recipe.name,
        "target": target.name,
        "plan": f"int8, {method} ranges, {q.activations} activations, "
        f"{'per-channel' if plan.per_channel else 'per-tensor'} weights" + (", equalized" if q.equalize else ""),
        "samples": min(samples, data.sizes["eval"]),
        "verdict": verdict(found, drop, allowed, metric, points, failed),
        "layers": [asdict(d) for d in found],
        "calibration_drift": drift,
    }


def write_diagnosis(folder: Path, d: dict, stem: str = "diagnosis") -> Path:
    """``stem.md``, ``stem.html`` and ``stem.json`` in ``folder``; returns the page's path."""
    from toolchain.report import diagnosis as render

    atomic_write(folder / f"{stem}.md", render.markdown(d))
    page = atomic_write(folder / f"{stem}.html", render.html(d))
    atomic_write(folder / f"{stem}.json", json.dumps(d, indent=1, default=float) + "\n")
    return page


def int8_target(recipe: Recipe, name: str | None) -> tuple[Target, ConvertPlan]:
    """The target whose int8 plan to explain: ``name``, or the recipe's first target with an int8 plan."""
    names = [name] if name else recipe.targets
    pairs = [(t, resolve_plan(recipe, t)) for t in map(load_target, names)]
    pairs = [(t, p) for t, p in pairs if p.mode == "int8"]
    if not pairs:
        as_is = recipe.model.is_tflite and resolve_plan(recipe, load_target(names[0])).mode != "float32"
        raise CompatibilityError(
            f"{recipe.name}: diagnose explains an int8 plan the toolchain quantizes; "
            + ("a quantized .tflite model is used as it is" if as_is else f"{', '.join(names)}: no int8 plan")
        )
    return pairs[0]

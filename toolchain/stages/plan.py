"""Plan resolution: which numerics each target gets (mode, I/O type, batch, mixed precision), decided before any work.

A quantized ``.tflite`` file is used as it is (``numerics_of`` reads what it is); otherwise the recipe's
``quantize`` section says, the target's profile fills in the rest, and a plan the target cannot run is refused
here, with the recipe line that asks for it. A model whose float graph is a flatbuffer (a float ``.tflite``, a
PyTorch or ONNX model) gets float32 or the toolchain's int8: the other modes are the TFLite converter's, which
starts from TensorFlow. ``plan_variant`` makes the recipe of one plan of ``compare --plans``.
"""

from __future__ import annotations

import logging

from toolchain.config import Recipe, Target, load_target
from toolchain.config.recipe import KIND_NAMES
from toolchain.convert.plan import ConvertPlan
from toolchain.errors import CompatibilityError, ConfigError

log = logging.getLogger(__name__)
#: The plans ``compare --plans`` builds (every quantize mode but the search).
PLAN_MODES = ("float32", "dynamic", "float16", "int8", "int16x8")


def numerics_of(blob: bytes) -> ConvertPlan:
    """What an existing .tflite is: its quantize mode, I/O type and batch."""
    from toolchain.tflite_model import TFLiteModel

    m = TFLiteModel(blob)
    weights = {t.dtype for t in m.tensors if t.is_constant and t.dtype.startswith(("float", "int8"))}
    acts = {t.dtype for op in m.ops for i in op.outputs for t in [m.tensors[i]] if not t.is_constant}
    if "int16" in acts:
        mode = "int16x8"
    elif acts and acts <= {"int8", "uint8", "int32"}:
        mode = "int8"
    elif "float16" in weights:
        mode = "float16"
    elif "int8" in weights:
        mode = "dynamic"
    else:
        mode = "float32"
    first = m.tensors[m.inputs[0]]
    batch = first.shape_signature[0] if first.shape_signature and first.shape_signature[0] > 0 else None
    return ConvertPlan(
        mode=mode, io_type=first.dtype, per_channel=any(len(t.scales) > 1 for t in m.tensors), batch=batch
    )


#: The modes of a model whose float graph is a flatbuffer (no TensorFlow graph for the converter to start from).
FLATBUFFER_MODES = ("float32", "int8")


def _decoder_plan(recipe: Recipe, target: Target) -> ConvertPlan:
    """A decoder language model runs where LiteRT runs it (prefill and decode signatures, the cache as tensors):
    the phone CPU; int8, int16x8 (16-bit activations and cache, 8-bit weights) or float32."""
    if list(target.checks) != ["litert"]:
        raise CompatibilityError(
            f"{recipe.line_of('targets')}: targets: {target.name} runs {', '.join(target.checks)}; a decoder "
            "language model (two signatures, a KV cache passed between calls) is built for LiteRT targets only "
            "(checks: [litert], a phone CPU): tflite-micro, Vela and the Edge TPU compile one signature"
        )
    mode = recipe.quantize.mode or ("int8" if "int8" in target.numerics.modes else "float32")
    if mode not in target.numerics.modes:
        raise CompatibilityError(f"quantize.mode: {target.name} cannot run {mode!r}")
    io = {"int8": "int8", "int16x8": "int16"}.get(mode, "float32")
    return ConvertPlan(mode=mode, io_type=io, per_channel=True, batch=1)


def resolve_plan(recipe: Recipe, target: Target) -> ConvertPlan:
    """The quantization a target gets: the recipe's where it says, the target's need otherwise. A quantized .tflite
    file is used as it is: a target that cannot run its numerics is refused here, before any work."""
    if recipe.model.is_tflite and (as_is := _tflite_plan(recipe, target)) is not None:
        return as_is
    if recipe.model.kind in ("torch", "onnx"):
        from toolchain.models.source import check_offline

        check_offline(recipe.model)  # the file, and the extra its converter needs
    q, n = recipe.quantize, target.numerics
    if recipe.task == "language_model":
        return _decoder_plan(recipe, target)
    mode = q.mode or _default_mode(recipe, target)
    if mode == "auto":  # the plan search starts from int8 where the target runs it
        mode = "int8" if "int8" in n.modes else _default_mode(recipe, target)
    if recipe.model.kind != "keras" and mode not in FLATBUFFER_MODES:
        raise CompatibilityError(
            f"{recipe.line_of('quantize', 'mode')}: quantize.mode: {mode!r} is made by the TFLite converter from a "
            f"TensorFlow graph; {KIND_NAMES[recipe.model.kind]} model gets float32 (its float graph) or int8 "
            "(the toolchain's calibration)"
        )
    if mode not in n.modes:
        raise CompatibilityError(
            f"{recipe.line_of('quantize', 'mode')}: quantize.mode: {target.name} cannot run {mode!r} "
            f"(it accepts {', '.join(n.modes)})"
        )
    if mode == "int8":
        _check_known_ops(recipe, target)
    io = (q.io_type or n.default_io_type) if mode == "int8" else (q.io_type or "float32")
    if io not in n.io_types:
        raise CompatibilityError(
            f"{recipe.line_of('quantize', 'io_type')}: quantize.io_type: {target.name} cannot take {io!r} "
            f"input/output (it accepts {', '.join(n.io_types)})"
        )
    if (q.own_calibration or q.mixed) and mode != "int8":
        raise CompatibilityError(
            f"{recipe.line_of('quantize')}: quantize: calibration, activations, equalize, bias_correction, smooth, "
            f"float_layers, int16_layers and int4_layers apply to int8; {target.name} gets {mode!r}"
        )
    if mode == "int8":
        _check_mixed(recipe, target, io)
    return ConvertPlan(
        mode=mode,
        io_type=io,
        per_channel=q.per_channel,
        batch=target.batch,
        int16_ops=n.int16_ops if q.int16_layers else None,
        int4_ops=n.int4_ops if q.int4_patterns else None,
    )


def _check_known_ops(recipe: Recipe, target: Target) -> None:
    """Ops the recipe's own architecture is known to make, against the kernels the target's runtime has, before
    anything trains: a GELU Transformer without the rewrite step on tflite-micro. (Every int8 artifact is checked
    again before its runtime runs it: ``checks.kernels``.)"""
    from toolchain.config.recipe import TransformerSpec

    m = recipe.model
    spec = m.transformer or TransformerSpec()
    if m.application != "Transformer" or spec.activation != "gelu" or any(s.step == "rewrite" for s in recipe.compress):
        return
    from toolchain.checks.kernels import refuse_missing

    refuse_missing(target, {"GELU": spec.blocks})


def _default_mode(recipe: Recipe, target: Target) -> str:
    """The target's default mode; for a flatbuffer model the nearest it has (float32 where the target runs it)."""
    n = target.numerics
    if recipe.model.kind == "keras" or n.default_mode in FLATBUFFER_MODES:
        return n.default_mode
    return "float32" if "float32" in n.modes else "int8"


def _tflite_plan(recipe: Recipe, target: Target) -> ConvertPlan | None:
    """A quantized .tflite's own plan (used as it is), checked against the target; None for a float one."""
    from toolchain.models.source import check_offline

    check_offline(recipe.model)
    plan = numerics_of(recipe.model.file.read_bytes())
    if plan.mode == "float32":
        return None
    q = recipe.quantize
    if q.own_calibration or q.mixed or q.mode not in (None, plan.mode):
        raise CompatibilityError(
            f"{recipe.line_of('quantize')}: quantize: {recipe.model.file.name} is already quantized ({plan.mode}) "
            "and is used as it is: quantize modes and calibration options apply to a float model"
        )
    n = target.numerics
    if plan.mode not in n.modes or plan.io_type not in n.io_types:
        raise CompatibilityError(
            f"{recipe.line_of('model', 'file')}: model.file: {recipe.model.file.name} is a {plan.mode} model with "
            f"{plan.io_type} input/output; {target.name} runs {', '.join(n.modes)} models with "
            f"{', '.join(n.io_types)} input/output"
        )
    return plan


def _check_mixed(recipe: Recipe, target: Target, io: str) -> None:
    """Refuse the int8 plan's mixed precision (16-bit activations, 4-bit weights, float layers) where the target
    runs none of it."""
    q, n = recipe.quantize, target.numerics
    if q.int16_layers and n.int16_ops is None:
        raise CompatibilityError(
            f"{recipe.line_of('quantize', 'int16_layers')}: quantize.int16_layers: {target.name} has no 16-bit "
            f"activation kernels (its profile sets no numerics.int16_ops): every layer runs int8 there"
        )
    field = "int4_layers" if q.int4_layers else "int4_select"
    if q.int4_patterns and n.int4_ops is None:
        raise CompatibilityError(
            f"{recipe.line_of('quantize', field)}: quantize.{field}: {target.name} runs no 4-bit weights "
            f"(its profile sets no numerics.int4_ops; measured in toolchain/quantize/int4_ops.yaml)"
        )
    if (q.int16_layers or q.int4_patterns) and io not in ("int8", "float32"):
        raise CompatibilityError(
            f"{recipe.line_of('quantize', 'io_type')}: quantize: mixed-precision artifacts take int8 "
            f"or float32 input/output, not {io!r} ({target.name})"
        )
    if q.float_layers and "float32" not in n.modes:
        raise CompatibilityError(
            f"{recipe.line_of('quantize', 'float_layers')}: quantize.float_layers: {target.name} runs integer models "
            f"only ({', '.join(n.modes)}): no layer can stay in float there"
        )


def plan_variant(recipe: Recipe, plan: str) -> Recipe:
    """The recipe built as ``plan`` (``<name>-<plan>``), for its targets that can run that plan."""
    if plan not in PLAN_MODES:
        raise ConfigError(f"--plans: {plan!r} is not a quantize mode ({', '.join(PLAN_MODES)})")
    q = recipe.quantize.model_copy(update={"mode": plan, "io_type": None})
    variant = recipe.model_copy(update={"name": f"{recipe.name}-{plan}", "quantize": q})
    runnable = []
    for t in variant.targets:
        try:
            resolve_plan(variant, load_target(t))
            runnable.append(t)
        except CompatibilityError as exc:
            log.info("compare --plans: %s skips %s (%s)", plan, t, str(exc).split(": ", 2)[-1])
    if not runnable:
        raise CompatibilityError(f"--plans: no target of {recipe.name} runs {plan!r}")
    return variant.model_copy(update={"targets": runnable})

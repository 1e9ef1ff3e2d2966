"""The convert stage: the TFLite converter for one quantization plan; the converter's output goes to a log."""

from __future__ import annotations

import gzip
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from toolchain.cache import Stage
from toolchain.config import Recipe, Target
from toolchain.convert.tflite import ConvertPlan
from toolchain.errors import CompatibilityError
from toolchain.fsutil import capture_fds
from toolchain.stages.context import Build
from toolchain.stages.data import Data
from toolchain.stages.model import ModelStage
from toolchain.tflite_model import TFLiteModel

log = logging.getLogger(__name__)
STAGE = Stage("convert", 4, tools=("tensorflow",))
CALIBRATE = Stage("calibrate", 1, tools=("tensorflow", "ai-edge-litert"), timing="convert")
QUANTIZE = Stage("quantize", 2, tools=("tensorflow",), timing="convert")


@dataclass
class Artifact:
    blob: bytes
    log: Path | None  # the converter's output
    gzip_bytes: int  # size gzip'd: what unstructured zeros (pruning) save in storage
    ops: dict[str, int]  # operator counts
    io: dict  # input/output tensors: name, shape, dtype, scale, zero point
    quantization: dict | None = None  # the toolchain's calibration: method, ranges clipped (int8 plans)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.blob).hexdigest()


def numerics_of(blob: bytes) -> ConvertPlan:
    """What an existing .tflite is: its quantize mode, I/O type and batch."""
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


def resolve_plan(recipe: Recipe, target: Target) -> ConvertPlan:
    """The quantization a target gets: the recipe's where it says, the target's need otherwise. A .tflite file is
    used as it is: a target that cannot run its numerics is refused here, before any work."""
    if recipe.model.is_tflite:
        from toolchain.models.source import check_offline

        check_offline(recipe.model)
        plan = numerics_of(recipe.model.file.read_bytes())
        n = target.numerics
        if plan.mode not in n.modes or plan.io_type not in n.io_types:
            raise CompatibilityError(
                f"{recipe.line_of('model', 'file')}: model.file: {recipe.model.file.name} is a {plan.mode} model with "
                f"{plan.io_type} input/output; {target.name} runs {', '.join(n.modes)} models with "
                f"{', '.join(n.io_types)} input/output"
            )
        return plan
    q, n = recipe.quantize, target.numerics
    mode = q.mode or n.default_mode
    if mode == "auto":  # the plan search starts from int8 where the target runs it
        mode = "int8" if "int8" in n.modes else n.default_mode
    if mode not in n.modes:
        raise CompatibilityError(
            f"{recipe.line_of('quantize', 'mode')}: quantize.mode: {target.name} cannot run {mode!r} "
            f"(it accepts {', '.join(n.modes)})"
        )
    io = (q.io_type or n.default_io_type) if mode == "int8" else (q.io_type or "float32")
    if io not in n.io_types:
        raise CompatibilityError(
            f"{recipe.line_of('quantize', 'io_type')}: quantize.io_type: {target.name} cannot take {io!r} "
            f"input/output (it accepts {', '.join(n.io_types)})"
        )
    if (q.own_calibration or q.mixed) and mode != "int8":
        raise CompatibilityError(
            f"{recipe.line_of('quantize')}: quantize: calibration, activations, equalize, bias_correction, "
            f"float_layers, int16_layers and int4_layers apply to int8; {target.name} gets {mode!r}"
        )
    if q.int16_layers and mode == "int8" and n.int16_ops is None:
        raise CompatibilityError(
            f"{recipe.line_of('quantize', 'int16_layers')}: quantize.int16_layers: {target.name} has no 16-bit "
            f"activation kernels (its profile sets no numerics.int16_ops): every layer runs int8 there"
        )
    if q.int4_layers and mode == "int8" and n.int4_ops is None:
        raise CompatibilityError(
            f"{recipe.line_of('quantize', 'int4_layers')}: quantize.int4_layers: {target.name} runs no 4-bit weights "
            f"(its profile sets no numerics.int4_ops; measured in toolchain/quantize/int4_ops.yaml)"
        )
    if (q.int16_layers or q.int4_layers) and mode == "int8" and io not in ("int8", "float32"):
        raise CompatibilityError(
            f"{recipe.line_of('quantize', 'io_type')}: quantize: mixed-precision artifacts take int8 "
            f"or float32 input/output, not {io!r} ({target.name})"
        )
    if q.float_layers and mode == "int8" and "float32" not in n.modes:
        raise CompatibilityError(
            f"{recipe.line_of('quantize', 'float_layers')}: quantize.float_layers: {target.name} runs integer models "
            f"only ({', '.join(n.modes)}): no layer can stay in float there"
        )
    return ConvertPlan(
        mode=mode,
        io_type=io,
        per_channel=q.per_channel,
        batch=target.batch,
        int16_ops=n.int16_ops if q.int16_layers else None,
        int4_ops=n.int4_ops if q.int4_layers else None,
    )


def stage_convert(b: Build, model: ModelStage, data: Data, plan: ConvertPlan) -> Artifact:
    if b.recipe.model.is_tflite:  # used as it is
        blob = b.recipe.model.file.read_bytes()
        log.info("convert: none, %s is used as it is (%s, I/O %s)", b.recipe.model.file.name, plan.mode, plan.io_type)
        return Artifact(blob, None, **describe(blob))
    if plan.mode == "int8" and not model.is_qat:
        return stage_quantize(b, model, data, plan)
    quantized = plan.mode in ("int8", "int16x8")
    n_cal = min(b.recipe.quantize.calibration_samples, data.sizes["calib"]) if quantized else 0
    inputs = {"model": model.key, "plan": plan.as_dict(), "calibration": n_cal, "data": data.digest}

    def compute(tmp: Path):
        from toolchain.convert.tflite import convert

        log.info(
            "convert: %s, I/O %s, batch %s%s",
            plan.mode,
            plan.io_type,
            plan.batch or "dynamic",
            f", calibrating on {n_cal} samples" if quantized else "",
        )
        with capture_fds(tmp / "convert.log"):
            blob = convert(model.keras(), plan, [x[:n_cal] for x in data.xs_calib], data.xs_calib[0][:8])
        (tmp / "model.tflite").write_bytes(blob)
        return {"plan": plan.as_dict(), **describe(blob)}, blob

    blob, entry = b.cache.run(STAGE, inputs, compute, lambda entry: entry.file("model.tflite").read_bytes())
    if entry.hit:
        log.info("convert: %s (cached)", plan.mode)
    meta = entry.meta if entry.hit else describe(blob)
    return Artifact(blob, entry.dir / "convert.log", meta["gzip_bytes"], meta["ops"], meta["io"])


def stage_calibrate(b: Build, model: ModelStage, data: Data, batch: int | None, equalize: bool | None = None):
    """The traced float graph (equalized if asked) and its statistics: once per model, calibration and batch form
    (the dynamic-batch graph serves every fixed batch unless it reads its batch size as data)."""
    from toolchain.quantize import stats

    q = b.recipe.quantize
    equalize = q.equalize if equalize is None else equalize
    n_cal = min(q.calibration_samples, data.sizes["calib"])
    inputs = {"model": model.key, "calibration": n_cal, "data": data.digest, "equalize": equalize, "batch": batch}

    def compute(tmp: Path):
        from toolchain.quantize.calibrate import calibrate

        log.info(
            "calibrate: tracing the float graph%s, statistics of %d samples%s",
            f" (batch {batch})" if batch else "",
            n_cal,
            ", equalizing" if equalize else "",
        )
        with capture_fds(tmp / "convert.log"):
            graph, st, meta = calibrate(model.keras(), [x[:n_cal] for x in data.xs_calib], equalize, batch)
        (tmp / "graph.tflite").write_bytes(graph)
        stats.save(st, tmp / "stats.npz")
        return {**meta, "samples": n_cal}, (graph, st)

    def load(entry):
        return entry.file("graph.tflite").read_bytes(), stats.load(entry.file("stats.npz"))

    memo = b.shared.setdefault("calibration", {})
    if (batch, equalize) not in memo:  # once per build, with or without --no-cache
        memo[batch, equalize] = b.cache.run(CALIBRATE, inputs, compute, load)
    (graph, st), entry = memo[batch, equalize]
    return graph, st, entry


def stage_quantize(b: Build, model: ModelStage, data: Data, plan: ConvertPlan) -> Artifact:
    """An int8 artifact from the shared calibration: ranges by the recipe's method, this target's I/O and batch."""
    q = b.recipe.quantize
    graph, st, cal = stage_calibrate(b, model, data, None)
    trace_batch = None
    if plan.batch is not None and not cal.meta["batch_fixable"]:
        graph, st, cal = stage_calibrate(b, model, data, plan.batch)
        trace_batch = plan.batch
    float_nodes = _nodes(graph, model, q.float_layers, "float_layers") if q.float_layers else []
    int16_nodes = _nodes(graph, model, q.int16_layers, "int16_layers") if q.int16_layers else []
    if int16_nodes:
        _check_int16(b, graph, int16_nodes, plan)
    int4_nodes = _int4_nodes(b, graph, model, plan) if q.int4_layers else {}
    settings = {
        "float_nodes": float_nodes,
        "int16_nodes": int16_nodes,
        **({"int4_nodes": int4_nodes} if int4_nodes else {}),  # absent when unused: other cache keys stay as they were
        "method": q.calibration,
        "percentile": q.percentile,
        "symmetric": q.activations == "symmetric",
        "bias_correction": q.bias_correction,
        "io_type": plan.io_type,
        "per_channel": plan.per_channel,
        "batch": None if trace_batch else plan.batch,
    }

    def compute(tmp: Path):
        from toolchain.quantize.calibrate import quantize

        log.info(
            "quantize: int8, I/O %s, batch %s, %s ranges%s",
            plan.io_type,
            plan.batch or "dynamic",
            q.calibration,
            f", {q.activations}"
            + (", bias correction" if q.bias_correction else "")
            + (f", {len(int16_nodes)} ops with 16-bit activations" if int16_nodes else "")
            + (f", {len(int4_nodes)} ops with 4-bit weights" if int4_nodes else "")
            + (f", {len(float_nodes)} ops in float" if float_nodes else ""),
        )
        with capture_fds(tmp / "convert.log"):
            blob, report = quantize(graph, st, **settings)
        (tmp / "model.tflite").write_bytes(blob)
        report |= {
            "samples": cal.meta["samples"],
            "route": cal.meta["route"],
            "equalization": cal.meta.get("equalization"),
            "traced_batch": trace_batch,
        }
        return {"plan": plan.as_dict(), "quantization": report, **describe(blob)}, blob

    blob, entry = b.cache.run(
        QUANTIZE, {"calibration": cal.meta["key"], **settings}, compute, lambda e: e.file("model.tflite").read_bytes()
    )
    if entry.hit:
        log.info("quantize: int8, I/O %s (cached)", plan.io_type)
    meta = entry.meta
    logs = [p for p in (cal.dir / "convert.log", entry.dir / "convert.log") if p.exists()]
    return Artifact(blob, logs[0] if logs else None, meta["gzip_bytes"], meta["ops"], meta["io"], meta["quantization"])


def _check_int16(b: Build, graph: bytes, nodes: list[str], plan: ConvertPlan) -> None:
    """Refuse 16-bit activations on ops the target's runtime has no int16 kernel for (measured data)."""
    from toolchain.quantize.mixed import refused_int16
    from toolchain.tflite_model import TFLiteModel

    m = TFLiteModel(graph)
    ops = {op.name for op in m.ops if op.outputs and m.tensors[op.outputs[0]].name in nodes}
    refused = refused_int16(plan.int16_ops, ops)
    if refused:
        why = "; ".join(f"{op}: {reason}" for op, reason in refused.items())
        raise CompatibilityError(
            f"{b.recipe.line_of('quantize', 'int16_layers')}: quantize.int16_layers: {plan.int16_ops} has no "
            f"16-bit-activation kernel for {', '.join(refused)} ({why})"
        )


WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")


def _int4_nodes(b: Build, graph: bytes, model: ModelStage, plan: ConvertPlan) -> dict[str, str]:
    """The weighted ops of ``quantize.int4_layers`` the target's runtime runs with 4-bit weights ({node: weight
    granularity}); the others keep 8-bit weights, said in the log. None at all: refused."""
    from toolchain.quantize.mixed import int4_plan
    from toolchain.tflite_model import TFLiteModel

    nodes = set(_nodes(graph, model, b.recipe.quantize.int4_layers, "int4_layers"))
    m = TFLiteModel(graph)
    ops = {m.tensors[op.outputs[0]].name: op.name for op in m.ops if op.outputs and op.name in WEIGHTED_OPS}
    ok, kept = int4_plan(plan.int4_ops, {n: k for n, k in ops.items() if n in nodes})
    where = f"{b.recipe.line_of('quantize', 'int4_layers')}: quantize.int4_layers"
    if not ok:
        raise CompatibilityError(
            f"{where}: {plan.int4_ops} runs none of the named layers' ops with 4-bit weights"
            + (f" ({'; '.join(sorted(set(kept.values())))})" if kept else " (they have no conv or dense weights)")
        )
    if kept:
        log.warning(
            "quantize.int4_layers: %d ops keep 8-bit weights on %s (%s)",
            len(kept),
            plan.int4_ops,
            "; ".join(sorted(set(kept.values()))),
        )
    return ok


def _nodes(graph: bytes, model: ModelStage, patterns: list[str], field: str) -> list[str]:
    """The graph's op outputs that belong to a Keras layer matching ``quantize.<field>``."""
    from fnmatch import fnmatchcase

    from toolchain.errors import ConfigError
    from toolchain.quantize.diagnose import layer_of
    from toolchain.quantize.graph import Graph

    g = Graph(graph)
    names = {layer.name for layer in getattr(model.keras(), "layers", [])}
    nodes = [
        g.name(int(o.outputs[0]))
        for o in g.sg.operators
        if len(o.outputs) and any(fnmatchcase(layer_of(g.name(int(o.outputs[0])), names) or "", p) for p in patterns)
    ]
    if not nodes:
        raise ConfigError(f"quantize.{field}: {', '.join(patterns)} match no layer of the model")
    return nodes


def describe(blob: bytes) -> dict:
    """What the record says of an artifact, computed once per artifact (parsing a flatbuffer is not free)."""
    m = TFLiteModel(blob)

    def tensor(i: int) -> dict:
        t = m.tensors[i]
        return {
            "name": t.name,
            "shape": t.shape_signature,
            "dtype": t.dtype,
            "scale": t.scales[0] if t.scales else 0.0,
            "zero_point": t.zero_points[0] if t.zero_points else 0,
        }

    io = {"input": tensor(m.inputs[0]), "output": tensor(m.outputs[0])}
    if len(m.inputs) > 1 or len(m.outputs) > 1:
        io |= {"inputs": [tensor(i) for i in m.inputs], "outputs": [tensor(i) for i in m.outputs]}
    return {"gzip_bytes": len(gzip.compress(blob, mtime=0)), "ops": m.op_counts(), "io": io}

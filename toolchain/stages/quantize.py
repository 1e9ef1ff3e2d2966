"""The quantize stages: the toolchain's own int8 calibration, shared by every int8 target of a build.

``stage_calibrate`` traces the float graph once and collects its statistics on the calibration split (LiteRT);
``stage_quantize`` turns them into one target's int8 artifact: ranges by the recipe's method, the target's I/O
type and batch, layers kept in float, 16-bit activations or 4-bit weights where the recipe names them and the
target's runtime runs them (measured tables, ``toolchain/quantize/*_ops.yaml``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from toolchain.cache import DamagedEntry, Entry, Stage
from toolchain.convert.plan import ConvertPlan
from toolchain.errors import CompatibilityError
from toolchain.fsutil import capture_fds
from toolchain.stages.context import Build
from toolchain.stages.convert import Artifact, describe
from toolchain.stages.data import Data
from toolchain.stages.model import ModelStage

log = logging.getLogger(__name__)
CALIBRATE = Stage("calibrate", 2, tools=("tensorflow", "ai-edge-litert"), timing="convert")
QUANTIZE = Stage("quantize", 3, tools=("tensorflow",), timing="convert")


class Calibration:
    """A traced float graph and its statistics; read from the cache entry only when used (a warm rebuild whose
    quantized artifacts are all cached needs neither, only the entry's key and metadata)."""

    def __init__(self, entry: Entry, value: tuple | None, recompute):
        self.entry, self._value, self._recompute = entry, value, recompute

    @property
    def meta(self) -> dict:
        return self.entry.meta

    @property
    def dir(self) -> Path:
        return self.entry.dir

    def _loaded(self) -> tuple:
        if self._value is None:
            from toolchain.quantize import stats

            try:
                self._value = self.entry.file("graph.tflite").read_bytes(), stats.load(self.entry.file("stats.npz"))
            except DamagedEntry as exc:  # damaged after the lookup: compute it again
                log.warning("cache: %s; calibrating again", exc)
                fresh = self._recompute()
                self.entry, self._value = fresh.entry, fresh._loaded()
        return self._value

    @property
    def graph(self) -> bytes:
        return self._loaded()[0]

    @property
    def stats(self) -> dict:
        return self._loaded()[1]


def stage_calibrate(
    b: Build, model: ModelStage, data: Data, batch: int | None, equalize: bool | None = None, fresh: bool = False
) -> Calibration:
    """The traced float graph (equalized if asked) and its statistics: once per model, calibration and batch form
    (the dynamic-batch graph serves every fixed batch unless it reads its batch size as data)."""
    q = b.recipe.quantize
    equalize = q.equalize if equalize is None else equalize
    n_cal = min(q.calibration_samples, data.sizes["calib"])
    inputs = {"model": model.key, "calibration": n_cal, "data": data.digest, "equalize": equalize, "batch": batch}
    if q.smooth is not None:  # absent when unused: other cache keys stay as they were (Keras models: the recipe)
        inputs["smooth"] = q.smooth.alpha
    spec = b.recipe.data.calibration
    drop = bool(spec and spec.drop_outliers)
    if drop:
        inputs["drop_outliers"] = True

    def compute(tmp: Path):
        from toolchain.quantize import stats
        from toolchain.quantize.calibrate import calibrate

        log.info(
            "calibrate: tracing the float graph%s, statistics of %d samples%s",
            f" (batch {batch})" if batch else "",
            n_cal,
            ", equalizing" if equalize else "",
        )
        xs = [x[:n_cal] for x in data.xs_calib]
        xs, drifted = _checked_against_training(b, data, xs, drop)
        with capture_fds(tmp / "convert.log"):
            source = model.float_blob or model.keras()  # a flatbuffer model's own graph, or the Keras model to trace
            smoothing = None
            if q.smooth is not None:
                from toolchain.quantize.smooth import smooth

                source, smoothing = smooth(source, xs, q.smooth.alpha)
            graph, st, meta = calibrate(source, xs, equalize, batch)
        if smoothing is not None:
            meta["smoothing"] = {"alpha": q.smooth.alpha, "layers": smoothing}
            log.info("calibrate: SmoothQuant (alpha %g) on %d layers", q.smooth.alpha, len(smoothing))
        (tmp / "graph.tflite").write_bytes(graph)
        stats.save(st, tmp / "stats.npz")
        return {**meta, "samples": len(xs[0]), **({"drift": drifted} if drifted else {})}, (graph, st)

    memo = b.shared.setdefault("calibration", {})
    if fresh or (batch, equalize) not in memo:  # once per build, with or without --no-cache
        value, entry = b.cache.run(CALIBRATE, inputs, compute, lambda entry: None, fresh=fresh)
        again = lambda: stage_calibrate(b, model, data, batch, equalize, fresh=True)
        memo[batch, equalize] = Calibration(entry, value, again)
    return memo[batch, equalize]


def _input_ranges(b: Build, data: Data) -> list[list[float]]:
    """``quantize.input_range``: each model input's range from the training split, or from data.normalization."""
    from toolchain.errors import ConfigError

    r = b.recipe
    where = f"{r.line_of('quantize', 'input_range')}: quantize.input_range"
    if r.quantize.input_range == "training":
        from toolchain.data.drift import training_range

        if not data.sizes["train"]:
            raise ConfigError(f"{where}: training: the data has no training split (data.split.train is 0)")
        return [list(training_range(x)) for x in data.xs_train]
    norm = r.data.normalization
    if norm is None and (r.data.builtin or r.data.folder):
        from toolchain.config.recipe import Normalization

        norm = Normalization()  # images' default
    if norm is None:
        raise ConfigError(f"{where}: normalization: the recipe sets no data.normalization to take it from")
    lo, hi = sorted(((0 - norm.mean) / norm.std, (1 - norm.mean) / norm.std))
    return [[lo, hi]] * len(data.input_names)


def _checked_against_training(b: Build, data: Data, xs: list, drop: bool) -> tuple[list, list[dict]]:
    """The calibration inputs checked against the training split (``data.drift``): outlying samples are warned
    about, refused (``data.calibration.strict``) or dropped (``data.calibration.drop_outliers``)."""
    from toolchain.data.drift import describe, drift
    from toolchain.errors import DataShapeError

    if not data.sizes["train"]:
        return xs, []
    found = drift(list(data.xs_train), xs, list(data.input_names))
    spec = b.recipe.data.calibration
    for d in found:
        if spec is not None and spec.strict:
            raise DataShapeError(
                f"{b.recipe.line_of('data', 'calibration')}: data.calibration: {describe(d)} "
                "(strict: set drop_outliers, or clean the set)"
            )
        log.warning(
            "calibration data: %s%s",
            describe(d),
            "; dropped" if drop else " (data.calibration.drop_outliers: true drops them; strict: true refuses the set)",
        )
    if drop and found:
        import numpy as np

        out = sorted(set().union(*(set(d["_outlying"].tolist()) for d in found)))
        keep = np.setdiff1d(np.arange(len(xs[0])), out)
        if not keep.size:
            raise DataShapeError("data.calibration.drop_outliers: every calibration sample is outlying")
        xs = [x[keep] for x in xs]
    return xs, [{k: v for k, v in d.items() if not k.startswith("_")} | {"dropped": drop} for d in found]


def stage_quantize(b: Build, model: ModelStage, data: Data, plan: ConvertPlan) -> Artifact:
    """An int8 artifact from the shared calibration: ranges by the recipe's method, this target's I/O and batch."""
    q = b.recipe.quantize
    cal = stage_calibrate(b, model, data, None)
    trace_batch = None
    if plan.batch is not None and not cal.meta["batch_fixable"] and model.float_graph is None:
        cal = stage_calibrate(b, model, data, plan.batch)
        trace_batch = plan.batch
    float_nodes = _nodes(cal.graph, model, q.float_layers, "float_layers") if q.float_layers else []
    int16_nodes = _nodes(cal.graph, model, q.int16_layers, "int16_layers") if q.int16_layers else []
    if int16_nodes:
        _check_int16(b, cal.graph, int16_nodes, plan)
    int4_nodes = _int4_nodes(b, cal.graph, model, plan) if q.int4_patterns else {}
    settings = {
        "float_nodes": float_nodes,
        "int16_nodes": int16_nodes,
        **({"int4_nodes": int4_nodes} if int4_nodes else {}),  # absent when unused: other cache keys stay as they were
        "method": q.calibration,
        "percentile": q.percentile,
        "max_clipped": q.max_clipped,
        "symmetric": q.activations == "symmetric",
        "bias_correction": q.bias_correction,
        "io_type": plan.io_type,
        "per_channel": plan.per_channel,
        "batch": None if trace_batch else plan.batch,
    }
    select = {"int4_select": q.int4_select.model_dump()} if q.int4_select else {}  # absent when unused, as above
    if q.rounding != "nearest":
        settings["rounding"] = q.rounding  # absent when unused, as above
    if q.input_range != "calibration":
        settings["input_ranges"] = _input_ranges(b, data)

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
        choose = None
        if q.int4_select:
            from toolchain.checks.litert import LiteRT
            from toolchain.checks.metrics import parity, top1
            from toolchain.quantize.int4_select import select

            def run(blob: bytes):
                return LiteRT(blob).predict(list(data.xs_calib))[0]

            def score(ref, out, y):
                return top1(out, y), parity(ref, out)["snr_db"]

            def choose(build):
                s = q.int4_select
                return select(build, run, score, int4_nodes, data.y_calib, s.max_drop, s.min_snr_db)

        with capture_fds(tmp / "convert.log"):
            xs = [x[: cal.meta["samples"]] for x in data.xs_calib]  # the calibration samples, for eq / adaround / admm
            blob, report = quantize(cal.graph, cal.stats, **settings, int4_choose=choose, xs=xs)
        (tmp / "model.tflite").write_bytes(blob)
        for t in report.get("guarded", []):
            log.warning(
                "calibration: %s would clip %.1f %% of %s's calibration values (range [%.4g, %.4g]; "
                "quantize.max_clipped %s): minmax kept for it",
                q.calibration,
                100 * t["clipped"],
                t["tensor"],
                *t["range"],
                q.max_clipped,
            )
        report |= {
            "samples": cal.meta["samples"],
            "route": cal.meta["route"],
            "equalization": cal.meta.get("equalization"),
            **({"smoothing": cal.meta["smoothing"]} if "smoothing" in cal.meta else {}),
            **({"calibration_drift": cal.meta["drift"]} if "drift" in cal.meta else {}),
            "traced_batch": trace_batch,
        }
        return {"plan": plan.as_dict(), "quantization": report, **describe(blob)}, blob

    blob, entry = b.cache.run(
        QUANTIZE,
        {"calibration": cal.meta["key"], **settings, **select},
        compute,
        lambda e: e.file("model.tflite").read_bytes(),
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

    nodes = set(_nodes(graph, model, b.recipe.quantize.int4_patterns, "int4_layers"))
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
    """The graph's op outputs matching ``quantize.<field>``: by the Keras layer they belong to, by the op's output
    tensor name, or by the op type (``SOFTMAX``, ``CONV_2D``: a flatbuffer model's ops have no Keras layer)."""
    from fnmatch import fnmatchcase

    from toolchain.errors import ConfigError
    from toolchain.quantize.diagnose import layer_of
    from toolchain.quantize.graph import Graph

    g = Graph(graph)
    names = model.layer_names()
    nodes = []
    for o in g.sg.operators:
        if not len(o.outputs):
            continue
        tensor = g.name(int(o.outputs[0]))
        keys = [k for k in (layer_of(tensor, names), tensor if not names else None, g.opnames[o.opcodeIndex]) if k]
        if any(fnmatchcase(k, p) for k in keys for p in patterns):
            nodes.append(tensor)
    if not nodes:
        raise ConfigError(f"quantize.{field}: {', '.join(patterns)} match no layer, tensor or op type of the model")
    return nodes

"""The build driver. The stage order is ``build()``; each stage is a function with a cache key.

    data -> model (build/load, train, float reference) -> per target: convert -> validate -> gate -> report

Stages log progress through ``logging`` and never print. Everything TensorFlow writes to the
process's stdout/stderr is captured into ``build/<recipe>/build.log``.
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolchain.cache import Cache, make_key, tool_versions
from toolchain.config import Recipe, Target, load_target
from toolchain.convert.tflite import ConvertPlan
from toolchain.data import Dataset, load_dataset, source_digest
from toolchain.errors import CompatibilityError, GateFailure, RuntimeValidationError
from toolchain.fsutil import atomic_copy, atomic_write, capture_fds, sha256_file, sha256_tree
from toolchain.validate import gates

log = logging.getLogger(__name__)

RECORD_SCHEMA = "toolchain.build/1"
STAGE_VERSIONS = {"data": 1, "model": 1, "compress": 4, "convert": 1}


def resolve_plan(recipe: Recipe, target: Target) -> ConvertPlan:
    """The quantization a target gets: the recipe's where it says, the target's need otherwise."""
    q, n = recipe.quantize, target.numerics
    mode = q.mode or n.default_mode
    if mode not in n.modes:
        raise CompatibilityError(
            f"{recipe.line_of('quantize', 'mode')}: quantize.mode: {target.name} cannot run {mode!r} "
            f"(it accepts {', '.join(n.modes)})"
        )
    if mode == "int8":
        io = q.io_type or n.default_io_type
    else:
        io = q.io_type or "float32"
    if io not in n.io_types:
        raise CompatibilityError(
            f"{recipe.line_of('quantize', 'io_type')}: quantize.io_type: {target.name} cannot take {io!r} "
            f"input/output (it accepts {', '.join(n.io_types)})"
        )
    return ConvertPlan(mode=mode, io_type=io, per_channel=q.per_channel, batch=target.batch)


@dataclass
class Build:
    """What the stages share: the recipe, where to write, the cache and timings."""

    recipe: Recipe
    out: Path
    cache: Cache
    versions: dict = field(default_factory=tool_versions)
    timings: dict = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return self.out / self.recipe.name

    @property
    def log_path(self) -> Path:
        return self.dir / "build.log"

    def timed(self, name: str, started: float) -> None:
        self.timings[name] = round(self.timings.get(name, 0) + time.perf_counter() - started, 3)


# --- stages -------------------------------------------------------------------------------------


def stage_data(b: Build) -> tuple[Dataset, str]:
    from toolchain.models.source import input_shape_of

    t0 = time.perf_counter()
    spec = b.recipe.data
    shape = input_shape_of(b.recipe.model)
    key = make_key(stage="data", v=STAGE_VERSIONS["data"], spec=spec.model_dump(mode="json"), source=source_digest(spec), shape=shape, classes=b.recipe.model.classes)
    hit = b.cache.get("data", key)
    if hit:
        data, digest = Dataset.load(hit / "data.npz"), b.cache.meta("data", key)["digest"]
        log.info("data: %d train / %d calibration / %d eval samples (cached)", len(data.y_train), len(data.y_calib), len(data.y_eval))
    else:
        data = load_dataset(spec, shape, b.recipe.model.classes)
        digest = data.digest
        with b.cache.put("data", key, {"digest": digest}) as d:
            data.save(d / "data.npz")
        log.info("data: %d train / %d calibration / %d eval samples of shape %s", len(data.y_train), len(data.y_calib), len(data.y_eval), data.x_eval.shape[1:])
    b.timed("data", t0)
    return data, digest


@dataclass
class ModelStage:
    key: str
    path: Path  # the saved Keras model (.keras; .h5 after compression, which may hold fake-quant wrappers)
    reference: np.ndarray  # outputs of the float model on the eval split: what every artifact is compared with
    history: dict
    _model: object = None
    steps: list = field(default_factory=list)  # compression step reports

    def keras(self):
        if self._model is None:
            from toolchain.models.compat import keras

            if self.path.suffix == ".h5":
                from toolchain.compress.qat import tfmot

                with tfmot().quantization.keras.quantize_scope():
                    self._model = keras().models.load_model(self.path, compile=False)
            else:
                self._model = keras().models.load_model(self.path, compile=False)
        return self._model


def stage_compress(b: Build, base: ModelStage, data: Dataset, data_digest: str) -> ModelStage:
    """The recipe's compression steps over the trained float model (QAT, pruning, distillation)."""
    r = b.recipe
    if not r.compress:
        return base
    t0 = time.perf_counter()
    key = make_key(stage="compress", v=STAGE_VERSIONS["compress"], base=base.key, steps=[s.model_dump(mode="json") for s in r.compress],
                   strategy=r.strategy.model_dump(mode="json"), data=data_digest, versions={k: b.versions[k] for k in ("tensorflow", "tf_keras", "tensorflow-model-optimization")})
    hit = b.cache.get("compress", key)
    if hit:
        steps = b.cache.meta("compress", key)["steps"]
        log.info("compress: %s (cached)", " -> ".join(s["step"] if s["step"] == "qat" else f"prune {s['method']}" for s in steps))
        stage = ModelStage(key, hit / "model.h5", base.reference, base.history, steps=steps)
    else:
        from toolchain.compress.steps import run

        model, steps = run(base.keras(), r, data, base.keras())
        with b.cache.put("compress", key, {"steps": steps}) as d:
            model.save(d / "model.h5")
        stage = ModelStage(key, b.cache.dir("compress", key) / "model.h5", base.reference, base.history, model, steps)
    b.timed("compress", t0)
    return stage


def stage_model(b: Build, data: Dataset, data_digest: str) -> ModelStage:
    from toolchain.models.source import check_offline

    t0 = time.perf_counter()
    r = b.recipe
    check_offline(r.model)
    file_digest = sha256_tree(r.model.file) if r.model.file else None
    key = make_key(
        stage="model", v=STAGE_VERSIONS["model"], model=r.model.model_dump(mode="json", exclude={"file"}), file=file_digest,
        train=r.train.model_dump(mode="json") if r.train else None, data=data_digest,
        versions={k: b.versions[k] for k in ("tensorflow", "tf_keras")},
    )
    hit = b.cache.get("model", key)
    if hit:
        meta = b.cache.meta("model", key)
        log.info("model: float reference top-1 %.4f (cached)", meta["reference_top1"])
        stage = ModelStage(key, hit / "model.keras", np.load(hit / "reference.npy"), meta["history"])
    else:
        from toolchain.compress.train import fit
        from toolchain.models.source import build_model
        from toolchain.validate.metrics import top1

        from toolchain.models.compat import keras

        keras().utils.set_random_seed(r.train.seed if r.train else 0)  # initial weights too, not only the fit
        model = build_model(r.model)
        history = {}
        if r.train:
            log.info("train: %d epochs on %d samples (this is the slow part)", r.train.epochs, len(data.y_train))
            history = fit(model, data.x_train, data.y_train, r.train, data.x_eval, data.y_eval)
        elif r.model.application:
            log.warning("model: %s has random weights and no 'train' section: accuracy will be at chance", r.model.application)
        reference = model.predict(data.x_eval, batch_size=64, verbose=0)
        ref_top1 = top1(reference, data.y_eval)
        with b.cache.put("model", key, {"reference_top1": ref_top1, "history": history}) as d:
            model.save(d / "model.keras")
            np.save(d / "reference.npy", reference)
        log.info("model: float reference top-1 %.4f on %d eval samples", ref_top1, len(data.y_eval))
        stage = ModelStage(key, b.cache.dir("model", key) / "model.keras", reference, history, model)
    b.timed("model", t0)
    return stage


def stage_convert(b: Build, model: ModelStage, data: Dataset, data_digest: str, plan: ConvertPlan) -> tuple[bytes, Path | None]:
    """Returns the artifact bytes and the converter's log."""
    from toolchain.convert.tflite import convert

    t0 = time.perf_counter()
    n_cal = min(b.recipe.quantize.calibration_samples, len(data.x_calib))
    key = make_key(stage="convert", v=STAGE_VERSIONS["convert"], model=model.key, plan=plan.as_dict(), calibration=n_cal if plan.mode in ("int8", "int16x8") else 0, data=data_digest, versions=b.versions["tensorflow"])
    hit = b.cache.get("convert", key)
    if hit:
        log.info("convert: %s (cached)", plan.mode)
    else:
        log.info("convert: %s, I/O %s, batch %s%s", plan.mode, plan.io_type, plan.batch or "dynamic", f", calibrating on {n_cal} samples" if plan.mode in ("int8", "int16x8") else "")
        with b.cache.put("convert", key, {"plan": plan.as_dict()}) as d:
            with capture_fds(d / "convert.log"):
                blob = convert(model.keras(), plan, data.x_calib[:n_cal])
            (d / "model.tflite").write_bytes(blob)
        hit = b.cache.dir("convert", key)
    b.timed("convert", t0)
    return (hit / "model.tflite").read_bytes(), hit / "convert.log"


def validate(b: Build, target: Target, artifact_path: Path, data: Dataset, model: ModelStage) -> dict:
    """Run the artifact on the target's emulated runtime against the float reference.

    LiteRT always runs (op list, I/O, host numerics); the target's own runtime then adds its section:
    ``memory`` (tflite-micro), ``npu`` (Vela), ``edgetpu`` (Coral's rules) or ``gpu`` (delegate ops).
    """
    from toolchain.runtimes.litert import LiteRT
    from toolchain.validate.metrics import compare, top1

    t0 = time.perf_counter()
    artifact = artifact_path.read_bytes()
    lite = LiteRT(artifact, threads=target.threads)
    lite_out = lite.predict(data.x_eval)
    result = {
        "reference": {"top1": top1(model.reference, data.y_eval)},
        "metrics": compare(model.reference, lite_out, data.y_eval),
        "latency_ms": {**lite.latency_ms(data.x_eval[0]), "threads": target.threads, "source": "measured: host LiteRT/XNNPACK"},
        "ops": lite.ops(),
        "io": lite.io(),
        "runtime": "ai-edge-litert",
        "failures": gates.fit(target, ram=None, flash=len(artifact)) if target.runtime in ("litert", "edgetpu") else [],
    }
    if target.runtime in ("tflm", "vela"):
        result.update(validate_tflm(b, target, artifact_path, data, model, lite_out))
    if target.runtime == "vela":
        from toolchain.runtimes import vela

        npu = vela.compile(artifact_path, target.vela, artifact_path.parent)
        result["npu"] = npu
        result["latency_ms"] = {"estimate": npu["inference_ms"], "source": f"estimate: Vela performance model ({npu['accelerator']}, {npu['system_config']}, {npu['memory_mode']})"}
        result["failures"] += gates.fit(target, ram=npu["sram_bytes"], flash=npu["flash_bytes"] + npu["dram_bytes"])
        from toolchain.package.c_source import write_model_sources

        write_model_sources(Path(npu["vela_model"]).read_bytes(), artifact_path.parent, with_margin(npu["sram_bytes"], target.memory.arena_margin))
    if target.runtime == "edgetpu":
        from toolchain.runtimes.edgetpu import check
        from toolchain.tflite_model import TFLiteModel

        tpu = check(TFLiteModel(artifact), target.edgetpu)
        result["edgetpu"] = tpu
        result["latency_ms"] = {"estimate": tpu["estimate_ms"]["total"], "source": "estimate: Coral Edge TPU rules (MACs at assumed utilization + I/O + streamed parameters + CPU ops)"}
        result["failures"] += [f"edgetpu: the compiler would refuse the model: {r}" for r in tpu["refusals"]]
    if target.gpu_delegate:
        from toolchain.runtimes.gpu import compatibility

        result["gpu"] = compatibility(artifact)
        result["failures"] += [f"gpu: op #{i['index']} {i['op']} falls off the GPU delegate: {i['reason']}" for i in result["gpu"]["incompatible_ops"]]
    b.timed("validate", t0)
    return result


def with_margin(arena: int, margin: float) -> int:
    """An arena size with the target's safety margin, rounded up to 16 bytes."""
    return int(np.ceil(arena * (1 + margin) / 16) * 16)


def validate_tflm(b: Build, target: Target, artifact_path: Path, data: Dataset, model: ModelStage, lite_out: np.ndarray) -> dict:
    """tflite-micro numerics on (a subset of) the eval split; for MCUs also arena, RAM, flash, C sources."""
    from toolchain.runtimes import tflm
    from toolchain.tflite_model import TFLiteModel
    from toolchain.validate.metrics import compare

    n = min(len(data.y_eval), (target.mcu.eval_samples if target.mcu else None) or len(data.y_eval))
    fixed = int(target.memory.arena_kb * 1024) if target.memory.arena_kb else None
    sha = sha256_file(artifact_path)
    key = make_key(stage="tflm", v=1, artifact=sha, samples=n, fixed_arena=fixed, data=b.recipe.data.model_dump(mode="json"), digest=model.key, versions=b.versions["tflite-micro"])
    hit = b.cache.get("tflm", key)
    out: dict = {"failures": []}
    if hit:
        meta = b.cache.meta("tflm", key)
        log.info("tflite-micro: arena %s bytes, %d samples (cached)", meta["arena_bytes"], n)
    else:
        log.info("tflite-micro: bisecting the minimum arena, then running %d eval samples%s", n, f" in the fixed {fixed}-byte arena" if fixed else "")
        meta = {"arena_bytes": None, "arena_recorded_bytes": None, "probes": 0, "error": None, "host_ms": None}
        outputs = None
        try:
            size = artifact_path.stat().st_size
            meta["arena_recorded_bytes"] = tflm.recorded_arena(artifact_path, 10 * size + (1 << 20))
            meta["arena_bytes"], meta["probes"] = tflm.min_arena(artifact_path, meta["arena_recorded_bytes"])
            outputs, meta["host_ms"] = tflm.run(artifact_path, fixed or meta["arena_bytes"], data.x_eval[:n])
        except tflm.TflmCrash as exc:
            meta["error"] = str(exc)
        with b.cache.put("tflm", key, meta) as d:
            if outputs is not None:
                np.save(d / "outputs.npy", outputs)
        hit = b.cache.dir("tflm", key)
    if meta["error"]:
        out["failures"].append(f"tflite-micro: {meta['error']}")
        out["metrics"] = None
        out["runtime"] = "tflite-micro"
        out["memory"] = {"arena_bytes": meta["arena_bytes"], "arena_recorded_bytes": meta["arena_recorded_bytes"], "fixed_arena_bytes": fixed}
        return out
    outputs = np.load(hit / "outputs.npy")
    out["metrics"] = compare(model.reference[:n], outputs, data.y_eval[:n])
    out["metrics_vs_litert"] = compare(lite_out[:n], outputs, np.argmax(lite_out[:n], -1))
    out["runtime"] = "tflite-micro"
    out["reference"] = {"top1": float(np.mean(np.argmax(model.reference[:n], -1) == data.y_eval[:n])), "samples": n}
    if target.runtime != "tflm":
        return out
    m = TFLiteModel(artifact_path.read_bytes())
    margin = fixed or with_margin(meta["arena_bytes"], target.memory.arena_margin)
    io_bytes = sum(m.tensors[i].activation_bytes for i in m.inputs + m.outputs)
    mem = {
        "arena_bytes": meta["arena_bytes"],
        "arena_recorded_bytes": meta["arena_recorded_bytes"],
        "arena_with_margin_bytes": margin,
        "arena_margin": target.memory.arena_margin,
        "fixed_arena_bytes": fixed,
        "arena_probes": meta["probes"],
        "io_bytes": io_bytes,
        "ram_bytes": margin + io_bytes,
        "flash_bytes": artifact_path.stat().st_size,
        "ram_budget_bytes": int(target.memory.ram_kb * 1024) if target.memory.ram_kb else None,
        "flash_budget_bytes": int(target.memory.flash_kb * 1024) if target.memory.flash_kb else None,
    }
    out["memory"] = mem
    out["failures"] += gates.fit(target, mem["ram_bytes"], mem["flash_bytes"])
    macs = m.total_macs()
    out["latency_ms"] = {
        "estimate": macs * target.mcu.cycles_per_mac / (target.clock_mhz * 1e6) * 1e3,
        "source": f"estimate: {macs:,} MACs x {target.mcu.cycles_per_mac} cycles/MAC / {target.clock_mhz:g} MHz",
        "host_tflm_ms": meta["host_ms"],
    }
    from toolchain.package.c_source import write_model_sources

    write_model_sources(artifact_path.read_bytes(), artifact_path.parent, margin)
    return out


# --- driver -------------------------------------------------------------------------------------


def build(recipe: Recipe, target_names: list[str] | None = None, out: Path = Path("build"), use_cache: bool = True) -> dict:
    """Run the recipe for its targets (or ``target_names``) and return the build record."""
    targets = [load_target(n) for n in (target_names or recipe.targets)]
    plans = {t.name: resolve_plan(recipe, t) for t in targets}  # refuse impossible plans before any work
    from toolchain.models.source import check_offline

    check_offline(recipe.model)
    b = Build(recipe, Path(out), Cache(Path(out) / ".cache", enabled=use_cache))
    b.dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with capture_fds(b.log_path):
        if recipe.compress and recipe.strategy.kind != "default":
            from toolchain.compress.common import strategy

            strategy(recipe.strategy)  # logical devices must be set up before TensorFlow runs anything
        data, digest = stage_data(b)
        model = stage_compress(b, stage_model(b, data, digest), data, digest)
        results = [build_target(b, t, plans[t.name], data, digest, model) for t in targets]
    record = {
        "schema": RECORD_SCHEMA,
        "recipe": recipe.name,
        "recipe_file": str(recipe.source) if recipe.source else None,
        "recipe_sha256": sha256_file(recipe.source) if recipe.source else None,
        "data_digest": digest,
        "eval_samples": int(len(data.y_eval)),
        "labels": list(data.labels),
        "tool_versions": b.versions,
        "timings_s": {**b.timings, "total": round(time.perf_counter() - started, 3)},
        "passed": all(r["passed"] for r in results),
        "compression": model.steps,
        "results": results,
    }
    atomic_write(b.dir / "build.json", json.dumps(record, indent=2))
    return record


def build_target(b: Build, target: Target, plan: ConvertPlan, data: Dataset, digest: str, model: ModelStage) -> dict:
    from toolchain.report.markdown import target_markdown

    log.info("target %s (%s, %s)", target.name, target.kind, target.runtime)
    artifact, convert_log = stage_convert(b, model, data, digest, plan)
    tdir = b.dir / target.name
    if tdir.exists():  # regenerated whole: no stale file from an earlier build survives
        shutil.rmtree(tdir)
    name = f"{b.recipe.name}_{plan.mode}.tflite"
    atomic_write(tdir / name, artifact)
    if convert_log and convert_log.exists():
        atomic_copy(convert_log, tdir / "convert.log")
    validated = validate(b, target, tdir / name, data, model)
    result = {
        "target": target.name,
        "kind": target.kind,
        "mode": plan.mode,
        "io_type": plan.io_type,
        "per_channel": plan.per_channel,
        "batch": plan.batch,
        "artifact": str(tdir / name),
        "sha256": sha256_file(tdir / name),
        "size_bytes": len(artifact),
        "size_gzip_bytes": len(gzip.compress(artifact, mtime=0)),
        **validated,
    }
    result["failures"] = validated["failures"] + gates.check(b.recipe.acceptance, result)
    result["passed"] = not result["failures"]
    atomic_write(tdir / "report.json", json.dumps(result, indent=2))
    atomic_write(tdir / "report.md", target_markdown(b.recipe.name, result))
    m = result["metrics"] or {"top1": float("nan"), "top1_agreement": float("nan")}
    log.info("validate %s on %s: top-1 %.4f (reference %.4f), agreement %.4f, %s", target.name, result["runtime"], m["top1"], result["reference"]["top1"], m["top1_agreement"], "passed" if result["passed"] else "FAILED: " + "; ".join(result["failures"]))
    return result


def raise_on_failures(record: dict) -> None:
    """Exit code by the most basic failure: does not fit (9), runtime failure (10), gate (11)."""
    failed = [(r["target"], f) for r in record["results"] for f in r["failures"]]
    if not failed:
        return
    more = f" (+{len(failed) - 1} more, see report.md)" if len(failed) > 1 else ""
    for prefix, error in (("does not fit", CompatibilityError), ("edgetpu:", CompatibilityError), ("tflite-micro:", RuntimeValidationError)):
        hit = next((f for _, f in failed if f.startswith(prefix)), None)
        if hit:
            raise error(f"{hit}{more}")
    target, first = failed[0]
    raise GateFailure(f"gate failed: {target}: {first}{more}")

"""The build driver: the stage order, top to bottom.

    data -> model (build/load, train; float reference) -> compress -> per target:
        convert -> the target's checks -> headline values + gates -> target folder (published whole)
    -> build.json (the typed record, ``toolchain.record``)

Stages live in ``toolchain.stages`` and log progress, never print. Everything TensorFlow writes to the
process's stdout/stderr is captured into ``build/<recipe>/build.log``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from toolchain import checks
from toolchain.cache import tool_versions
from toolchain.config import Recipe, Target, load_target
from toolchain.convert.tflite import ConvertPlan
from toolchain.errors import ConfigError, ToolchainError
from toolchain.fsutil import atomic_copy, atomic_dir, atomic_write, capture_fds, sha256_file
from toolchain.record import BuildRecord, TargetResult, load_record, merge
from toolchain.stages.context import Build, open_build
from toolchain.stages.convert import resolve_plan, stage_convert
from toolchain.stages.data import Data, stage_data
from toolchain.stages.model import ModelStage, stage_compress, stage_model
from toolchain.stages.publish import write_target_files
from toolchain.stages.validate import run_checks, target_result

log = logging.getLogger(__name__)


def build(
    recipe: Recipe,
    target_names: list[str] | None = None,
    out: Path = Path("build"),
    use_cache: bool = True,
    remeasure: bool = False,
    wait: bool = True,
    diagnose_int8: bool = False,
    jobs: int = 1,
) -> BuildRecord:
    """Build the recipe for its targets (or ``target_names``); returns the record of the targets built now.

    ``OUT/<recipe>/build.json`` keeps every target built into that folder from the same recipe text, data and
    tools; it is rewritten after each target, so a target folder and its record entry appear together.
    ``jobs`` > 1: the targets' checks run in that many worker processes (not with ``quantize.mode: auto``,
    whose search is sequential per target).
    """
    targets = [(t, resolve_plan(recipe, t)) for t in map(load_target, target_names or recipe.targets)]
    for name in dict.fromkeys(n for t, _ in targets for n in t.checks):
        checks.get(name)  # unknown checks, like impossible plans, are refused before any work
    from toolchain.models.source import check_offline

    check_offline(recipe.model)
    with open_build(recipe, out, use_cache, remeasure, wait) as b, capture_fds(b.log_path):
        b.diagnose = diagnose_int8
        started, results = time.perf_counter(), []
        _strategy(recipe)
        data = stage_data(b)
        model = stage_compress(b, stage_model(b, data), data)
        if model.steps:
            from toolchain.report.markdown import compression_markdown

            atomic_write(b.dir / "compression.md", compression_markdown(recipe.name, model.steps))
        previous = _previous(b, data, [t.name for t, _ in targets])
        parallel = jobs > 1 and len(targets) > 1 and recipe.quantize.mode != "auto"
        for result in (_build_parallel if parallel else _build_serial)(b, targets, data, model, jobs):
            results.append(result)
            record = _record(b, data, model, results, time.perf_counter() - started)
            atomic_write(b.dir / "build.json", merge(previous, record).to_json() + "\n")
    return record


def default_jobs() -> int:
    """Processes validating targets at once: the cores this process may use, at most 4."""
    import os

    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _build_serial(b: Build, targets: list, data: Data, model: ModelStage, jobs: int):
    for target, plan in targets:
        yield build_target(b, target, plan, data, model)


def _build_parallel(b: Build, targets: list, data: Data, model: ModelStage, jobs: int):
    """Artifacts are converted here one after another (TensorFlow); each target's checks run in a worker
    process as soon as its artifact exists (here, at its turn, when every section is cached); results, folders
    and the workers' log lines come back in the targets' order."""
    import multiprocessing
    from concurrent.futures import Future, ProcessPoolExecutor
    from functools import partial

    from toolchain.stages.validate import all_cached

    pending = []  # (target, plan, artifact, path, final, open atomic_dir, Future or a deferred run_checks)
    pool = None
    try:
        for target, plan in targets:
            log.info("target %s (%s: %s)", target.name, target.kind, ", ".join(target.checks))
            artifact = stage_convert(b, model, data, plan)
            final = inside(b.out, b.dir / target.name)
            folder_cm = atomic_dir(final)
            path = _write_artifact(b, plan, artifact, folder_cm.__enter__())
            builtin = all(type(checks.get(n)).__module__.startswith("toolchain.checks.") for n in target.checks)
            if not builtin or all_cached(b, target, path.name, artifact.sha256, data, model):
                # here, at its turn: nothing to run, or a check registered in this process only (a plug-in)
                work = partial(run_checks, b, target, path, artifact.sha256, data, model)
            else:
                if pool is None:
                    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
                job = (b.cache.root, b.cache.enabled, b.cache.versions, b.remeasure, b.recipe, target, path)
                job += (artifact.sha256, data.digest, list(data.xs_eval), data.y_eval, model.key, model.reference)
                work = pool.submit(validate_job, *job)
            pending.append((target, plan, artifact, path, final, folder_cm, work))
        while pending:
            target, plan, artifact, path, final, folder_cm, work = pending[0]
            sections, lines, timings = work.result() if isinstance(work, Future) else (work(), [], {})
            for name, level, message in lines:
                logging.getLogger(name).log(level, "%s", message)
            for k, v in timings.items():
                b.cache.timings[k] = round(b.cache.timings.get(k, 0) + v, 3)
            result = _publish(b, target, plan, artifact, path, final, sections, data, model)
            pending.pop(0)
            folder_cm.__exit__(None, None, None)
            yield result
    finally:
        for *_, folder_cm, work in pending:  # an error: unpublished folders are removed
            if isinstance(work, Future):
                work.cancel()
            folder_cm.__exit__(RuntimeError, RuntimeError("build stopped"), None)
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def validate_job(cache_root, enabled, versions, remeasure, recipe, target, path, sha, digest, xs, y, key, reference):
    """A worker's share of ``_build_parallel``: one target's checks; returns its sections, its log lines and
    its stage timings."""
    from types import SimpleNamespace

    from toolchain.cache import Cache

    lines: list[tuple[str, int, str]] = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append((record.name, record.levelno, record.getMessage()))

    root = logging.getLogger()
    root.handlers[:] = [Keep(logging.INFO)]
    root.setLevel(logging.INFO)
    b = Build(recipe=recipe, out=Path(path).parent.parent, cache=Cache(cache_root, enabled, versions))
    b.remeasure = remeasure
    data = SimpleNamespace(digest=digest, xs_eval=xs, y_eval=y)
    model = SimpleNamespace(key=key, reference=reference)
    sections = run_checks(b, target, Path(path), sha, data, model)
    return sections, lines, b.cache.timings


#: quantize.mode auto, cheapest first: (name, quantize fields). int8 rungs keep the target's I/O type.
LADDER = (
    ("int8 minmax", {"mode": "int8", "calibration": "minmax"}),
    ("int8 percentile 99.99", {"mode": "int8", "calibration": "percentile", "percentile": 99.99}),
    ("int8 percentile 99.9", {"mode": "int8", "calibration": "percentile", "percentile": 99.9}),
    ("int8 mse", {"mode": "int8", "calibration": "mse"}),
    ("int8 minmax, equalized, bias-corrected", {"mode": "int8", "equalize": True, "bias_correction": True}),
    ("int8, the 3 worst layers (diagnosis) in float", {"mode": "int8", "float_worst": 3}),
    ("int8, the 3 worst layers (diagnosis) with 16-bit activations", {"mode": "int8", "int16_worst": 3}),
    ("int8, quantization-aware training", {"mode": "int8", "qat": True}),
    ("int16x8 (16-bit activations)", {"mode": "int16x8"}),
    ("float16", {"mode": "float16"}),
    ("float32", {"mode": "float32"}),
)


def build_target(b: Build, target: Target, plan: ConvertPlan, data: Data, model: ModelStage) -> TargetResult:
    if b.recipe.quantize.mode == "auto" and not model.is_qat:
        return _plan_search(b, target, data, model)
    return _build_target(b, target, plan, data, model)


def _plan_search(b: Build, target: Target, data: Data, model: ModelStage) -> TargetResult:
    """Climb LADDER for this target: the first plan whose result passes every gate is kept; when none does,
    the most accurate one is, failing. Every rung tried is in the result's ``plan_search``."""
    from dataclasses import replace

    from toolchain.fsutil import atomic_write
    from toolchain.report.markdown import target_markdown

    tried: list[tuple[str, Build, ModelStage, TargetResult]] = []
    for name, fields in LADDER:
        if fields["mode"] not in target.numerics.modes:
            continue
        fields = dict(fields)
        if fields.pop("float_worst", None):
            if "float32" not in target.numerics.modes:
                continue  # an integer-only runtime cannot keep layers in float
            fields["float_layers"] = _worst_layers(b, data, model, 3)
            if not fields["float_layers"]:
                continue
            name = f"int8, {', '.join(fields['float_layers'])} in float (the diagnosis' worst)"
        if fields.pop("int16_worst", None):
            table = target.numerics.int16_ops
            if table is None:
                continue  # no 16-bit kernels on this device
            from toolchain.quantize.mixed import refused_int16

            fields["int16_layers"] = _worst_layers(b, data, model, 3, lambda op, t=table: not refused_int16(t, {op}))
            if not fields["int16_layers"]:
                continue
            name = f"int8, {', '.join(fields['int16_layers'])} with 16-bit activations (the diagnosis' worst)"
        qat = fields.pop("qat", False)
        if qat and (b.recipe.train is None or b.recipe.task != "classification"):
            continue  # QAT trains: only where the recipe trains a classifier
        update = {"calibration": "minmax", "equalize": False, "bias_correction": False}
        update |= {"float_layers": [], "int16_layers": [], **fields}
        if fields["mode"] != "int8":
            update["io_type"] = None
        changes: dict = {"quantize": b.recipe.quantize.model_copy(update=update)}
        if qat:
            from toolchain.config.recipe import QatStep

            changes["compress"] = [QatStep(step="qat")]
        rb = replace(b, recipe=b.recipe.model_copy(update=changes))
        log.info("plan search on %s: trying %s", target.name, name)
        rung_model = stage_compress(rb, model, data) if qat else model
        result = _build_target(rb, target, resolve_plan(rb.recipe, target), data, rung_model)
        tried.append((name, rb, rung_model, result))
        if result.passed:
            break
    if not tried:
        raise ConfigError(f"quantize.mode auto: {target.name} runs none of the plans the search tries")

    def drop(r: TargetResult) -> float:
        return r.metrics.drop if r.metrics and r.metrics.drop is not None else float("inf")

    name, rb, rung_model, chosen = tried[-1] if tried[-1][3].passed else min(tried, key=lambda t: drop(t[3]))
    if chosen is not tried[-1][3]:  # publish the most accurate rung again (its stages are cached)
        chosen = _build_target(rb, target, resolve_plan(rb.recipe, target), data, rung_model)
    log.info(
        "plan search on %s: %s %s",
        target.name,
        name,
        "meets the gates" if chosen.passed else "is the most accurate; no plan met the gates",
    )
    rungs = [
        {
            "plan": n,
            "mode": r.mode,
            "passed": r.passed,
            "metric": r.metrics.headline[1] if r.metrics else None,
            "drop": r.metrics.drop if r.metrics else None,
            "size_bytes": r.size_bytes,
            "latency_ms": r.latency.ms if r.latency else None,
            "latency_kind": r.latency.kind if r.latency else None,
            "failures": [f.message for f in r.failures],
        }
        for n, _, _, r in tried
    ]
    chosen = chosen.model_copy(update={"plan_search": rungs})
    folder = inside(b.out, b.dir / target.name)
    atomic_write(folder / "report.json", chosen.model_dump_json(indent=2) + "\n")
    atomic_write(folder / "report.md", target_markdown(b.recipe.name, chosen))
    return chosen


def _worst_layers(b: Build, data: Data, model: ModelStage, n: int, op_ok=lambda op: True) -> list[str]:
    """The Keras layers the per-layer diagnosis ranks worst for int8 minmax (64 eval samples), among those
    whose op ``op_ok`` accepts."""
    from toolchain.quantize.diagnose import FIXED_RANGE

    plain = {"calibration": "minmax", "activations": "asymmetric", "equalize": False}
    layers = _layers(b, data, model, b.recipe.quantize.model_copy(update=plain), b.recipe.quantize.per_channel, 64)
    worst = [d.layer for d in layers if d.layer and d.op not in FIXED_RANGE and op_ok(d.op)]
    return list(dict.fromkeys(worst))[:n]


def _layers(b: Build, data: Data, model: ModelStage, q, per_channel: bool, samples: int, can_float: bool = True):
    """The per-layer diagnosis of the int8 plan ``q`` (the recipe's quantize settings) on eval samples."""
    from toolchain.quantize.diagnose import diagnose
    from toolchain.stages.convert import stage_calibrate

    graph, stats, _ = stage_calibrate(b, model, data, None, equalize=q.equalize)
    return diagnose(
        graph,
        stats,
        [x[:samples] for x in data.xs_eval],
        method=q.calibration,
        percentile=q.percentile,
        symmetric=q.activations == "symmetric",
        per_channel=per_channel,
        layer_names={layer.name for layer in getattr(model.keras(), "layers", [])},
        can_float=can_float,
    )


def _build_target(b: Build, target: Target, plan: ConvertPlan, data: Data, model: ModelStage) -> TargetResult:
    log.info("target %s (%s: %s)", target.name, target.kind, ", ".join(target.checks))
    artifact = stage_convert(b, model, data, plan)
    final = inside(b.out, b.dir / target.name)
    with atomic_dir(final) as folder:
        path = _write_artifact(b, plan, artifact, folder)
        sections = run_checks(b, target, path, artifact.sha256, data, model)
        return _publish(b, target, plan, artifact, path, final, sections, data, model)


def _write_artifact(b: Build, plan: ConvertPlan, artifact, folder: Path) -> Path:
    """The artifact (and its conversion log) in the target's unpublished folder; returns the artifact's path."""
    path = atomic_write(folder / f"{b.recipe.name}_{plan.mode}.tflite", artifact.blob)
    if artifact.log and artifact.log.exists():
        atomic_copy(artifact.log, folder / "convert.log")
    return path


def _publish(b: Build, target: Target, plan: ConvertPlan, artifact, path: Path, final: Path, sections, data, model):
    """The target's result from its checks' sections, written next to the artifact (reports, diagnosis)."""
    result = target_result(b, target, plan, artifact, path, final, sections)
    write_target_files(path.parent, b.recipe.name, result)
    if b.diagnose and artifact.quantization is not None:
        _write_diagnosis(b, target, plan, data, model, path.parent)
    return result


def _write_diagnosis(b: Build, target: Target, plan: ConvertPlan, data: Data, model: ModelStage, folder: Path):
    from toolchain.report import diagnosis

    d = _diagnosis(b, target, plan, data, model, 64)
    atomic_write(folder / "diagnosis.md", diagnosis.markdown(d))
    atomic_write(folder / "diagnosis.html", diagnosis.html(d))
    atomic_write(folder / "diagnosis.json", json.dumps(d, indent=1, default=float) + "\n")


def inside(out: Path, path: Path) -> Path:
    """``path``, after checking that it stays under the output folder."""
    if not path.resolve().is_relative_to(out.resolve()):
        raise ConfigError(f"{path} is outside the output folder {out}; refusing to write there")
    return path


def _previous(b: Build, data: Data, building: list[str]) -> BuildRecord | None:
    """The folder's record, if the new one extends it; otherwise the old targets' folders are removed."""
    path = b.dir / "build.json"
    if not path.exists():
        return None
    try:
        previous = load_record(path)
    except ToolchainError as exc:
        log.warning("ignoring the unreadable %s (%s)", path, exc)
        return None
    same = previous.recipe_sha256 == (sha256_file(b.recipe.source) if b.recipe.source else None)
    if same and previous.data_digest == data.digest and previous.tool_versions == b.versions:
        return previous
    stale = [r.target for r in previous.results if r.target not in building]
    if stale:
        log.info(
            "the recipe, data or tools changed since %s: removing its other targets' folders (%s)",
            path,
            ", ".join(stale),
        )
    for name in stale:
        shutil.rmtree(inside(b.out, b.dir / name), ignore_errors=True)
    return None


def _record(b: Build, data: Data, model: ModelStage, results: list[TargetResult], seconds: float) -> BuildRecord:
    recipe = b.recipe
    return BuildRecord(
        recipe=recipe.name,
        recipe_file=str(recipe.source) if recipe.source else None,
        recipe_sha256=sha256_file(recipe.source) if recipe.source else None,
        data_digest=data.digest,
        eval_samples=data.sizes["eval"],
        labels=list(data.labels),
        tool_versions=b.versions,
        timings_s={**b.cache.timings, "total": round(seconds, 3)},
        passed=all(r.passed for r in results),
        compression=model.steps,
        results=list(results),
    )


def _strategy(recipe: Recipe) -> None:
    if recipe.compress and recipe.strategy.kind != "default":
        from toolchain.compress.common import strategy

        strategy(recipe.strategy)  # logical devices must be set up before TensorFlow runs anything


def existing_build(recipe: Recipe, out: Path) -> BuildRecord | None:
    """The recipe's build in ``out`` when it was made from this recipe text with these tool versions."""
    path = Path(out) / recipe.name / "build.json"
    if not path.exists():
        return None
    record = load_record(path)
    same = (
        recipe.source and record.recipe_sha256 == sha256_file(recipe.source) and record.tool_versions == tool_versions()
    )
    built = {r.target for r in record.results}
    if same and set(recipe.targets) <= built:
        return record
    if same:
        log.info("the build in %s lacks %s", path.parent, ", ".join(t for t in recipe.targets if t not in built))
    return None


def ensure_build(recipe: Recipe, out: Path) -> BuildRecord:
    """The recipe's existing build (see ``existing_build``), or a new one."""
    record = existing_build(recipe, out)
    if record is not None:
        log.info("using the existing build %s", Path(out) / recipe.name)
        return record
    return build(recipe, None, out)


def diagnose(recipe: Recipe, target_name: str | None, out: Path, samples: int = 64) -> dict:
    """Per-layer diagnosis of the recipe's int8 plan for one target (default: its first int8 target), on the
    build's cached model, data and calibration (built here when missing). Returns the diagnosis as a dict."""
    from toolchain.errors import CompatibilityError

    names = [target_name] if target_name else recipe.targets
    pairs = [(t, resolve_plan(recipe, t)) for t in map(load_target, names)]
    pairs = [(t, p) for t, p in pairs if p.mode == "int8"]
    if recipe.model.is_tflite or not pairs:
        raise CompatibilityError(
            f"{recipe.name}: diagnose explains an int8 plan the toolchain quantizes; "
            + ("a .tflite model is used as it is" if recipe.model.is_tflite else f"{', '.join(names)}: no int8 plan")
        )
    target, plan = pairs[0]
    with open_build(recipe, out, True, False, True) as b, capture_fds(b.log_path):
        data = stage_data(b)
        model = stage_compress(b, stage_model(b, data), data)
        if model.is_qat:
            raise CompatibilityError(f"{recipe.name}: diagnose does not cover QAT models (their ranges are learnt)")
        return _diagnosis(b, target, plan, data, model, samples)


def _diagnosis(b: Build, target: Target, plan: ConvertPlan, data: Data, model: ModelStage, samples: int) -> dict:
    q = b.recipe.quantize
    log.info("diagnose: %s on %s, each layer isolated and accumulated", b.recipe.name, target.name)
    layers = _layers(b, data, model, q, plan.per_channel, samples, can_float=target.kind == "phone")
    method = q.calibration + (f" {q.percentile}" if q.calibration == "percentile" else "")
    return {
        "recipe": b.recipe.name,
        "target": target.name,
        "plan": f"int8, {method} ranges, {q.activations} activations, "
        f"{'per-channel' if plan.per_channel else 'per-tensor'} weights" + (", equalized" if q.equalize else ""),
        "samples": min(samples, data.sizes["eval"]),
        "layers": [asdict(d) for d in layers],
    }


def plan_builds(recipe: Recipe, plans: list[str], out: Path) -> dict[str, BuildRecord]:
    """The recipe built once per quantize plan (``OUT/<recipe>-<plan>``, reused when it exists), each for the
    recipe's targets that can run that plan."""
    from toolchain.errors import CompatibilityError

    modes = ("float32", "dynamic", "float16", "int8", "int16x8")
    for plan in plans:  # every plan is checked before any is built
        if plan not in modes:
            raise ConfigError(f"--plans: {plan!r} is not a quantize mode ({', '.join(modes)})")
    records = {}
    for plan in plans:
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
        variant = variant.model_copy(update={"targets": runnable})
        record = existing_build(variant, out)
        if record is None:
            log.info("compare --plans: building %s for %s", plan, ", ".join(runnable))
            build(variant, None, out)
            record = load_record(Path(out) / variant.name / "build.json")
        records[plan] = record
    return records

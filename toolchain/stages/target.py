"""One target, start to finish: the one place that opens, fills and publishes a target folder.

``start`` makes the target's artifact (used as it is, quantized by the toolchain's calibration, or converted),
opens its folder under a temp name, writes the artifact there and hands its checks to an executor; ``finish``
takes the checks' sections, makes the target's result (headline values, budgets, gates), writes its reports
(and its diagnosis with ``build --diagnose``) and renames the folder into place whole. ``discard`` removes an
unpublished folder. ``build`` is both, in this process (the plan search's rungs).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from toolchain.config import Target
from toolchain.convert.plan import ConvertPlan
from toolchain.errors import ConfigError
from toolchain.executors import INLINE, Executor
from toolchain.fsutil import AtomicDir, atomic_copy, atomic_write
from toolchain.record import TargetResult
from toolchain.stages.context import Build
from toolchain.stages.convert import Artifact, describe, stage_convert
from toolchain.stages.data import Data
from toolchain.stages.model import ModelStage
from toolchain.stages.publish import write_target_files
from toolchain.stages.validate import CheckJob, target_result

log = logging.getLogger(__name__)


@dataclass
class Started:
    """A target whose folder is open and whose checks are running (or done)."""

    target: Target
    plan: ConvertPlan
    artifact: Artifact
    path: Path  # the artifact in the unpublished folder
    final: Path  # where the folder goes
    folder: AtomicDir
    checks: object  # the executor's future of (sections, timings)


def stage_artifact(b: Build, model: ModelStage, data: Data, plan: ConvertPlan) -> Artifact:
    """The target's artifact: a quantized .tflite as it is, a flatbuffer model's float graph, the toolchain's int8
    quantization, or the converter's."""
    if b.recipe.task == "language_model":
        from toolchain.stages.decoder import stage_decoder

        return stage_decoder(b, model, data, plan)
    if b.recipe.model.is_tflite and model.float_graph is None:
        blob = b.recipe.model.file.read_bytes()
        log.info("convert: none, %s is used as it is (%s, I/O %s)", b.recipe.model.file.name, plan.mode, plan.io_type)
        return Artifact(blob, None, **describe(blob))
    if model.float_graph is not None and plan.mode == "float32":
        from toolchain.stages.convert import float_artifact

        return float_artifact(b, model, plan)
    if plan.mode == "int8" and not model.is_qat:
        from toolchain.stages.quantize import stage_quantize

        return stage_quantize(b, model, data, plan)
    return stage_convert(b, model, data, plan)


def start(b: Build, target: Target, plan: ConvertPlan, data: Data, model: ModelStage, executor: Executor) -> Started:
    log.info("target %s (%s: %s)", target.name, target.kind, ", ".join(target.checks))
    artifact = stage_artifact(b, model, data, plan)
    if plan.mode == "int8":
        from toolchain.checks.kernels import refuse_missing

        refuse_missing(target, artifact.ops)  # a kernel the runtime lacks: refused before it runs
    final = inside(b.out, b.dir / target.name)
    folder = AtomicDir(final)
    try:
        path = atomic_write(folder.path / f"{b.recipe.name}_{plan.mode}.tflite", artifact.blob)
        if artifact.log and artifact.log.exists():
            atomic_copy(artifact.log, folder.path / "convert.log")
        job = CheckJob.of(b, target, path, artifact.sha256, data, model)
        here = executor is INLINE or job.in_process_only or job.all_cached()  # nothing to send away
        future = (INLINE if here else executor).submit(job)
    except BaseException:
        folder.discard()
        raise
    return Started(target, plan, artifact, path, final, folder, future)


def finish(b: Build, s: Started, data: Data, model: ModelStage) -> TargetResult:
    """The target's result, written next to its artifact; the folder is published."""
    try:
        sections, timings = s.checks.result()
        b.cache.add_timings(timings)
        result = target_result(b, s.target, s.plan, s.artifact, s.path, s.final, sections)
        write_target_files(s.path.parent, b.recipe.name, result, b.cache)
        if b.diagnose and s.artifact.quantization is not None:
            from toolchain.stages.diagnose import diagnosis, write_diagnosis

            write_diagnosis(s.path.parent, diagnosis(b, s.target, s.plan, data, model, 64, result))
    except BaseException:
        discard(s)
        raise
    s.folder.publish()
    return result


def discard(s: Started) -> None:
    """An unpublished target folder is removed (the build stopped before the target was finished)."""
    s.checks.cancel()
    s.folder.discard()


def build(b: Build, target: Target, plan: ConvertPlan, data: Data, model: ModelStage) -> TargetResult:
    """One target, start to finish, in this process."""
    return finish(b, start(b, target, plan, data, model, INLINE), data, model)


def inside(out: Path, path: Path) -> Path:
    """``path``, after checking that it stays under the output folder."""
    if not path.resolve().is_relative_to(out.resolve()):
        raise ConfigError(f"{path} is outside the output folder {out}; refusing to write there")
    return path

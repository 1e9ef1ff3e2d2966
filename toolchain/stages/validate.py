"""The validate stage: run a target's checks on its artifact, pick the headline values, apply the gates.

Each check's section is cached, keyed by the artifact's sha256 and file name, the data digest, the
float reference (model key), the check's settings, version and tools; the files it wrote and its
outputs on the eval split are cached with it. A check that raises becomes a ``runtime`` failure
(``compat`` for a ``CompatibilityError``) of its target; nothing else is aborted.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from toolchain import checks
from toolchain.cache import Entry, Stage
from toolchain.config import Target
from toolchain.convert.tflite import ConvertPlan
from toolchain.errors import CompatibilityError, ToolchainError
from toolchain.record import HEADLINE, Failure, Memory, Section, TargetResult
from toolchain.stages import gates
from toolchain.stages.context import Build
from toolchain.stages.convert import Artifact
from toolchain.stages.data import Data
from toolchain.stages.model import ModelStage

log = logging.getLogger(__name__)
SECTION_FORMAT = 2  # how sections and outputs are cached (2: metrics by task, outputs.npz with one array per output)


def run_checks(b: Build, target: Target, artifact: Path, sha: str, data: Data, model: ModelStage) -> dict[str, Section]:
    """The sections of the target's checks, in the profile's order; ``artifact`` lies in the target folder."""
    sections, outputs = {}, {}
    for name in target.checks:
        check = checks.get(name)
        stage, inputs = _stage_of(b, target, check, artifact.name, sha, data.digest, model.key)

        def compute(tmp: Path, check=check):
            ctx = checks.CheckContext(
                target, artifact, list(data.xs_eval), data.y_eval, model.reference, b.recipe.task, outputs
            )
            section = check.run(ctx)
            if check.name in outputs:
                section.failures += _nonfinite(check.name, outputs[check.name], section.runtime)
            for f in section.files:
                shutil.copyfile(artifact.parent / f, tmp / f)
            if check.name in outputs:
                np.savez(tmp / "outputs.npz", *outputs[check.name])
            (tmp / "section.json").write_text(section.model_dump_json())
            return {}, section

        def load(entry: Entry, name=name) -> Section:
            section = Section.model_validate_json(entry.file("section.json").read_text())
            for f in section.files:
                shutil.copyfile(entry.file(f), artifact.parent / f)
            if "outputs.npz" in entry.meta["files"]:
                with np.load(entry.file("outputs.npz")) as z:
                    outputs[name] = [z[f"arr_{k}"] for k in range(len(z.files))]
            log.info("%s: %s (cached)", name, _summary(section))
            return section

        try:
            sections[name], _ = b.cache.run(stage, inputs, compute, load, fresh=b.remeasure)
        except Exception as exc:  # a check that raises fails its target, not the build
            log.debug("check %s raised", name, exc_info=True)
            text = str(exc) if isinstance(exc, ToolchainError) else f"{type(exc).__name__}: {exc}"
            kind = "compat" if isinstance(exc, CompatibilityError) else "runtime"
            first = next((line for line in text.splitlines() if line.strip()), type(exc).__name__)
            sections[name] = check.section(failures=[Failure(kind=kind, check=name, message=f"{name}: {first}")])
    return sections


def _stage_of(b: Build, target: Target, check, file: str, sha: str, digest: str, model_key: str):
    stage = Stage(f"check-{check.name}", check.version, tools=check.tools, timing="validate")
    inputs = {
        "format": SECTION_FORMAT,
        "task": b.recipe.task,
        "artifact": sha,
        "file": file,
        "data": digest,
        "reference": model_key,
        "settings": check.settings(target),
    }
    return stage, inputs


def all_cached(b: Build, target: Target, file: str, sha: str, data: Data, model: ModelStage) -> bool:
    """Whether every check of the target would load its section from the cache (nothing to run)."""
    if b.remeasure or not b.cache.enabled:
        return False
    for name in target.checks:
        stage, inputs = _stage_of(b, target, checks.get(name), file, sha, data.digest, model.key)
        if b.cache.lookup(stage, b.cache.key(stage, inputs)) is None:
            return False
    return True


def _nonfinite(check: str, outputs: list[np.ndarray], runtime: str | None) -> list[Failure]:
    """NaN never passes a check: non-finite outputs are a failure of their own kind."""
    bad = np.zeros(len(outputs[0]), dtype=bool)
    for o in outputs:
        bad |= ~np.isfinite(o.reshape(len(o), -1)).all(axis=1)
    if not bad.any():
        return []
    message = (
        f"{check}: the artifact's outputs on {runtime or check} are NaN or infinite on {int(bad.sum())} "
        f"eval samples (the first is eval sample {int(np.argmax(bad))})"
    )
    return [Failure(kind="nonfinite", check=check, message=message)]


def headline_text(m) -> str:
    """``top1 0.9721 (reference 0.9777)``: the task's headline metric, for progress lines."""
    name, value, ref, _ = m.headline
    if value is None:
        return f"{m.samples} samples"
    return f"{name} {value:.4f}" + (f" (reference {ref:.4f})" if ref is not None else "")


def _summary(s: Section) -> str:
    parts = [headline_text(s.metrics)] if s.metrics else []
    parts += [f"{s.latency.ms:.3f} ms ({s.latency.kind})"] if s.latency and s.latency.ms is not None else []
    parts += [f"{len(s.failures)} failure(s)"] if s.failures else []
    return ", ".join(parts) or "done"


def headline(sections: dict[str, Section]) -> dict:
    """THE rule: each headline field is the value of the last check (in the profile's order) that
    provides it, even when that check could not produce it; ``runtime`` follows ``metrics``."""
    out: dict = {field: None for field in HEADLINE}
    owners: dict = {}
    for s in sections.values():
        for field in s.provides:
            out[field], owners[field] = getattr(s, field), s
    out["runtime"] = owners["metrics"].runtime if "metrics" in owners else None
    return out


def target_result(
    b: Build,
    target: Target,
    plan: ConvertPlan,
    artifact: Artifact,
    path: Path,
    final: Path,
    sections: dict[str, Section],
) -> TargetResult:
    """The target's record entry: headline values, budgets and every failure (checks, fit, gates)."""
    size = len(artifact.blob)
    top = headline(sections)
    top["memory"] = top["memory"] or Memory(flash_bytes=size)
    budget = {"ram_bytes": _kb(target.memory.ram_kb), "flash_bytes": _kb(target.memory.flash_kb)}
    failures = [f for s in sections.values() for f in s.failures]
    failures += gates.fit(target.name, top["memory"], budget)
    failures += gates.check(b.recipe.acceptance, top["metrics"], size)
    result = TargetResult(
        target=target.name,
        kind=target.kind,
        mode=plan.mode,
        io_type=plan.io_type,
        per_channel=plan.per_channel,
        batch=plan.batch,
        checks=list(target.checks),
        artifact=str(final / path.name),
        sha256=artifact.sha256,
        size_bytes=size,
        size_gzip_bytes=artifact.gzip_bytes,
        ops=artifact.ops,
        io=artifact.io,
        quantization=artifact.quantization,
        sections=sections,
        budget=budget,
        failures=failures,
        passed=not failures,
        **top,
    )
    met = result.metrics
    log.info(
        "validate %s on %s: %s, %s",
        target.name,
        result.runtime or "-",
        headline_text(met) + (f", agreement {met.top1_agreement:.4f}" if met.top1_agreement is not None else "")
        if met
        else "no metrics",
        "passed" if result.passed else "FAILED: " + "; ".join(f.message for f in failures),
    )
    return result


def _kb(kb: float | None) -> int | None:
    return int(kb * 1024) if kb else None

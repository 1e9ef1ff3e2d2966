"""The validate stage: run a target's checks on its artifact, pick the headline values, apply the gates.

Each check's section is cached, keyed by the artifact's sha256 and file name, the data digest, the
float reference (model key), the check's settings, version and tools; the files it wrote and its
outputs on the eval split are cached with it. A check that raises becomes a ``runtime`` failure
(``compat`` for a ``CompatibilityError``) of its target; nothing else is aborted.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from toolchain import checks
from toolchain.cache import Cache, Entry, Stage
from toolchain.config import Target
from toolchain.convert.plan import ConvertPlan
from toolchain.errors import CompatibilityError, ToolchainError
from toolchain.fsutil import progress
from toolchain.record import HEADLINE, Failure, Memory, Section, TargetResult
from toolchain.stages import gates
from toolchain.stages.context import Build
from toolchain.stages.convert import Artifact
from toolchain.stages.data import Data
from toolchain.stages.model import ModelStage

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)
SECTION_FORMAT = 2  # how sections and outputs are cached (2: metrics by task, outputs.npz with one array per output)


@dataclass
class EvalData:
    """What checks read of the data: its digest and the eval split."""

    digest: str
    xs_eval: list[np.ndarray]
    y_eval: np.ndarray | None


@dataclass
class Reference:
    """What checks read of the float model: its key and its outputs on the eval split."""

    key: str
    reference: list[np.ndarray] | None


@dataclass
class CheckJob:
    """One target's checks on its artifact, with everything they read: picklable, so an executor can run it in
    another process (``run()`` there returns the sections and the stage timings it spent)."""

    cache: Cache
    remeasure: bool
    task: str
    target: Target
    artifact: Path  # in the target's (unpublished) folder
    sha256: str
    data: Data | EvalData  # the eval split, read only when a check runs (a warm rebuild opens no data set)
    model: ModelStage | Reference  # the float reference (its key, and its outputs when a check runs)

    @classmethod
    def of(cls, b: Build, target: Target, artifact: Path, sha: str, data: Data, model: ModelStage) -> CheckJob:
        cache = Cache(b.cache.root, b.cache.enabled, b.cache.versions)  # its own timings
        return cls(cache, b.remeasure, b.recipe.task, target, artifact, sha, data, model)

    def __getstate__(self) -> dict:  # to another process: the eval arrays and the reference themselves
        d, m = self.data, self.model
        return {
            **self.__dict__,
            "data": EvalData(d.digest, list(d.xs_eval), d.y_eval),
            "model": Reference(m.key, m.reference),
        }

    @property
    def in_process_only(self) -> bool:
        """A check registered in this process only (a plug-in) cannot run in a fresh worker process."""
        return not all(type(checks.get(n)).__module__.startswith("toolchain.checks.") for n in self.target.checks)

    def all_cached(self) -> bool:
        """Whether every check would load its section from the cache (nothing to run)."""
        if self.remeasure or not self.cache.enabled:
            return False
        for name in self.target.checks:
            stage, inputs = self._stage_of(checks.get(name))
            if self.cache.lookup(stage, self.cache.key(stage, inputs)) is None:
                return False
        return True

    def _stage_of(self, check) -> tuple[Stage, dict]:
        stage = Stage(f"check-{check.name}", check.version, tools=check.tools, timing="validate")
        inputs = {
            "format": SECTION_FORMAT,
            "task": self.task,
            "artifact": self.sha256,
            "file": self.artifact.name,
            "data": self.data.digest,
            "reference": self.model.key,
            "settings": check.settings(self.target),
        }
        return stage, inputs

    def run(self) -> tuple[dict[str, Section], dict[str, float]]:
        """The sections of the target's checks, in the profile's order, and the stage timings."""
        sections, outputs = {}, _Outputs()
        with progress(log, f"validate {self.target.name}", len(self.target.checks), "checks") as step:
            for name in self.target.checks:
                check = checks.get(name)
                stage, inputs = self._stage_of(check)
                try:
                    compute, load = self._compute(check, outputs), self._load(name, outputs)
                    sections[name], _ = self.cache.run(stage, inputs, compute, load, fresh=self.remeasure)
                except Exception as exc:  # a check that raises fails its target, not the build
                    sections[name] = _raised(check, exc)
                step.update(len(sections))
        return sections, self.cache.timings

    def _compute(self, check, outputs: dict):
        def compute(tmp: Path):
            d = self.data
            ctx = checks.CheckContext(
                self.target, self.artifact, list(d.xs_eval), d.y_eval, lambda: self.model.reference, self.task, outputs
            )
            section = check.run(ctx)
            if check.name in outputs:
                section.failures += _nonfinite(check.name, outputs[check.name], section.runtime)
            for f in section.files:
                shutil.copyfile(self.artifact.parent / f, tmp / f)
            if check.name in outputs:
                import numpy as np

                np.savez(tmp / "outputs.npz", *outputs[check.name])
            (tmp / "section.json").write_text(section.model_dump_json())
            return {}, section

        return compute

    def _load(self, name: str, outputs: dict):
        def load(entry: Entry) -> Section:
            section = Section.model_validate_json(entry.file("section.json").read_text())
            for f in section.files:
                shutil.copyfile(entry.file(f), self.artifact.parent / f)
            if "outputs.npz" in entry.meta["files"]:
                outputs[name] = _reader(entry.file("outputs.npz"))
            log.info("%s: %s (cached)", name, _summary(section))
            return section

        return load


class _Outputs(dict):
    """Each check's outputs on the eval split, for the checks after it; a cached check's are read from its entry
    when a later check first asks for them (a warm rebuild never does)."""

    def __getitem__(self, name: str):
        value = super().__getitem__(name)
        if callable(value):
            self[name] = value = value()
        return value

    def get(self, name: str, default=None):
        return self[name] if name in self else default


def _reader(path: Path):
    def read() -> list:
        import numpy as np

        with np.load(path) as z:
            return [z[f"arr_{k}"] for k in range(len(z.files))]

    return read


def _raised(check, exc: Exception) -> Section:
    """The section of a check that raised: a ``runtime`` failure (``compat`` for a ``CompatibilityError``)."""
    log.debug("check %s raised", check.name, exc_info=True)
    text = str(exc) if isinstance(exc, ToolchainError) else f"{type(exc).__name__}: {exc}"
    kind = "compat" if isinstance(exc, CompatibilityError) else "runtime"
    first = next((line for line in text.splitlines() if line.strip()), type(exc).__name__)
    return check.section(failures=[Failure(kind=kind, check=check.name, message=f"{check.name}: {first}")])


def _nonfinite(check: str, outputs: list[np.ndarray], runtime: str | None) -> list[Failure]:
    """NaN never passes a check: non-finite outputs are a failure of their own kind."""
    import numpy as np

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

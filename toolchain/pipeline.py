"""The build driver: the stage order, top to bottom.

    data -> model (build/load, train; float reference) -> compress -> per target, in one loop:
        artifact (as is | quantize | convert) -> the target's checks (an executor) -> result + gates
        -> target folder, published whole            (``quantize.mode: auto``: the plan search, per target)
    -> build.json (the typed record, ``toolchain.record``), rewritten after each target

The stages live in ``toolchain.stages`` (one module each; ``stages.target`` opens, fills and publishes a
target's folder), the executors in ``toolchain.executors``. Stages log progress, never print. Everything
TensorFlow writes to the process's stdout/stderr is captured into ``build/<recipe>/build.log``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from toolchain import checks
from toolchain.config import Recipe, load_target
from toolchain.errors import CompatibilityError, ToolchainError
from toolchain.executors import INLINE, LocalProcesses
from toolchain.fsutil import atomic_write, capture_fds, sha256_file
from toolchain.record import BuildRecord, TargetResult, load_record, merge, same_build
from toolchain.record import identity as build_identity
from toolchain.stages import target as one
from toolchain.stages.context import Build, open_build
from toolchain.stages.data import Data, stage_data
from toolchain.stages.model import ModelStage, stage_compress, stage_model
from toolchain.stages.plan import plan_variant, resolve_plan
from toolchain.stages.publish import write_compression

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
    reuse: bool = False,
    cache_root: Path | None = None,
    shared: bool = False,
    executor=None,
) -> BuildRecord:
    """Build the recipe for its targets (or ``target_names``); returns the record of the targets built now.

    ``OUT/<recipe>/build.json`` keeps every target built into that folder as the same build (``same_build``);
    it is rewritten after each target, so a target folder and its record entry appear together. ``jobs`` > 1:
    the targets' checks run in that many worker processes. ``reuse``: when the folder already holds this build
    with every target asked for, its record is returned and nothing is built ("build if missing").
    ``cache_root`` and ``shared``: see ``stages.context.open_build`` (a search's trials, builds on a cluster).
    ``executor``: where the targets' checks run instead (a Dask cluster, ``executors.dask``; its workers must reach
    OUT at the same path).
    """
    targets = [(t, resolve_plan(recipe, t)) for t in map(load_target, dict.fromkeys(target_names or recipe.targets))]
    for name in dict.fromkeys(n for t, _ in targets for n in t.checks):
        checks.get(name)  # unknown checks, like impossible plans, are refused before any work
    from toolchain.models.source import check_offline

    check_offline(recipe.model)
    opened = open_build(recipe, out, use_cache, remeasure, wait, cache_root, shared)
    with opened as b, capture_fds(b.log_path):
        b.diagnose, started = diagnose_int8, time.perf_counter()
        log.info("build %s for %s into %s", recipe.name, ", ".join(t.name for t, _ in targets), b.dir)
        _threads(recipe)
        _strategy(recipe)
        _starting(recipe, "data")
        data = stage_data(b)
        identity = _identity(b, data)
        previous = _previous(b, identity, [t.name for t, _ in targets])
        if reuse and previous:
            missing = [t.name for t, _ in targets if t.name not in {r.target for r in previous.results}]
            if not missing:
                log.info("using the existing build %s", b.dir)
                return previous
            log.info("the build in %s lacks %s", b.dir, ", ".join(missing))
        _starting(recipe, "model")
        model = stage_compress(b, stage_model(b, data), data)
        write_compression(b.dir, recipe.name, model.steps)
        results: list[TargetResult] = []
        owned = executor is None  # one the caller gave serves other builds too: the caller closes it
        if owned:
            executor = LocalProcesses(jobs) if jobs > 1 and len(targets) > 1 else INLINE
        with executor if owned else nullcontext(executor):
            for result in _targets(b, targets, data, model, executor):
                results.append(result)
                record = _record(b, identity, data, model, results, time.perf_counter() - started)
                atomic_write(b.dir / "build.json", merge(previous, record).to_json() + "\n")
    return record


def _targets(b: Build, targets: list, data: Data, model: ModelStage, executor):
    """THE target loop: each target's result, in the targets' order. A target is started (artifact made, its
    checks handed to the executor) and finished (result, reports, folder published) oldest first, keeping at
    most ``executor.depth`` in flight; a target of the plan search is searched here, rung by rung."""
    pending: deque[one.Started] = deque()
    searching = b.recipe.quantize.mode == "auto" and not model.is_qat  # a QAT model's ranges are learnt
    if searching:
        from toolchain.stages.search import plan_search
    try:
        for target, plan in targets:
            if searching:
                yield plan_search(b, target, data, model)
                continue
            pending.append(one.start(b, target, plan, data, model, executor))
            while len(pending) >= executor.depth:
                yield one.finish(b, pending.popleft(), data, model)
        while pending:
            yield one.finish(b, pending.popleft(), data, model)
    finally:
        for started in pending:  # the build stopped: unpublished folders are removed
            one.discard(started)


def _identity(b: Build, data: Data) -> dict:
    source = b.recipe.source
    sha = sha256_file(source) if source else None
    return build_identity(b.recipe.name, sha, data.digest, b.versions)


def _previous(b: Build, identity: dict, building: list[str]) -> BuildRecord | None:
    """The folder's record, if it is the same build; otherwise the old targets' folders are removed."""
    path = b.dir / "build.json"
    if not path.exists():
        return None
    try:
        previous = load_record(path)
    except ToolchainError as exc:
        log.warning("ignoring the unreadable %s (%s)", path, exc)
        return None
    if same_build(previous, identity):
        return previous
    stale = [r.target for r in previous.results if r.target not in building]
    if stale:
        log.info("the recipe, data or tools changed since %s: removing its other targets' folders (%s)", path,
                 ", ".join(stale))  # fmt: skip
    for name in stale:
        shutil.rmtree(one.inside(b.out, b.dir / name), ignore_errors=True)
    return None


def _record(b: Build, identity: dict, data: Data, model: ModelStage, results: list, seconds: float) -> BuildRecord:
    return BuildRecord(
        **identity,
        recipe_file=str(b.recipe.source) if b.recipe.source else None,
        eval_samples=data.sizes["eval"],
        labels=list(data.labels),
        timings_s={**b.cache.timings, "total": round(seconds, 3)},
        passed=all(r.passed for r in results),
        compression=model.steps,
        results=list(results),
    )


def _starting(recipe: Recipe, stage: str) -> None:
    """The line saying what a stage is starting on (on a first build its first seconds go to TensorFlow loading):
    its own line follows when it is done, saying "(cached)" when it was."""
    if stage == "data":
        d = recipe.data
        log.info("data: loading %s", f"the builtin {d.builtin}" if d.builtin else (d.folder or d.npz or d.text).name)
    else:
        m = recipe.model
        log.info("model: %s", f"building {m.application}" if m.application else f"loading {m.file.name}")


def _threads(recipe: Recipe) -> None:
    if recipe.train and recipe.train.threads:
        from toolchain.compress.train import set_threads

        set_threads(recipe.train.threads)  # before TensorFlow's first op in this build


def _strategy(recipe: Recipe) -> None:
    if recipe.compress and recipe.strategy.kind != "default":
        from toolchain.compress.common import strategy

        strategy(recipe.strategy)  # logical devices must be set up before TensorFlow runs anything


@dataclass
class BuildJob:
    """One whole build, run on a cluster's worker (``build RECIPE... --workers/--scheduler``, ``compare --plans``):
    the recipe as its fields (``tree``) and file (``source``), built into OUT beside the others (``shared``: the
    client holds OUT's lock); returns the record's JSON. A ToolchainError is raised on the client as it is."""

    tree: dict
    source: str | None
    out: str
    targets_dir: str
    targets: list[str] | None = None
    reuse: bool = False
    options: dict = field(default_factory=dict)

    @classmethod
    def of(cls, recipe: Recipe, out: Path, targets=None, reuse=False, **options) -> BuildJob:
        from toolchain.config import loader

        tree = recipe.model_dump(mode="json", exclude_unset=True)
        source = str(recipe.source) if recipe.source else None
        return cls(tree, source, str(out), str(loader.TARGETS_DIR), targets, reuse, options)

    def run(self) -> str:
        from toolchain.config.loader import set_targets_dir

        set_targets_dir(self.targets_dir)
        recipe = Recipe.model_validate(self.tree).model_copy(
            update={"source": Path(self.source) if self.source else None}
        )
        opts = {"jobs": 1, **self.options}
        return build(recipe, self.targets, Path(self.out), reuse=self.reuse, shared=True, **opts).to_json()


def build_many(recipes: list[Recipe], out: Path, executor, targets=None, wait=True, **options) -> list[BuildRecord]:
    """Several recipes built at once into OUT, one job each on ``executor`` (a Dask cluster), this process holding
    OUT's lock; their records in the recipes' order. The first error of a build is raised, after every build ended."""
    from toolchain.record import parse_record
    from toolchain.stages.context import hold

    names = [r.name for r in recipes]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ToolchainError(f"recipes named alike would build into one folder: {', '.join(twice)}")
    with hold(out, wait):
        futures = [executor.submit(BuildJob.of(r, out, targets, **options)) for r in recipes]
        records, first = [], None
        for r, f in zip(recipes, futures, strict=True):
            try:
                records.append(parse_record(json.loads(f.result())))
                log.info("built %s", r.name)
            except ToolchainError as exc:
                first = first or exc
                log.error("%s: %s", r.name, exc)
        if first is not None:
            raise first
    return records


def ensure_build(recipe: Recipe, out: Path, target_names: list[str] | None = None) -> BuildRecord:
    """THE "build if missing" policy (``package``, ``compare --build``, ``compare --plans``): the folder's record
    when it is this build with every target asked for, else a build (whose cached stages make it quick)."""
    build(recipe, target_names, out, reuse=True)
    return load_record(Path(out) / recipe.name / "build.json")


def plan_builds(recipe: Recipe, plans: list[str], out: Path, executor=None) -> dict[str, BuildRecord]:
    """The recipe built once per quantize plan (``OUT/<recipe>-<plan>``, reused when it exists), each for the
    recipe's targets that can run that plan; every plan is checked before any is built. ``executor``: the plans
    built at once, one job each (a Dask cluster)."""
    variants = {plan: plan_variant(recipe, plan) for plan in plans}
    if executor is not None:
        records = build_many(list(variants.values()), out, executor, reuse=True)
        return dict(zip(variants, records, strict=True))
    return {plan: ensure_build(variant, out) for plan, variant in variants.items()}


def diagnose(recipe: Recipe, target_name: str | None, out: Path, samples: int = 64) -> dict:
    """Per-layer diagnosis of the recipe's int8 plan for one target (default: its first int8 target), on the
    build's cached model, data and calibration (built here when missing). Returns the diagnosis as a dict."""
    from toolchain.stages.diagnose import diagnosis, int8_target

    target, plan = int8_target(recipe, target_name)
    with open_build(recipe, out, True, False, True) as b, capture_fds(b.log_path):
        _starting(recipe, "data")
        data = stage_data(b)
        _starting(recipe, "model")
        model = stage_compress(b, stage_model(b, data), data)
        if model.is_qat:
            raise CompatibilityError(f"{recipe.name}: diagnose does not cover QAT models (their ranges are learnt)")
        return diagnosis(b, target, plan, data, model, samples)

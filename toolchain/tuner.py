"""``toolchain search``: the device-constrained model search of a recipe's ``search:`` block.

One Optuna study per searched target (in one database: SQLite in the build folder by default, PostgreSQL to
share). Each trial is a point of the space built for its target as a normal build (``pipeline.build``) of the
recipe at that point, in its own folder ``OUT/<recipe>/trials/<target>-<key>`` keyed by the point's content,
with the stage cache of ``OUT`` shared: a repeated point, or the same model on another target, hits the cache.
Trials run as jobs on an executor (a Dask cluster: ``executors.dask``) and only their results come back here;
this process alone tells the studies and writes the search record ``OUT/<recipe>/search.json``.

    open the studies (trials a stopped client left running: failed as interrupted, their points queued again)
    -> until each study has its trials: ask a point, submit its build, keep every worker busy
       -> a finished trial: its objectives and constraint values told to its study, the record rewritten
    -> per target: the Pareto front of the feasible trials, the point to ship (or the closest one)
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain.config import Recipe, load_target
from toolchain.config.search import DIRECTIONS, point_key, study_key, variant
from toolchain.errors import CompatibilityError, ConfigError, ToolchainError
from toolchain.fsutil import atomic_write, capture_fds, held_signals, progress
from toolchain.search import pareto, space, storage

log = logging.getLogger(__name__)
SCHEMA = "toolchain.search/1"
#: objectives measured only where a device's memory is (an MCU's arena, an NPU's SRAM): not on a phone or a TPU
MEMORY_OBJECTIVES = {"ram", "flash", "arena"}


class Pruned(Exception):
    """The median stopping rule stopped a trial after an epoch."""

    def __init__(self, epoch: int, value: float, median: float):
        super().__init__(f"epoch {epoch}: eval {value:.4f} below the median {median:.4f} of the finished trials")
        self.epoch, self.value, self.median = epoch, value, median


@dataclass
class TrialJob:
    """One trial, run on a worker: the recipe at one point, built for one target in its own folder with the
    search's stage cache. ``prune_below[e - 1]``: the median eval metric of finished trials after epoch ``e``."""

    tree: dict
    target: str
    folder: str
    cache: str
    targets_dir: str
    prune_below: list[float | None] | None = None
    warmup: int = 0
    curve: list[float] = field(default_factory=list)

    def _watch(self, epoch: int, value: float | None) -> None:
        if value is None:
            return
        self.curve.append(float(value))
        limits = self.prune_below or []
        median = limits[epoch - 1] if epoch - 1 < len(limits) else None
        if epoch > self.warmup and median is not None and (not math.isfinite(value) or value < median):
            raise Pruned(epoch, float(value), median)

    def run(self) -> dict:
        started = time.perf_counter()
        folder = Path(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        root, saved = logging.getLogger(), logging.getLogger().handlers[:]
        handler = logging.FileHandler(folder / "trial.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        log.info("trial: %s for %s, in process %d on %s", self.tree.get("name"), self.target, os.getpid(), _host())
        out: dict[str, Any] = {"state": "failed", "result": None, "reason": None}
        try:
            with capture_fds(folder / "trial.log"):  # TensorFlow's chatter too, from its first import
                self._build(folder, out)
        finally:
            root.handlers[:] = saved
            handler.close()
        out.update(curve=self.curve, seconds=round(time.perf_counter() - started, 2))
        return out

    def _build(self, folder: Path, out: dict) -> None:
        from toolchain import pipeline
        from toolchain.compress.train import watching

        try:
            import yaml

            from toolchain.config import load_recipe
            from toolchain.config.loader import set_targets_dir

            _tf_threads()
            set_targets_dir(self.targets_dir)
            path = folder / "recipe.yaml"  # the trial is a normal build of a recipe file
            if not path.exists():
                atomic_write(path, yaml.safe_dump(self.tree, sort_keys=False))
            recipe = load_recipe(path)
            with watching(self._watch):
                record = pipeline.build(recipe, [self.target], folder, jobs=1, reuse=True, cache_root=Path(self.cache))
            out.update(state="complete", result=record.result(self.target).model_dump(mode="json"))
        except Pruned as exc:
            out.update(state="pruned", reason=str(exc), pruned_at=exc.epoch)
        except ToolchainError as exc:
            out.update(reason=f"{type(exc).__name__}: {exc}", exit_code=exc.exit_code)
        except Exception as exc:  # a bug, not the point: recorded with the trial, the search goes on
            out.update(reason=f"internal error: {type(exc).__name__}: {exc}")


def _host() -> str:
    import socket

    return socket.gethostname()


def _tf_threads() -> None:
    """TensorFlow's thread pools at the worker's share of its host (``TOOLCHAIN_THREADS``), before its first op."""
    n = int(os.environ.get("TOOLCHAIN_THREADS", "0"))
    if n > 0:
        from toolchain.compress.train import set_threads

        set_threads(n)


# --- the client ------------------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    study: Any
    want: int  # finished trials wanted
    running: dict = field(default_factory=dict)  # future -> (trial, key, params)
    waiting: dict = field(default_factory=dict)  # key -> [(trial, params)]: the same point, asked while it runs
    outcomes: dict = field(default_factory=dict)  # key -> the outcome of a point built in this run


def searched_targets(recipe: Recipe) -> list[str]:
    return list(recipe.search.targets or recipe.targets)


def check(recipe: Recipe) -> list:
    """Everything refused before any work: no search block, objectives a target does not measure, values of the
    space a target cannot run. Returns the target profiles."""
    if recipe.search is None:
        raise ConfigError(
            f"{recipe.source}: no 'search:' block: add one with a space, e.g. search: {{space: {{model.alpha: "
            "[0.35, 0.5]}}}}"
        )
    from toolchain.config.search import corners
    from toolchain.stages.plan import resolve_plan

    spec, profiles = recipe.search, [load_target(t) for t in searched_targets(recipe)]
    for t in profiles:
        for o in spec.objectives:
            if o in MEMORY_OBJECTIVES and t.kind not in ("mcu", "npu"):
                raise ConfigError(
                    f"{recipe.line_of('search', 'objectives')}: search.objectives: {o!r} is not measured on {t.name} "
                    f"({t.kind}): search it on MCU and NPU targets, or leave it out"
                )
        for path, value in [("", None), *corners(spec)]:
            point = {path: value} if path else {}
            try:
                resolve_plan(variant(recipe, point, recipe.name, [t.name]), t)
            except CompatibilityError as exc:
                where = f"search.space.{path}: {value!r}" if path else "the recipe"
                raise ConfigError(
                    f"{recipe.line_of('search', 'space', path) if path else recipe.source}: {where} cannot be built "
                    f"for {t.name}: {str(exc).rsplit(': ', 1)[-1]}"
                ) from None
    return profiles


def _sampler(spec, trials: int, index: int = 0):
    """The study's sampler; seeded per target (``index``): with one seed every target's first points would be the
    same, and their trials would train the same model at the same time."""
    optuna = storage.quiet_optuna()
    seed = spec.seed + index
    if spec.sampler == "nsga2":  # a few generations within the trials asked for
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, trials // 3)))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(4, min(10, trials // 3)))


def study_names(recipe: Recipe) -> dict[str, str]:
    key = study_key(recipe)
    return {t: f"{recipe.name}/{t}/{key}" for t in searched_targets(recipe)}


def search(recipe: Recipe, out: Path, executor_of, storage_url: str, trials: int | None = None) -> dict:
    """Run the search until each target's study has ``trials`` finished trials (complete, pruned or failed) on the
    executor ``executor_of()`` makes (first: an unreachable scheduler fails before anything is written); returns
    the search record (also written to ``OUT/<recipe>/search.json`` after every trial)."""
    with executor_of() as executor:
        return _search(recipe, Path(out), executor, storage_url, trials or recipe.search.trials)


def _search(recipe: Recipe, out: Path, executor, storage_url: str, want: int) -> dict:
    spec = recipe.search
    directions = [DIRECTIONS[o] for o in spec.objectives]
    dists = space.distributions(spec)
    folder = out / recipe.name
    folder.mkdir(parents=True, exist_ok=True)  # the default database's folder
    db = storage.open_storage(storage_url)
    names = study_names(recipe)
    targets = []
    for i, (t, name) in enumerate(names.items()):
        study = storage.open_study(db, name, directions, _sampler(spec, want, i))
        lost = storage.recover(study, dists)
        if lost:
            log.info("search: %s: %d trial%s a stopped search left running, queued again", t, lost, "s" * (lost > 1))
        targets.append(Target(t, study, want))
    total = sum(max(0, want - storage.counts(x.study)["finished"]) for x in targets)
    log.info(
        "search %s: %d trial%s to run for %s (%s), storage %s",
        recipe.name,
        total,
        "s" * (total != 1),
        ", ".join(names),
        ", ".join(spec.objectives),
        storage.masked(storage_url),
    )
    record = lambda: _record(recipe, targets, storage_url)  # noqa: E731
    start = sum(storage.counts(t.study)["finished"] for t in targets)
    turn = -1
    try:
        with progress(log, "search", total, "trials", every=30) as bar:
            while total:
                while _running(targets) < executor.depth and any(map(_needs, targets)):
                    turn += 1  # keep every worker busy, the targets in turn (the one after the last served first)
                    for t in targets[turn % len(targets) :] + targets[: turn % len(targets)]:
                        if _needs(t) and _running(targets) < executor.depth:
                            with held_signals():  # a trial asked is a trial recorded, or Ctrl-C leaves it running
                                _submit(recipe, t, dists, executor, folder, out / ".cache", targets)
                            break
                finished = [(t, f) for t in targets for f in list(t.running) if f.done()]
                if not finished:
                    if not _running(targets):
                        break
                    time.sleep(0.2)
                    continue
                for t, f in finished:
                    with held_signals():  # a finished trial is told, not lost between the two books
                        trial, key, params = t.running.pop(f)
                        t.outcomes[key] = _result(f)
                        for tr, p in [(trial, params), *t.waiting.pop(key, [])]:
                            line = _tell(recipe, t, tr, key, p, t.outcomes[key], same=tr is not trial)
                            done = sum(storage.counts(x.study)["finished"] for x in targets) - start
                            bar.update(done, f"search: {line}; {_state(targets, spec)}")
                    atomic_write(folder / "search.json", _json(record()))
    except BaseException:  # Ctrl-C, SIGTERM, a lost scheduler: the running trials are lost, their points kept
        for t in targets:
            for f in t.running:
                f.cancel()
            lost = [trial.number for trial, _, _ in t.running.values()]
            lost += [trial.number for same in t.waiting.values() for trial, _ in same]
            storage.recover(t.study, dists, lost)
            t.running.clear()
            t.waiting.clear()
        atomic_write(folder / "search.json", _json(record()))
        raise
    result = record()
    atomic_write(folder / "search.json", _json(result))
    return result


def _needs(t: Target) -> bool:
    c = storage.counts(t.study)
    return c["finished"] + len(t.running) + sum(map(len, t.waiting.values())) < t.want


def _running(targets) -> int:
    return sum(len(t.running) for t in targets)


def _state(targets, spec) -> str:
    """``7/24 done, 2 running, 0 failed, 1 pruned; best cortex-m4 #5 97.22 % 120.4 ms``."""
    from toolchain.report import units

    c = [storage.counts(t.study) for t in targets]
    best = []
    for t in targets:
        b = pareto.best(points(t.study, spec), spec.objectives)
        if b is not None:
            r = b.extra.get("result") or {}
            best.append(
                f"{t.name} #{b.number} {units.metric(r.get('task', 'classification'), r.get('metric'))} "
                f"{units.ms(r.get('latency_ms'))} ms"
            )
    return (
        f"{sum(x['finished'] for x in c)}/{sum(t.want for t in targets)} done, {_running(targets)} running, "
        f"{sum(x['failed'] for x in c)} failed, {sum(x['pruned'] for x in c)} pruned"
        + (f"; best {', '.join(best)}" if best else "; no feasible point yet")
    )


def _medians(targets, epochs: int | None) -> tuple[list[float | None], int]:
    """The median eval metric after each epoch of this search's complete trials that trained on the same schedule
    (``epochs``: a cosine schedule of 8 epochs is not where one of 16 is after epoch 5), and how many there are."""
    from optuna.trial import TrialState

    curves = [
        tr.user_attrs["curve"]
        for t in targets
        for tr in t.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if tr.user_attrs.get("curve") and tr.user_attrs.get("epochs") == epochs
    ]
    longest = max((len(c) for c in curves), default=0)
    out: list[float | None] = []
    for e in range(longest):
        at = [c[e] for c in curves if len(c) > e]
        out.append(statistics.median(at) if at else None)
    return out, len(curves)


def _submit(recipe: Recipe, t: Target, dists, executor, folder: Path, cache: Path, targets) -> None:
    spec = recipe.search
    trial = t.study.ask(dists)
    params = space.decode(spec, trial.params)
    point = dict(params)
    if recipe.train is not None and "train.threads" not in point:  # what the trial trains with, in its recipe
        point["train.threads"] = executor.threads
    key = point_key(recipe, point, t.name)
    tree = variant(recipe, point, f"{recipe.name}-{key[:8]}", [t.name]).model_dump(mode="json", exclude_unset=True)
    epochs = (tree.get("train") or {}).get("epochs")
    for k, v in (("key", key), ("recipe", tree), ("params", params), ("epochs", epochs)):
        trial.set_user_attr(k, v)
    if key in t.outcomes:  # a point already built in this run: its outcome again, nothing built
        log.info("search: %s", _tell(recipe, t, trial, key, params, t.outcomes[key], same=True))
        return
    if any(k == key for _, k, _ in t.running.values()):  # running now: told the same when it finishes
        t.waiting.setdefault(key, []).append((trial, params))
        return
    medians, finished = _medians(targets, epochs)
    pruner = spec.pruner
    from toolchain.config import loader

    job = TrialJob(
        tree,
        t.name,
        str(folder / "trials" / f"{t.name}-{key[:12]}"),
        str(cache),
        str(loader.TARGETS_DIR),
        medians if pruner and finished >= pruner.min_trials else None,
        pruner.warmup_epochs if pruner else 0,
    )
    t.running[executor.submit(job)] = (trial, key, params)
    log.debug("search: trial %d of %s started: %s", trial.number, t.name, space.short(params))


def _result(future) -> dict:
    """A finished job's result; a job every worker died running (killed, a crash that took the process) fails."""
    try:
        return future.result()
    except Exception as exc:
        from toolchain.executors.dask import WorkerDied

        if isinstance(exc, WorkerDied):
            return {"state": "failed", "reason": f"the workers running it died ({exc})", "curve": []}
        return {"state": "failed", "reason": f"{type(exc).__name__}: {exc}", "curve": []}


def _tell(recipe: Recipe, t: Target, trial, key: str, params: dict, res: dict, same: bool = False) -> str:
    """The trial's outcome told to its study (objectives, constraint values, what the record shows); a line.
    ``same``: the outcome of the same point built by another trial of this run (nothing was built for this one)."""
    from optuna.trial import TrialState

    spec = recipe.search
    trial.set_user_attr("curve", res.get("curve") or [])
    trial.set_user_attr("seconds", 0.0 if same else res.get("seconds"))
    trial.set_user_attr("built", not same)
    head = f"{t.name} #{trial.number} {space.short(params)}{' (a point built already)' if same else ''}"
    if res["state"] == "pruned":
        trial.set_user_attr("reason", res["reason"])
        t.study.tell(trial, state=TrialState.PRUNED)
        return f"{head}: pruned ({res['reason']})"
    result = res.get("result")
    values = [pareto.objective(result, o) for o in spec.objectives] if result else []
    if res["state"] != "complete" or any(pareto.bad(v) for v in values):
        reason = res.get("reason") or "an objective is missing or NaN: " + ", ".join(
            o for o, v in zip(spec.objectives, values, strict=True) if pareto.bad(v)
        )
        trial.set_user_attr("reason", reason)
        t.study.tell(trial, state=TrialState.FAIL)
        return f"{head}: failed ({reason})"
    viol = pareto.violations(result, spec.constraints)
    for name, v in viol.items():
        trial.set_constraint(name, v)
    trial.set_user_attr("result", _summary(result))
    t.study.tell(trial, values)
    feasible = all(v <= 0 for v in viol.values())
    return f"{head}: {_values_text(spec.objectives, values)}, {'feasible' if feasible else 'infeasible'}"


def _summary(result: dict) -> dict:
    """What the record keeps of a trial's target result."""
    m = result.get("metrics") or {}
    mem = result.get("memory") or {}
    lat = result.get("latency") or {}
    return {
        "task": m.get("task", "classification"),
        "metric": pareto.headline(result),
        "reference": m.get("reference_top1"),
        "latency_ms": lat.get("ms"),
        "latency_kind": lat.get("kind"),
        "ram_bytes": mem.get("ram_bytes"),
        "flash_bytes": mem.get("flash_bytes"),
        "arena_bytes": mem.get("arena_bytes"),
        "size_bytes": result.get("size_bytes"),
        "budget": result.get("budget"),
        "passed": result.get("passed"),
        "failures": [f["message"] for f in result.get("failures", [])],
        "artifact": result.get("artifact"),
        "sha256": result.get("sha256"),
        "mode": result.get("mode"),
    }


def _values_text(objectives: list[str], values: list[float]) -> str:
    from toolchain.report import units

    parts = []
    for o, v in zip(objectives, values, strict=True):
        if o == "metric":
            parts.append(f"metric {units.pct(v)}" if 0 <= v <= 1 else f"metric {v:.4g}")
        elif o == "latency":
            parts.append(f"{units.ms(v)} ms")
        else:
            parts.append(f"{o} {units.kb_text(v)}")
    return ", ".join(parts)


# --- the record ------------------------------------------------------------------------------------------------


def points(study, spec) -> list[pareto.Point]:
    """The study's complete trials as points (objectives as told, constraint values as set)."""
    from optuna.trial import TrialState

    out = []
    for tr in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        values = dict(zip(spec.objectives, tr.values or [], strict=False))
        out.append(
            pareto.Point(tr.number, values, dict(tr.constraints), tr.user_attrs.get("params", {}), tr.user_attrs)
        )
    return out


def target_record(study, spec, name: str) -> dict:
    from optuna.trial import TrialState

    pts = points(study, spec)
    front = pareto.front(pts, spec.objectives)
    best = front[0] if front else None
    closest = None if best else pareto.closest(pts)
    lost = storage.interrupted(study)
    trials = []
    for tr in study.get_trials(deepcopy=False):
        if tr.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        a = tr.user_attrs
        state = tr.state.name.lower().replace("fail", "failed")
        if tr.state == TrialState.FAIL and tr.number in lost:
            state = storage.INTERRUPTED
        trials.append(
            {
                "number": tr.number,
                "state": state,
                "params": a.get("params", {}),
                "key": a.get("key"),
                "values": dict(zip(spec.objectives, tr.values or [], strict=False)) or None,
                "constraints": dict(tr.constraints) or None,
                "feasible": pareto.Point(tr.number, {}, dict(tr.constraints)).feasible if tr.constraints else False,
                "result": a.get("result"),
                "reason": a.get("reason"),
                "seconds": a.get("seconds"),
                "curve": a.get("curve", []),
            }
        )
    return {
        "target": name,
        "study": study.study_name,
        "counts": storage.counts(study),
        "front": [p.number for p in front],
        "best": best.number if best else None,
        "best_recipe": best.extra.get("recipe") if best else None,
        "closest": closest.number if closest else None,
        "trials": trials,
    }


def _record(recipe: Recipe, targets, storage_url: str) -> dict:
    spec = recipe.search
    return {
        "schema": SCHEMA,
        "recipe": recipe.name,
        "recipe_file": str(recipe.source) if recipe.source else None,
        "storage": storage.masked(storage_url),
        "sampler": spec.sampler,
        "seed": spec.seed,
        "objectives": spec.objectives,
        "directions": [DIRECTIONS[o] for o in spec.objectives],
        "constraints": spec.constraints.model_dump(exclude_none=True),
        "space": {k: (v.model_dump() if hasattr(v, "model_dump") else v) for k, v in spec.space.items()},
        "targets": [target_record(t.study, spec, t.name) for t in targets],
    }


def _json(record: dict) -> str:
    import json

    return json.dumps(record, indent=2, default=str) + "\n"


def best_recipes(record: dict, folder: Path) -> list[Path]:
    """``--write-best DIR``: per target, the recipe of its best trial (none when no trial is feasible), as a YAML
    file ``toolchain build`` takes: ``DIR/<recipe>-<target>.yaml``, named so."""
    import yaml

    written = []
    for t in record["targets"]:
        if t["best_recipe"] is None:
            continue
        tree = {**t["best_recipe"], "name": f"{record['recipe']}-{t['target']}"}
        path = Path(folder) / f"{tree['name']}.yaml"
        head = f"# toolchain search {record['recipe']}: the best trial for {t['target']} (#{t['best']})\n"
        atomic_write(path, head + yaml.safe_dump(tree, sort_keys=False))
        written.append(path)
    return written

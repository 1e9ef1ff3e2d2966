"""The recipe's ``search:`` block (``toolchain search``): the space, the objectives and the hard constraints; and
the recipe variant a point of the space names. No TensorFlow, no Optuna here.

A dimension of the space is a recipe field by its dotted path (``model.alpha``, ``train.epochs``,
``compress.0.target_sparsity``, ``quantize.calibration``) and either a list of values (any YAML value: a shape,
a list of layer patterns) or a range ``{low, high, step, log}`` (integers when ``low`` and ``high`` are).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from toolchain.config.base import Strict

if TYPE_CHECKING:
    from toolchain.config.recipe import Recipe

OBJECTIVES = ("metric", "latency", "ram", "flash", "arena", "size")
#: how each objective goes: the headline metric up (higher is better for every task's headline, signed so), the
#: costs down
DIRECTIONS = {"metric": "maximize", **{k: "minimize" for k in OBJECTIVES[1:]}}
MAX_TRIALS = 10_000


class Range(Strict):
    """A numeric dimension: integers when ``low`` and ``high`` are integers."""

    low: float
    high: float
    step: float | None = Field(None, gt=0, description="the grid: low, low + step, ... (not with log)")
    log: bool = Field(False, description="sampled on a log scale (low > 0)")

    @model_validator(mode="after")
    def _sane(self):
        if self.low > self.high:
            raise ValueError(f"low {self.low:g} is above high {self.high:g}: the range is empty")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("log: a range of positive numbers, without a step")
        return self

    @property
    def integer(self) -> bool:
        return (
            float(self.low).is_integer()
            and float(self.high).is_integer()
            and (self.step is None or float(self.step).is_integer())
        )


class Limits(Strict):
    """Hard constraints on every trial, on top of the target profile's budgets and the recipe's gates."""

    latency_ms: float | None = Field(None, gt=0, description="the headline latency (estimate on a device)")
    ram_kb: float | None = Field(None, gt=0)
    flash_kb: float | None = Field(None, gt=0)
    arena_kb: float | None = Field(None, gt=0)
    size_kb: float | None = Field(None, gt=0)
    min_metric: float | None = Field(None, description="the headline metric at least (top-1 as a share: 0.95)")


class Pruner(Strict):
    """The median stopping rule on per-epoch eval accuracy: a trial whose accuracy after an epoch is below the
    median of the complete trials' with the same number of epochs (the same learning-rate schedule) at that epoch
    stops there (Optuna's MedianPruner rule; Optuna's own pruners do not run on multi-objective studies)."""

    warmup_epochs: int = Field(2, ge=0, le=10_000, description="never stop a trial before this many epochs")
    min_trials: int = Field(4, ge=1, le=10_000, description="complete trials of the schedule before one is stopped")


class SearchSpec(Strict):
    trials: int = Field(24, ge=1, le=MAX_TRIALS, description="trials per target (its study), finished ones counted")
    sampler: Literal["tpe", "nsga2"] = Field("tpe", description="Optuna's multi-objective TPE or NSGA-II")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    space: dict[str, list[Any] | Range] = Field(description="recipe field (dotted path) -> values or a range")
    objectives: list[Literal[OBJECTIVES]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["metric", "latency"], min_length=1, max_length=len(OBJECTIVES)
    )
    constraints: Limits = Limits()
    targets: list[str] | None = Field(None, description="the targets searched (default: the recipe's)")
    pruner: Pruner | None = Pruner()

    @field_validator("space", mode="before")
    @classmethod
    def _dimensions(cls, space):
        """Each dimension a non-empty list of distinct values or a range; said with the dimension's path."""
        if not isinstance(space, dict):
            return space
        if not space:
            raise ValueError("no dimension to search")
        out = {}
        for path, values in space.items():
            if isinstance(values, dict):
                try:
                    values = Range.model_validate(values)
                except ValidationError as exc:
                    err = exc.errors()[0]
                    where = ".".join(str(p) for p in err["loc"])
                    raise ValueError(
                        f"{path}: {where + ': ' if where else ''}{err['msg'].removeprefix('Value error, ')}"
                    ) from None
            elif not isinstance(values, list):
                raise ValueError(f"{path}: a list of values or a range {{low, high}}, not {values!r}")
            elif not values:
                raise ValueError(f"{path}: an empty list of values")
            elif len({json.dumps(v, sort_keys=True) for v in values}) < len(values):
                raise ValueError(f"{path}: a value is listed twice")
            out[path] = values
        return out

    @field_validator("objectives")
    @classmethod
    def _once(cls, objectives):
        if len(set(objectives)) < len(objectives):
            raise ValueError("an objective is listed twice")
        return objectives


def _set(tree: dict, path: str, value: Any) -> None:
    """Set the field at dotted ``path`` of a recipe's dict; a missing section (``train``) is created."""
    parts = path.split(".")
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        key: Any = int(part) if part.isdigit() else part
        if isinstance(node, list):
            if not isinstance(key, int) or key >= len(node):
                raise KeyError(f"{'.'.join(parts[: i + 1])}: there is no item {part} here")
            node = node[key]
        else:
            if node.get(key) is None:
                node[key] = {}
            node = node[key]
        if not isinstance(node, dict | list):
            raise KeyError(f"{'.'.join(parts[: i + 1])} is a value, not a section")
    last: Any = int(parts[-1]) if parts[-1].isdigit() else parts[-1]
    if isinstance(node, list):
        if not isinstance(last, int) or last >= len(node):
            raise KeyError(f"{path}: there is no item {parts[-1]} here")
    node[last] = value


def base_dict(recipe: Recipe) -> dict:
    """The recipe as the user wrote it (fields set), paths absolute, without the ``search`` block."""
    tree = recipe.model_dump(mode="json", exclude_unset=True, exclude={"search"})
    tree.pop("search", None)
    return tree


def variant(recipe: Recipe, params: dict[str, Any], name: str, targets: list[str]) -> Recipe:
    """The recipe at one point of its space: ``params`` set by path, named ``name``, for ``targets``."""
    tree = base_dict(recipe)
    for path, value in params.items():
        _set(tree, path, value)
    tree.update(name=name, targets=targets)
    from toolchain.config.recipe import Recipe

    base = recipe.source.parent if recipe.source else None
    return Recipe.model_validate(tree, context={"base_dir": base}).model_copy(update={"source": recipe.source})


def point_key(recipe: Recipe, params: dict[str, Any], target: str) -> str:
    """The content key of a trial: the recipe's point and the target, whatever the study or its order."""
    tree = base_dict(recipe)
    for path, value in params.items():
        _set(tree, path, value)
    tree.pop("name", None)
    tree["targets"] = [target]
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()


def study_key(recipe: Recipe) -> str:
    """What a study holds: the recipe and its space, objectives and constraints (not the trial count: raising it
    resumes the same study with more trials)."""
    tree = recipe.model_dump(mode="json", exclude_unset=True)
    tree.get("search", {}).pop("trials", None)
    tree.pop("name", None)
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:10]


def corners(spec: SearchSpec) -> list[tuple[str, Any]]:
    """Every listed value and each range's ends: what ``recipe check`` validates, one dimension at a time."""
    out = []
    for path, values in spec.space.items():
        if isinstance(values, Range):
            ends = (values.low, values.high)
            out += [(path, int(v) if values.integer else v) for v in ends]
        else:
            out += [(path, v) for v in values]
    return out


def finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)

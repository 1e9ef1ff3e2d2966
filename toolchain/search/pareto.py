"""A trial's objectives and constraint values from its target result, feasibility, the Pareto front, the point
to ship and, when nothing is feasible, the closest trial. Pure Python over plain dicts (the record's JSON)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from toolchain.config.search import DIRECTIONS, Limits
from toolchain.record import TASK_METRIC

#: objective -> where it is in a target result's JSON, and the unit the tables show it in
PATHS = {
    "metric": None,  # the task's headline (metrics.top1 for classification), see ``headline``
    "latency": ("latency", "ms"),
    "ram": ("memory", "ram_bytes"),
    "flash": ("memory", "flash_bytes"),
    "arena": ("memory", "arena_bytes"),
    "size": ("size_bytes",),
}


def headline(result: dict) -> float | None:
    """The task's headline metric, signed so that higher is better (an error or perplexity negated)."""
    m = result.get("metrics") or {}
    name, higher = TASK_METRIC.get(m.get("task", "classification"), ("top1", True))
    value = m.get(name)
    if value is None:
        return None
    return float(value) if higher else -float(value)


def objective(result: dict, name: str) -> float | None:
    if name == "metric":
        return headline(result)
    node: Any = result
    for part in PATHS[name]:
        node = (node or {}).get(part)
    return None if node is None else float(node)


def bad(v: float | None) -> bool:
    """Missing or not a number: never feasible, never on a front."""
    return v is None or not math.isfinite(v)


def violations(result: dict, limits: Limits) -> dict[str, float]:
    """Each hard constraint as a number, <= 0 when met (NSGA-II's and TPE's convention): the profile's budgets
    (RAM, flash), the recipe's gates and the search's limits; a value that is missing or NaN violates by 1."""
    out: dict[str, float] = {}
    budget = result.get("budget") or {}
    for name, key in (("ram", "ram_bytes"), ("flash", "flash_bytes")):
        limit = budget.get(key)
        if limit:
            used = objective(result, name)
            out[f"{name} budget"] = 1.0 if bad(used) else used / limit - 1
    failures = [f for f in result.get("failures", []) if f.get("kind") != "fit"]  # fit: the budgets above
    out["gates"] = float(len(failures))
    for name, unit, limit in (
        ("latency", 1, limits.latency_ms),
        ("ram", 1024, limits.ram_kb),
        ("flash", 1024, limits.flash_kb),
        ("arena", 1024, limits.arena_kb),
        ("size", 1024, limits.size_kb),
    ):
        if limit is not None:
            v = objective(result, name)
            out[f"{name} limit"] = 1.0 if bad(v) else v / (limit * unit) - 1
    if limits.min_metric is not None:
        v = objective(result, "metric")
        out["min metric"] = 1.0 if bad(v) else limits.min_metric - v
    return out


@dataclass
class Point:
    """One finished trial of one target: its number, values (objective -> value, signed as measured) and
    constraint values."""

    number: int
    values: dict[str, float | None]
    violations: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        vs = list(self.violations.values())
        return not any(bad(v) for v in self.values.values()) and all(not bad(v) and v <= 0 for v in vs)

    @property
    def violation(self) -> float:
        """How far from feasible: the sum of the positive constraint values (NaN counts as 1)."""
        return sum(1.0 if bad(v) else max(0.0, v) for v in self.violations.values()) + sum(
            1.0 for v in self.values.values() if bad(v)
        )


def _better(a: float, b: float, objective_name: str) -> int:
    """1 when a is better than b, -1 when worse, 0 when equal."""
    if a == b:
        return 0
    up = DIRECTIONS[objective_name] == "maximize"
    return 1 if (a > b) == up else -1


def dominates(a: Point, b: Point, objectives: list[str]) -> bool:
    """a is at least as good as b in every objective and better in one."""
    signs = [_better(a.values[o], b.values[o], o) for o in objectives]
    return all(s >= 0 for s in signs) and any(s > 0 for s in signs)


def front(points: list[Point], objectives: list[str]) -> list[Point]:
    """The feasible points no other feasible point dominates, best headline metric first (then the rest of the
    objectives in order); points with equal values are kept once (the first trial)."""
    ok = [p for p in points if p.feasible]
    kept, seen = [], set()
    for p in ok:
        key = tuple(p.values[o] for o in objectives)
        if key in seen or any(dominates(q, p, objectives) for q in ok):
            continue
        seen.add(key)
        kept.append(p)
    return sorted(kept, key=lambda p: _order(p, objectives))


def _order(p: Point, objectives: list[str]) -> tuple:
    return tuple(-p.values[o] if DIRECTIONS[o] == "maximize" else p.values[o] for o in objectives) + (p.number,)


def best(points: list[Point], objectives: list[str]) -> Point | None:
    """The point to ship: on the front, the best headline metric, then the next objectives (latency first)."""
    f = front(points, objectives)
    return f[0] if f else None


def closest(points: list[Point]) -> Point | None:
    """When no point is feasible: the one that misses its constraints by the least (then the better metric)."""
    measured = [p for p in points if p.violations]
    if not measured:
        return None
    return min(measured, key=lambda p: (p.violation, -(p.values.get("metric") or -math.inf), p.number))

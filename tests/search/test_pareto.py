"""Objectives, constraint values, feasibility, the Pareto front and the point to ship, on hand-made target results.
No TensorFlow."""

from __future__ import annotations

import math

import pytest

from toolchain.config.search import Limits
from toolchain.search.pareto import Point, best, closest, dominates, front, objective, violations

OBJ = ["metric", "latency"]


def result(top1=0.97, ms=100.0, ram=200_000, flash=700_000, failures=(), task="classification"):
    return {
        "metrics": {"task": task, "top1": top1, "mae": top1},
        "latency": {"ms": ms, "kind": "estimate"},
        "memory": {"ram_bytes": ram, "flash_bytes": flash, "arena_bytes": ram - 1000},
        "size_bytes": flash - 100,
        "budget": {"ram_bytes": 256 * 1024, "flash_bytes": 1024 * 1024},
        "failures": [{"kind": k, "check": k, "message": k} for k in failures],
    }


def test_objectives_are_read_signed_so_that_higher_metric_is_better():
    r = result()
    assert [objective(r, o) for o in ("metric", "latency", "ram", "flash", "arena", "size")] == [
        0.97,
        100.0,
        200_000,
        700_000,
        199_000,
        699_900,
    ]
    assert objective(result(top1=0.25, task="regression"), "metric") == -0.25  # an error: lower is better


def test_violations_budgets_gates_and_limits():
    v = violations(result(ram=300 * 1024, failures=("gate",)), Limits(latency_ms=50, min_metric=0.98))
    assert v["ram budget"] == pytest.approx(300 / 256 - 1) and v["flash budget"] < 0
    assert v["gates"] == 1 and v["latency limit"] == pytest.approx(1.0) and v["min metric"] == pytest.approx(0.01)
    assert violations(result(failures=("fit",)), Limits())["gates"] == 0  # a fit failure is the budget's
    nan = violations(result(ms=float("nan")), Limits(latency_ms=50))
    assert nan["latency limit"] == 1.0  # NaN never meets a constraint


def p(n, metric, ms, feasible=True, **viol):
    return Point(n, {"metric": metric, "latency": ms}, {"gates": 0.0 if feasible else 1.0, **viol})


def test_the_front_keeps_feasible_non_dominated_points_best_metric_first():
    pts = [
        p(0, 0.97, 268),
        p(1, 0.96, 60),
        p(2, 0.95, 70),  # dominated by 1
        p(3, 0.99, 30, feasible=False),  # better than all, but over a constraint
        p(4, 0.98, 300),
        p(5, 0.96, 60),  # the same values as 1: kept once
        p(6, float("nan"), 10),  # NaN: never on a front
    ]
    assert dominates(pts[1], pts[2], OBJ) and not dominates(pts[0], pts[1], OBJ) and not dominates(pts[1], pts[5], OBJ)
    assert [x.number for x in front(pts, OBJ)] == [4, 0, 1]
    assert best(pts, OBJ).number == 4
    assert not pts[6].feasible and math.isnan(pts[6].values["metric"])


def test_with_nothing_feasible_the_closest_point_is_reported():
    pts = [p(0, 0.9, 100, feasible=False), Point(1, {"metric": 0.8, "latency": 60}, {"latency limit": 0.2})]
    assert front(pts, OBJ) == [] and best(pts, OBJ) is None
    assert closest(pts).number == 1  # over its latency limit by 20 %, against a failed gate (1)
    assert closest([]) is None

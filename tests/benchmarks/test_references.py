"""The stored benchmark results against benchmarks/references.yaml, both ways: a result worse than its reference by
more than the tolerance is a regression; better by more than the tolerance is an improvement nobody wrote down (update
the reference, and say why, in the commit that stores the new result). Reads JSON only: no TensorFlow."""

import importlib
import math

import pytest
import yaml

from benchmarks import SUITE, common

pytestmark = pytest.mark.benchmark
REFERENCES = yaml.safe_load((common.REPO / "benchmarks" / "references.yaml").read_text())


def measured(benchmark: str) -> dict[str, float]:
    return importlib.import_module(f"benchmarks.{benchmark}").metrics(common.load_result(benchmark))


def compare(name: str, value: float, ref: dict) -> str | None:
    """None when ``value`` is within ``ref``'s tolerance, else what is wrong."""
    assert ref["better"] in ("higher", "lower"), f"{name}: better must be 'higher' or 'lower'"
    if not math.isfinite(value):  # a NaN is neither worse nor better than anything: it never passes
        return f"not a number: {name}: measured {value}"
    gain = (value - ref["value"]) if ref["better"] == "higher" else (ref["value"] - value)
    where = f"{name}: measured {value:g}, reference {ref['value']:g} ± {ref['tolerance']:g} ({ref['better']} is better)"
    if gain < -ref["tolerance"]:
        return f"regression: {where}"
    if gain > ref["tolerance"]:
        return f"unexplained improvement: {where}; update benchmarks/references.yaml"
    return None


CASES = [(b, m) for b, metrics in REFERENCES.items() for m in metrics]


@pytest.mark.parametrize(("benchmark", "metric"), CASES, ids=[f"{b}.{m}" for b, m in CASES])
def test_the_stored_result_is_within_its_reference(benchmark, metric):
    values = measured(benchmark)
    assert metric in values, f"{benchmark}: references.yaml names {metric!r}, which its metrics() does not give"
    problem = compare(f"{benchmark}.{metric}", values[metric], REFERENCES[benchmark][metric])
    assert problem is None, problem


@pytest.mark.parametrize("benchmark", list(SUITE))
def test_every_metric_of_every_benchmark_has_a_reference(benchmark):
    assert set(measured(benchmark)) == set(REFERENCES.get(benchmark, {})), benchmark


def test_the_comparison_fails_both_ways():
    ref = {"value": 10.0, "tolerance": 1.0, "better": "higher"}
    assert compare("x", 10.5, ref) is None
    assert compare("x", 8.9, ref).startswith("regression")
    assert compare("x", 11.1, ref).startswith("unexplained improvement")
    low = {**ref, "better": "lower"}
    assert compare("x", 11.1, low).startswith("regression")
    assert compare("x", 8.9, low).startswith("unexplained improvement")
    assert compare("x", float("nan"), low).startswith("not a number")

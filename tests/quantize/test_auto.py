"""quantize.mode auto: the plan search on the tiny recipe (real converter, LiteRT, tflite-micro)."""

import json

import pytest

pytestmark = pytest.mark.tf


def record(out):
    return json.loads((out / "tiny" / "build.json").read_text())


def test_auto_stops_at_the_first_plan_that_meets_the_gates(tiny_recipe, tmp_path, run_cli):
    recipe = tiny_recipe(quantize="mode: auto", targets="[phone-cpu]", extra="acceptance: {max_accuracy_drop: 50}")
    code, _, err = run_cli("build", recipe, "--out", tmp_path / "b")
    assert code == 0, err
    (r,) = record(tmp_path / "b")["results"]
    assert [p["plan"] for p in r["plan_search"]] == ["int8 minmax"] and r["plan_search"][0]["passed"]
    assert r["mode"] == "int8" and r["quantization"]["method"] == "minmax"
    assert "## Plan search" in (tmp_path / "b" / "tiny" / "phone-cpu" / "report.md").read_text()


def test_auto_climbs_every_rung_the_target_runs_and_keeps_the_most_accurate(tiny_recipe, tmp_path, run_cli):
    """A size gate no plan meets: cortex-m7 runs only int8, so the search tries the int8 rungs and fails with
    the one of smallest drop, every rung in the record."""
    recipe = tiny_recipe(
        quantize="mode: auto", targets="[cortex-m7]", extra="acceptance: {max_accuracy_drop: 50, max_size_kb: 0.5}"
    )
    code, _, err = run_cli("build", recipe, "--out", tmp_path / "b")
    assert code == 11, err
    (r,) = record(tmp_path / "b")["results"]
    plans = [p["plan"] for p in r["plan_search"]]
    assert plans == [
        "int8 minmax",
        "int8 percentile 99.99",
        "int8 percentile 99.9",
        "int8 mse",
        "int8 kl, guarded",
        "int8 minmax, equalized, bias-corrected",
        "int8, conv, dense with 16-bit activations (the diagnosis' worst)",
        "int8, quantization-aware training",
    ]
    assert r["plan_search"][-1]["mode"] == "int8" and r["plan_search"][-1]["metric"] is not None
    assert not any(p["passed"] for p in r["plan_search"])
    best = min(p["drop"] for p in r["plan_search"])
    assert abs((r["metrics"]["reference_top1"] - r["metrics"]["top1"]) - best) < 1e-9  # the most accurate kept
    assert all("max_size_kb" in " ".join(p["failures"]) for p in r["plan_search"])


def test_on_a_phone_the_search_reaches_float_layers_then_other_modes(tiny_recipe, tmp_path, run_cli):
    recipe = tiny_recipe(
        quantize="mode: auto", targets="[phone-cpu]", extra="acceptance: {max_accuracy_drop: 50, max_size_kb: 0.5}"
    )
    code, _, err = run_cli("build", recipe, "--out", tmp_path / "b")
    assert code == 11, err
    (r,) = record(tmp_path / "b")["results"]
    plans = [p["plan"] for p in r["plan_search"]]
    assert plans[6].startswith("int8, ") and plans[6].endswith("in float (the diagnosis' worst)")
    assert plans[7].endswith("with 16-bit activations (the diagnosis' worst)")
    assert plans[8:] == ["int8, quantization-aware training", "int16x8 (16-bit activations)", "float16", "float32"]
    assert [p["mode"] for p in r["plan_search"]][6:] == ["int8", "int8", "int8", "int16x8", "float16", "float32"]


def test_per_tensor_weights_add_the_learnt_rounding_rungs(tiny_recipe, tmp_path, run_cli):
    """Where learnt weights pay (a coarse grid: per-tensor scales, benchmarks.rounding), the search tries ADMM and
    AdaRound after equalization; each rung's weights are reported optimized."""
    recipe = tiny_recipe(
        quantize="mode: auto, per_channel: false",
        targets="[cortex-m7]",
        extra="acceptance: {max_accuracy_drop: 50, max_size_kb: 0.5}",
    )
    code, _, err = run_cli("build", recipe, "--out", tmp_path / "b")
    assert code == 11, err
    (r,) = record(tmp_path / "b")["results"]
    plans = [p["plan"] for p in r["plan_search"]]
    at = plans.index("int8 minmax, equalized, bias-corrected")
    assert plans[at + 1 : at + 3] == ["int8 minmax, ADMM weights", "int8 minmax, AdaRound weights"]

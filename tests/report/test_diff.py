"""toolchain diff: two real builds of the tiny recipe, compared target by target, with regression rules."""

import json
import math

import numpy as np
import pytest

from toolchain.errors import ConfigError
from toolchain.report.diff import Rule, parse_rules

RECIPE = """
schema_version: 1
name: scaled
model: {{file: {model}, classes: 4}}
data: {{npz: {data}}}
train: {{epochs: 5, batch_size: 32, learning_rate: 0.01}}
quantize: {{mode: int8, calibration_samples: {n}}}
targets: [cortex-m7]
"""


@pytest.fixture
def scaled_recipe(tmp_path, keras):
    """4 classes in 16 features, one in ten samples 3-6x louder: a few calibration samples miss the loud ones,
    whose inputs the int8 range then clips (seeded: the 4 first calibration samples are all quiet)."""
    rng = np.random.default_rng(0)
    n = 1200
    y = rng.integers(0, 4, n)
    loud = rng.random(n) < 0.1
    scale = np.where(loud, rng.uniform(3, 6, n), rng.uniform(0.5, 1, n))[:, None]
    x = rng.normal(size=(n, 16))
    x[np.arange(n), y] += 3
    np.savez(tmp_path / "data.npz", x=(scale * x).astype(np.float32), y=y)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((16,), name="x"),
            keras.layers.Dense(32, activation="relu", name="h"),
            keras.layers.Dense(4, activation="softmax", name="out"),
        ]
    )
    model.save(tmp_path / "m.keras")

    def make(samples: int):
        path = tmp_path / "recipe.yaml"
        path.write_text(RECIPE.format(model=tmp_path / "m.keras", data=tmp_path / "data.npz", n=samples))
        return path

    return make


@pytest.mark.tf
def test_identical_builds_diff_clean_and_a_starved_calibration_regresses(scaled_recipe, tmp_path, run_cli):
    rules = "size>+2%,arena>+0,accuracy<-0.5"
    recipe = scaled_recipe(100)
    assert run_cli("build", recipe, "--out", tmp_path / "a")[0] == 0
    assert run_cli("build", recipe, "--out", tmp_path / "a2")[0] == 0  # the same build again (cached stages)
    a, a2 = tmp_path / "a" / "scaled", tmp_path / "a2" / "scaled" / "build.json"
    code, out, err = run_cli("diff", a, a2, "--fail-on", rules)
    assert code == 0, err
    assert "cortex-m7" in out and "regressed" not in err

    run_cli("build", scaled_recipe(4), "--out", tmp_path / "b")  # its own gate may fail: the diff is tested
    b = tmp_path / "b" / "scaled"
    code, out, err = run_cli("diff", a, b, "--fail-on", rules, "--format", "json")
    table = json.loads(out)
    (row,) = table["rows"]
    drop = row["b"]["accuracy"] - row["a"]["accuracy"]
    assert drop < -0.5, f"4 calibration samples cost only {drop:.2f} points"
    assert code == 20 and table["regressed"]
    assert any(r.startswith("accuracy ") and "rule accuracy<-0.5" in r for r in row["regressions"])
    assert "regressed against" in err and "cortex-m7: " in err and "accuracy " in err
    assert row["a"]["size"] == row["b"]["size"]  # same graph, other ranges: no size rule fires

    code, out, _ = run_cli("diff", a, b, "--format", "md")
    assert code == 0 and out.startswith("# Diff: scaled → scaled") and "| cortex-m7 |" in out  # no rules, no exit


def test_rules_parse_and_bad_rules_are_one_line_errors():
    assert parse_rules("size>+2%, arena>+0,accuracy<-0.5") == [
        Rule("size", True, 2.0, True),
        Rule("arena", True, 0.0, False),
        Rule("accuracy", False, -0.5, False),
    ]
    r = Rule("size", True, 2.0, True)
    assert r.breached(1000, 1021) == pytest.approx(2.1) and r.breached(1000, 1020) is None
    assert (
        Rule("arena", True, 0, False).breached(4096, 4097) == 1
        and Rule("arena", True, 0, False).breached(4096, 4000) is None
    )
    for bad in ("size>>2", "speed>1", "size=2", "accuracy<-x"):
        with pytest.raises(ConfigError, match="--fail-on: cannot read"):
            parse_rules(bad)


def test_a_nan_or_a_value_b_lacks_never_passes_a_rule():
    nan = float("nan")
    for rule in (Rule("accuracy", False, -0.5, False), Rule("size", True, 2.0, True)):
        for a, b in ((97.0, nan), (nan, 97.0), (nan, nan), (None, nan), (97.0, None)):
            assert math.isnan(rule.breached(a, b)), (rule, a, b)
        assert rule.breached(None, None) is None and rule.breached(None, 97.0) is None  # nothing in A to hold B to
        assert rule.breached(97.0, 97.0) is None


def test_diff_of_a_missing_build_is_an_input_error(tmp_path, run_cli):
    (tmp_path / "x").mkdir()
    code, _, err = run_cli("diff", tmp_path / "x", tmp_path / "x")
    assert code == 5 and "no build record here" in err


def test_a_bad_fail_on_rule_exits_3_before_reading_the_builds(tmp_path, run_cli):
    (tmp_path / "x").mkdir()
    code, out, err = run_cli("diff", tmp_path / "x", tmp_path / "x", "--fail-on", "size>>2")
    assert code == 3 and "--fail-on: cannot read" in err and out == ""
    assert len(err.strip().splitlines()) == 1

"""Calibration data against the training data (``data.drift``), on arrays: no TensorFlow."""

import numpy as np
import pytest

from toolchain.data.drift import describe, drift

RNG = np.random.default_rng(0)


def digits_like(n: int) -> np.ndarray:
    """Images in [-1, 1] (pixels / 255 normalized by mean 0.5, std 0.5), 32x32x3."""
    return (RNG.uniform(0, 1, (n, 32, 32, 3)).astype(np.float32) ** 2 - 0.5) / 0.5


def test_three_percent_of_samples_fifty_times_brighter_are_flagged_and_named():
    train, calib = digits_like(400), digits_like(200)
    bright = RNG.choice(200, 6, replace=False)  # 3 %
    calib[bright] = ((calib[bright] * 0.5 + 0.5) * 50 - 0.5) / 0.5
    (d,) = drift([train], [calib], ["x"])
    assert d["outlying_samples"] == 6 and d["first_samples"] == sorted(bright.tolist())[:5]
    assert d["outlying_share"] == 0.03 and d["scale_ratio"] > 40  # the input's scale set by those 6 samples
    assert d["training_range"][1] < 1.01 and d["calibration_range"][1] > 90
    assert "6 calibration samples (3.0 %" in describe(d) and "x the training data's" in describe(d)


def test_a_calibration_split_of_the_same_data_is_quiet():
    data = digits_like(600)
    assert drift([data[:400]], [data[400:]], ["x"]) == []
    # nor do integer tokens (a language model's) or an empty training split raise anything
    assert drift([np.zeros((0, 8), np.float32)], [data[:5, 0, 0]], ["x"]) == []
    assert drift([np.arange(64).reshape(8, 8)], [np.arange(64).reshape(8, 8) * 100], ["tokens"]) == []


def test_a_few_slightly_wider_samples_are_not_outliers():
    train = RNG.normal(0, 1, (1000, 16)).astype(np.float32)
    calib = RNG.normal(0, 1.2, (100, 16)).astype(np.float32)  # a bit wider: not beyond the range by half of it
    assert drift([train], [calib], ["x"]) == []


@pytest.mark.tf
def test_the_build_warns_refuses_or_drops_a_glitching_calibration_set(tiny_recipe, tmp_path, run_cli):
    """data.calibration with 6 of its samples 50x too bright: warned about (in the log and the record), refused
    with data.calibration.strict (exit 6, before any tracing), or calibrated without them (drop_outliers)."""
    import json

    from sklearn.datasets import load_digits

    x = ((load_digits().images[:200].astype(np.float32) / 16 - 0.5) / 0.5)[..., None]
    x[[3, 10, 20, 30, 40, 49]] *= 50  # within the 50 the recipe calibrates on (calibration_samples: 50)
    np.savez(tmp_path / "cal.npz", x=x)
    for extra, code in (("", 0), (", strict: true", 6), (", drop_outliers: true", 0)):
        recipe = tiny_recipe(extra="acceptance: {max_accuracy_drop: 100}")  # the bright samples cost accuracy
        text = recipe.read_text().replace("builtin: digits", f"builtin: digits\n  calibration: {{npz: cal.npz{extra}}}")
        recipe.write_text(text)
        rc, out, err = run_cli("build", recipe, "--out", tmp_path / f"b{code}{len(extra)}", "--json")
        assert rc == code, err
        if code == 6:
            assert "6 calibration samples (12.0 %; indices 3, 10, 20, 30, 40, ...)" in err and "strict" in err
            continue
        (r,) = json.loads(out)["results"]
        (d,) = r["quantization"]["calibration_drift"]
        assert d["first_samples"] == [3, 10, 20, 30, 40] and d["dropped"] == bool(extra)
        assert r["quantization"]["samples"] == (50 - 6 if extra else 50)
        assert "far outside the training data's range" in err
        if not extra:  # diagnose names the input as the culprit, before any layer
            rc, out, err = run_cli("diagnose", recipe, "--out", tmp_path / "b00", "--samples", "16", "--format", "md")
            assert rc == 0, err
            assert f"Culprit: the input `{d['input']}`'s scale is set by 6 calibration samples" in out  # its name
    # quantize.input_range: training: the glitched samples cannot set the input's scale
    recipe = tiny_recipe(quantize="mode: int8, input_range: training", extra="acceptance: {max_accuracy_drop: 100}")
    recipe.write_text(recipe.read_text().replace("builtin: digits", "builtin: digits\n  calibration: {npz: cal.npz}"))
    rc, out, err = run_cli("build", recipe, "--out", tmp_path / "ir", "--json")
    assert rc == 0, err
    (r,) = json.loads(out)["results"]
    (x,) = r["quantization"]["inputs"]
    assert x["range"][0] == pytest.approx(-1, abs=0.01) and x["range"][1] == pytest.approx(1, abs=0.01), x
    assert x["observed"][1] > 40 and x["clipped"] > 0  # the bright values are clipped, not the rest of the grid

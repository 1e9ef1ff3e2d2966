"""The search block of a recipe: its space checked dimension by dimension with file:line errors, the recipe at a
point, content keys, Optuna's distributions and the parameters decoded back. No TensorFlow."""

from __future__ import annotations

import pytest

from tests.conftest import write_recipe
from toolchain.config import load_recipe
from toolchain.config.search import point_key, study_key, variant
from toolchain.errors import ConfigError, UnknownTargetError
from toolchain.search import space

BASE = """
schema_version: 1
name: fam
model: {application: MobileNetV2, alpha: 0.35, input_shape: [96, 96, 3], classes: 10}
data: {builtin: digits}
train: {epochs: 12, batch_size: 32}
compress:
  - {step: prune, method: l1_filter, target_sparsity: 0.5}
quantize: {mode: int8}
targets: [cortex-m4, ethos-u55-128]
search:
  trials: 24
  space:
{space}
  constraints: {latency_ms: 50}
"""
GOOD = """\
    model.alpha: [0.35, 0.5]
    model.input_shape: [[32, 32, 3], [48, 48, 3]]
    train.epochs: {low: 4, high: 12, step: 4}
    train.learning_rate: {low: 0.0005, high: 0.01, log: true}
    compress.0.target_sparsity: {low: 0.3, high: 0.7}
    quantize.calibration: [minmax, percentile, kl]"""


def recipe(tmp_path, space_text=GOOD, **replace):
    text = BASE.replace("{space}", space_text)
    for a, b in replace.items():
        text = text.replace(a, b)
    return load_recipe(write_recipe(tmp_path, text))


def test_a_point_is_the_recipe_with_its_fields_set(tmp_path):
    r = recipe(tmp_path)
    v = variant(r, {"model.input_shape": [48, 48, 3], "compress.0.target_sparsity": 0.6}, "fam-x", ["cortex-m4"])
    assert v.model.input_shape == (48, 48, 3) and v.compress[0].target_sparsity == 0.6
    assert (v.name, v.targets, v.search) == ("fam-x", ["cortex-m4"], None)
    assert v.train == r.train and v.model.alpha == 0.35  # the rest as written
    no_train = r.model_copy(update={"train": None})
    assert variant(no_train, {"train.epochs": 3}, "x", ["cortex-m4"]).train.epochs == 3  # a section is created


def test_keys_follow_the_content(tmp_path):
    r = recipe(tmp_path)
    a = point_key(r, {"model.alpha": 0.5}, "cortex-m4")
    assert a == point_key(r.model_copy(update={"name": "other"}), {"model.alpha": 0.5}, "cortex-m4")  # not the name
    assert a != point_key(r, {"model.alpha": 0.35}, "cortex-m4") and a != point_key(r, {"model.alpha": 0.5}, "x")
    more = recipe(tmp_path, **{"trials: 24": "trials: 48"})
    assert study_key(more) == study_key(r)  # more trials resume the same study
    assert study_key(recipe(tmp_path, **{"latency_ms: 50": "latency_ms: 40"})) != study_key(r)


def test_distributions_and_decoding():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    r = load_recipe_text(GOOD)
    d = space.distributions(r.search)
    assert d["train.epochs"] == IntDistribution(4, 12, step=4)
    assert d["train.learning_rate"] == FloatDistribution(0.0005, 0.01, log=True)
    assert d["model.alpha"] == CategoricalDistribution([0.35, 0.5])
    assert d["model.input_shape"] == CategoricalDistribution(["[32, 32, 3]", "[48, 48, 3]"])  # Optuna takes scalars
    params = {
        "model.alpha": 0.5,
        "model.input_shape": "[48, 48, 3]",
        "train.epochs": 8,
        "train.learning_rate": 0.001,
        "compress.0.target_sparsity": 0.4,
        "quantize.calibration": "kl",
    }
    decoded = space.decode(r.search, params)
    assert decoded["model.input_shape"] == [48, 48, 3] and decoded["train.epochs"] == 8
    assert space.short(decoded).startswith("alpha=0.5 input_shape=48x48x3 epochs=8 learning_rate=0.001")


def load_recipe_text(space_text):
    import tempfile
    from pathlib import Path

    return recipe(Path(tempfile.mkdtemp()), space_text)


@pytest.mark.parametrize(
    ("space_text", "message"),
    [
        ("    {}", ":12: search.space: no dimension to search"),
        ("    model.alpha: []", ":12: search.space: model.alpha: an empty list of values"),
        ("    model.alpha: [0.35, 0.35]", "search.space: model.alpha: a value is listed twice"),
        (
            "    train.epochs: {low: 8, high: 4}",
            "search.space: train.epochs: low 8 is above high 4: the range is empty",
        ),
        ("    train.epochs: {low: 0, high: 4, log: true}", "train.epochs: log: a range of positive numbers, without"),
        ("    train.epochs: {low: 1, hihg: 4}", "search.space: train.epochs: high: Field required"),
        ("    train.epochs: 4", "search.space: train.epochs: a list of values or a range {low, high}, not 4"),
        ("    model.alph: [0.5]", ":13: search.space.model.alph: the value 0.5 makes model.alph invalid: unknown key"),
        ("    model.alpha: [0.5, 3]", ":13: search.space.model.alpha: the value 3 makes model.alpha invalid: Input"),
        ("    compress.3.target_sparsity: [0.5]", ":13: search.space.compress.3.target_sparsity: compress.3: there"),
        ("    model.alpha.x: [1]", ":13: search.space.model.alpha.x: model.alpha is a value, not a section"),
        (
            "    train.epochs: {low: 1, high: 100000}",
            "the value 100000 makes train.epochs invalid: Input should be less",
        ),
    ],
)
def test_an_empty_or_contradictory_space_is_one_line_with_its_line(space_text, message, tmp_path):
    with pytest.raises(ConfigError) as exc:
        recipe(tmp_path, space_text)
    assert message in str(exc.value) and "\n" not in str(exc.value)
    assert exc.value.exit_code == 3


def test_searched_targets_must_exist_once(tmp_path):
    with pytest.raises(UnknownTargetError, match=r"search.targets.0: unknown target 'nope'"):
        recipe(tmp_path, **{"  trials: 24": "  trials: 24\n  targets: [nope]"})
    with pytest.raises(ConfigError, match=r"search.targets.1: 'cortex-m4' is listed twice"):
        recipe(tmp_path, **{"  trials: 24": "  trials: 24\n  targets: [cortex-m4, cortex-m4]"})

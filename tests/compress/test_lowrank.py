"""Low-rank factorization, weight clustering and feature distillation on tiny real models."""

import numpy as np
import pytest

from tests.compress.test_steps import build
from toolchain.compress import lowrank
from toolchain.config.recipe import LowRankStep
from toolchain.errors import CompressionError

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def branchy(keras):
    """Strided, valid, non-square and 1x1 convs, a residual add, a concatenation and two Dense layers."""
    L = keras.layers
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 11, 5))
    a = L.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="c1")(inp)
    b = L.Conv2D(8, (3, 2), padding="valid", name="c2")(a)
    c = L.Conv2D(8, 1, strides=2, name="c3")(inp)
    e = L.Add(name="add")([a, L.Conv2D(8, 3, padding="same", name="c4")(a)])
    pooled = [L.GlobalAveragePooling2D(name=f"gap{i}")(t) for i, t in enumerate((b, c, e))]
    f = L.Concatenate(name="cat")(pooled)
    out = L.Dense(6, activation="softmax", name="d1")(L.Dense(16, activation="relu", name="d0")(f))
    return keras.Model(inp, out)


@pytest.mark.parametrize("conv", ["spatial", "tucker"])
def test_full_rank_factorization_equals_the_original(branchy, conv):
    x = np.random.default_rng(0).normal(size=(8, 12, 11, 5)).astype(np.float32)
    step = LowRankStep(step="low_rank", energy=1.0, conv=conv)
    new, plans, skipped = lowrank.factorize(branchy, step, keep_costlier=True)
    kinds = {p.layer: p.kind for p in plans}
    assert kinds == {"c1": conv, "c2": conv, "c4": conv, "c3": "svd", "d0": "svd", "d1": "svd"} and not skipped
    assert "c1" not in [layer.name for layer in new.layers] and "c1_lr2" in [layer.name for layer in new.layers]
    np.testing.assert_allclose(new.predict(x, verbose=0), branchy.predict(x, verbose=0), atol=1e-4)
    w = branchy.get_layer("c2").get_weights()[0]  # (3, 2, 8, 8): the rank of the (3*8) x (2*8) reshaping
    assert {p.layer: p.rank for p in plans}["c2"] == (16 if conv == "spatial" else [8, 8]) and w.shape == (3, 2, 8, 8)


def test_rank_rules(branchy):
    by_macs = LowRankStep(step="low_rank", macs_removed=0.5)
    _, plans, _ = lowrank.factorize(branchy, by_macs)
    assert plans and all(p.macs_after <= 0.5 * p.macs_before for p in plans)
    _, plans, skipped = lowrank.factorize(branchy, LowRankStep(step="low_rank", macs_removed=0.9))
    assert all(p.macs_after <= 0.1 * p.macs_before for p in plans)  # a layer that cannot is left alone, said why
    assert skipped["d1"] == "even rank 1 keeps 23% of its 96 MACs"
    by_energy = LowRankStep(step="low_rank", energy=0.7, conv="tucker")
    _, plans, _ = lowrank.factorize(branchy, by_energy)
    assert all(p.energy >= 0.7 and p.macs_after < p.macs_before for p in plans)
    # at full rank a factorized layer costs more than the original: left alone, with the reason
    with pytest.raises(CompressionError, match=r"no layer is worth factorizing .*c1: rank 15 would cost"):
        lowrank.factorize(branchy, LowRankStep(step="low_rank", energy=1.0))
    with pytest.raises(CompressionError, match="no layer matches 'conv9'"):
        lowrank.factorize(branchy, LowRankStep(step="low_rank", layers=["conv9"]))


def test_energy_and_macs_removed_exclude_each_other(tiny_recipe, run_cli):
    recipe = tiny_recipe(extra="compress:\n  - {step: low_rank, energy: 0.8, macs_removed: 0.3}")
    code, _, err = run_cli("recipe", "check", recipe)
    assert code == 3 and "give 'energy' or 'macs_removed', not both" in err


def test_low_rank_step_builds_and_reports_per_layer(tiny_recipe, tmp_path, run_cli):
    record = build(tiny_recipe, tmp_path, run_cli, "  - {step: low_rank, macs_removed: 0.4, epochs: 2}")
    step = record["compression"][0]
    layers = {r["layer"]: r for r in step["layers"]}
    assert set(layers) == {"conv", "dense"} and layers["conv"]["kind"] == "spatial"
    assert step["factorized_macs_removed"] >= 0.4 and step["macs_after"] < step["macs_before"]
    r = record["results"][0]
    assert r["ops"]["CONV_2D"] == 2 and r["ops"]["FULLY_CONNECTED"] == 2  # the pairs reached the artifact
    assert r["passed"] and r["metrics"]["top1"] > 0.5


def test_clustering_leaves_at_most_n_values_per_kernel(tiny_recipe, tmp_path, run_cli):
    record = build(tiny_recipe, tmp_path, run_cli, "  - {step: cluster, clusters: 4, epochs: 1}")
    step = record["compression"][0]
    assert step["clustered_layers"] == ["conv", "dense"]
    assert all(step["unique_values"][n] <= 4 < step["unique_values_before"][n] for n in ("conv", "dense"))
    assert step["left_alone"] == [] and record["results"][0]["passed"]


def test_clustering_reports_the_depthwise_kernels_tfmot_leaves_alone(keras):
    from types import SimpleNamespace

    from toolchain.compress import cluster, common
    from toolchain.config.recipe import ClusterStep, Strategy

    L = keras.layers
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 4)),
            L.DepthwiseConv2D(3, name="dw"),
            L.Conv2D(8, 1, name="pw"),
            L.Flatten(name="flat"),
            L.Dense(3, activation="softmax", name="fc"),
        ]
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6, 6, 4)).astype(np.float32)
    data = SimpleNamespace(x_train=x, y_train=rng.integers(0, 3, 64))
    step = ClusterStep(step="cluster", clusters=8, epochs=1)
    _, report = cluster.run(model, step, data, None, common.strategy(Strategy()))
    assert report["clustered_layers"] == ["fc", "pw"] and report["left_alone"] == ["dw"]
    assert report["unique_values"]["dw"] == 36 and report["max_unique_values"] <= 8


def test_feature_distillation_adapts_channels_and_its_term_decreases(tiny_recipe, tmp_path, run_cli):
    record = build(
        tiny_recipe,
        tmp_path,
        run_cli,
        "  - {step: prune, method: l1_filter, target_sparsity: 0.5, epochs: 4, learning_rate: 0.003,"
        " distill: {alpha: 0.5, features: [{teacher: relu, student: relu}]}}",
    )
    history = record["compression"][0]["history"]
    assert history["adapters"] == {"relu": [4, 8]}  # 4 of the conv's 8 filters kept, mapped back to 8
    feature = history["feature_loss"]
    assert len(feature) == 4 and feature[-1] < 0.8 * feature[0]
    assert len(history["accuracy"]) == 4


def test_feature_distillation_names_a_missing_layer(tiny_recipe, tmp_path, run_cli):
    recipe = tiny_recipe(
        extra="compress:\n  - {step: prune, method: l1_filter, epochs: 1, distill: {features: "
        "[{teacher: nope, student: relu}]}}"
    )
    code, _, err = run_cli("build", recipe, "--out", tmp_path / "b")
    assert code == 15 and "the teacher has no layer 'nope'" in err


def test_finetune_step_with_same_width_features_needs_no_adapter(tiny_recipe, tmp_path, run_cli):
    record = build(
        tiny_recipe,
        tmp_path,
        run_cli,
        "  - {step: finetune, epochs: 2, distill: {alpha: 0.3, features: [{teacher: relu, student: relu}]}}",
    )
    step = record["compression"][0]
    assert step["step"] == "finetune" and step["history"]["adapters"] == {}
    assert len(step["history"]["feature_loss"]) == 2 and step["top1_after"] > 0.5


@pytest.mark.parametrize(
    "compress, message",
    [
        ("  - {step: low_rank, layers: [conv9]}", "low_rank.layers: no layer matches 'conv9'"),
        ("  - {step: cluster, epochs: 0}", "cluster: needs at least one fine-tune epoch"),
        (
            "  - {step: finetune, distill: {features: [{teacher: conv, student: dense}]}}",
            "student 'dense' gives (10,), teacher 'conv' gives (6, 6, 8): only the channel count may differ",
        ),
    ],
)
def test_compression_mistakes_are_one_line_errors_with_exit_15(tiny_recipe, tmp_path, run_cli, compress, message):
    code, out, err = run_cli("build", tiny_recipe(extra=f"compress:\n{compress}"), "--out", tmp_path / "b")
    lines = err.strip().splitlines()  # progress lines, then the error: one line, the last
    assert code == 15 and out == "" and "Traceback" not in err
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]] and message in lines[-1]

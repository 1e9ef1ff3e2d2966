"""Compression steps on tiny models: each test checks the effect the step promises."""

import json
import subprocess
import sys

import numpy as np
import pytest

from toolchain.compress import common, filters, qat
from toolchain.errors import CompressionError

pytestmark = pytest.mark.tf


def build(tiny_recipe, tmp_path, run_cli, compress: str, extra: str = ""):
    recipe = tiny_recipe(extra=f"compress:\n{compress}\n{extra}\nacceptance: {{max_accuracy_drop: 100}}")
    code, out, err = run_cli("build", recipe, "--out", tmp_path / "b", "--json")
    assert code == 0, err
    return json.loads(out)


def test_qat_inserts_fake_quant_and_converts_to_int8(tiny_recipe, tmp_path, run_cli):
    record = build(tiny_recipe, tmp_path, run_cli, "  - {step: qat, epochs: 1, learning_rate: 0.001}")
    step = record["compression"][0]
    assert step["step"] == "qat" and step["quantized_layers"] >= 3
    r = record["results"][0]
    assert r["mode"] == "int8" and r["metrics"]["top1"] > 0.5
    assert r["ops"]["CONV_2D"] == 1 and "DEQUANTIZE" in r["ops"]  # float I/O around an int8 graph


def test_qat_names_the_unsupported_layer(keras):
    L = keras.layers
    model = keras.Sequential([keras.Input((8, 4)), L.LayerNormalization(name="norm"), L.Flatten(), L.Dense(3)])
    with pytest.raises(
        CompressionError, match=r"qat: .*cannot quantize layer 'norm' \(LayerNormalization\); replace it"
    ) as exc:
        qat.quantize(model)
    assert exc.value.exit_code == 15


def test_qat_must_be_the_last_step(tiny_recipe, run_cli, tmp_path):
    recipe = tiny_recipe(extra="compress:\n  - {step: qat}\n  - {step: prune, method: magnitude}")
    code, _, err = run_cli("recipe", "check", recipe)
    assert code == 3 and "'qat' can appear once, as the last step" in err


def test_magnitude_pruning_reaches_its_sparsity(tiny_recipe, tmp_path, run_cli):
    record = build(
        tiny_recipe,
        tmp_path,
        run_cli,
        "  - {step: prune, method: magnitude, target_sparsity: 0.5, schedule: constant, epochs: 2}",
    )
    step = record["compression"][0]
    sp = step["sparsity"]
    assert sp["layers"]["dense"] >= 0.49 and step["pruned_layers"] == 2 and step["pruned_layers_sparsity"] >= 0.49
    r = record["results"][0]
    assert r["size_gzip_bytes"] < r["size_bytes"]


def test_two_of_four(keras):
    from types import SimpleNamespace

    from toolchain.compress.prune import two_of_four_share
    from toolchain.config.recipe import PruneStep

    L = keras.layers
    model = keras.Sequential([keras.Input((16,)), L.Dense(8, activation="relu"), L.Dense(4, activation="softmax")])
    rng = np.random.default_rng(0)
    data = SimpleNamespace(x_train=rng.normal(size=(64, 16)).astype(np.float32), y_train=rng.integers(0, 4, 64))
    step = PruneStep(step="prune", method="2:4", epochs=1)
    from toolchain.compress import prune

    pruned, report = prune.run(
        model,
        step,
        data,
        None,
        common.strategy(__import__("toolchain.config.recipe", fromlist=["Strategy"]).Strategy()),
    )
    w = pruned.layers[0].kernel.numpy()  # (16 inputs, 8 units): groups of 4 along the inputs
    assert np.all((w.reshape(4, 4, 8) != 0).sum(axis=1) <= 2)
    assert report["two_of_four"] == 1.0 and two_of_four_share(pruned) == 1.0
    assert report["sparsity"]["layers"][pruned.layers[0].name] == 0.5


@pytest.fixture
def zero_filter_model(keras):
    keras.utils.set_random_seed(4)
    L = keras.layers
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            L.Conv2D(8, 3, name="producer"),
            L.ReLU(),
            L.Conv2D(4, 3, name="consumer"),
            L.Flatten(),
            L.Dense(5),
        ]
    )
    w, b = model.get_layer("producer").get_weights()
    w[..., [1, 6]] = 0
    b[[1, 6]] = 0
    model.get_layer("producer").set_weights([w, b])
    return model


def test_l1_filter_removes_zero_filters_without_changing_outputs(zero_filter_model):
    smaller, groups, keep = filters.prune_filters(zero_filter_model, 0.25, keep={"consumer": np.arange(4)})
    assert [g.producer for g in groups] == ["producer", "consumer"]  # consumer feeds Flatten -> Dense
    assert keep["producer"].tolist() == [0, 2, 3, 4, 5, 7]
    assert smaller.get_layer("producer").filters == 6 and smaller.get_layer("consumer").get_weights()[0].shape == (
        3,
        3,
        6,
        4,
    )
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(smaller.predict(x, verbose=0), zero_filter_model.predict(x, verbose=0), atol=1e-5)
    assert common.macs_and_params(smaller)["macs"] < common.macs_and_params(zero_filter_model)["macs"]


def test_l1_filter_respects_residual_connections(keras):
    L = keras.layers
    inp = keras.Input((8, 8, 4))
    a = L.Conv2D(4, 1, name="into_add")(inp)
    s = L.Add()([a, inp])
    e = L.Conv2D(16, 1, name="expand")(s)
    e = L.BatchNormalization(name="bn")(e)
    e = L.ReLU()(e)
    e = L.DepthwiseConv2D(3, padding="same", name="dw")(e)
    p = L.Conv2D(4, 1, name="project")(e)
    out = L.Dense(2)(L.Flatten()(L.Add()([p, s])))
    model = keras.Model(inp, out)
    groups = {g.producer: g for g in filters.channel_groups(model)}
    assert set(groups) == {"expand"}  # into_add and project feed an Add
    assert groups["expand"].passthrough == ["bn", "re_lu", "dw"] or set(groups["expand"].passthrough) == {
        "bn",
        "dw",
        groups["expand"].passthrough[1],
    }
    smaller, _, keep = filters.prune_filters(model, 0.5)
    assert len(keep["expand"]) == 8 and smaller.get_layer("dw").get_weights()[0].shape == (3, 3, 8, 1)
    assert smaller.get_layer("project").get_weights()[0].shape == (1, 1, 8, 4)


def test_batchnorm_reestimation(keras):
    L = keras.layers
    model = keras.Sequential([keras.Input((6,)), L.BatchNormalization(name="bn")])
    bn = model.get_layer("bn")
    bn.set_weights([np.ones(6), np.zeros(6), np.full(6, 50.0), np.full(6, 9.0)])  # stale statistics
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(256, 6)).astype(np.float32)
    assert common.reestimate_batchnorm(model, x, batch_size=64) == 4
    mean, var = bn.get_weights()[2:]
    np.testing.assert_allclose(mean, x.mean(axis=0), atol=1e-4)
    np.testing.assert_allclose(var, np.mean([x[i : i + 64].var(axis=0) for i in range(0, 256, 64)], axis=0), rtol=0.05)
    assert bn.momentum == 0.99  # restored


def test_distillation_loss():

    classes = 3
    q = np.array([[0.7, 0.2, 0.1]], np.float32)
    labels = np.eye(3, dtype=np.float32)[[0]]
    soft = common.soft_targets(q, 2.0)
    y = np.concatenate([labels, soft], axis=1)
    ce = -np.log(0.7)
    assert float(common.distillation_loss(classes, 2.0, 0.0)(y, q)[0]) == pytest.approx(ce, rel=1e-5)
    assert float(common.distillation_loss(classes, 2.0, 1.0)(y, q)[0]) == pytest.approx(
        0.0, abs=1e-5
    )  # student == teacher
    other = np.concatenate([labels, common.soft_targets(np.array([[0.1, 0.2, 0.7]], np.float32), 2.0)], axis=1)
    assert float(common.distillation_loss(classes, 2.0, 1.0)(other, q)[0]) > 0.1


def test_distilled_l1_filter_step_in_a_build(tiny_recipe, tmp_path, run_cli):
    record = build(
        tiny_recipe,
        tmp_path,
        run_cli,
        "  - {step: prune, method: l1_filter, target_sparsity: 0.5, epochs: 1, learning_rate: 0.001,"
        " distill: {temperature: 2, alpha: 0.5}}",
    )
    step = record["compression"][0]
    assert step["channels_removed"] == 4 and step["macs_after"] < step["macs_before"]
    assert step["top1_after"] > 0.5


def test_mirrored_strategy_over_two_logical_cpus(tiny_recipe, tmp_path):
    recipe = tiny_recipe(
        extra="compress:\n  - {step: prune, method: magnitude, target_sparsity: 0.5, epochs: 1}\n"
        "strategy: {kind: mirrored, cpu_devices: 2}\nacceptance: {max_accuracy_drop: 100}"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "toolchain", "build", str(recipe), "--out", str(tmp_path / "b"), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "strategy: MirroredStrategy over 2 replica(s)" in proc.stderr
    assert json.loads(proc.stdout)["compression"][0]["sparsity"]["overall"] > 0.3


def test_multi_worker_needs_a_cluster(tiny_recipe, run_cli):
    code, _, err = run_cli("recipe", "check", tiny_recipe(extra="strategy: {kind: multi_worker}"))
    assert code == 3 and "multi_worker needs 'cluster" in err


def test_label_smoothing_makes_training_less_confident(keras):
    from toolchain.compress.train import fit
    from toolchain.config.recipe import TrainSpec

    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)

    def confidence(ls):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((6,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2, activation="softmax")]
        )
        fit(model, x, y, TrainSpec(epochs=30, learning_rate=0.05, label_smoothing=ls, batchnorm_momentum=None))
        return float(model.predict(x, verbose=0).max(axis=1).mean())

    assert confidence(0.3) < confidence(0.0) - 0.02

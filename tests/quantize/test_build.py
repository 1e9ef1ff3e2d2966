"""The calibration options through a real build of the tiny recipe, and the recipe's refusals."""

import json

import pytest

pytestmark = pytest.mark.tf
# the tiny conv net has no pair to equalize: its conv feeds the dense through a Flatten
EQUALIZATION = {"pairs": [], "skipped": {}, "absorbed": 0, "range_ratio_before": 0.0, "range_ratio_after": 0.0}


def test_build_with_every_option_records_and_reports_the_calibration(tiny_recipe, tmp_path, run_cli):
    recipe = tiny_recipe(
        quantize="mode: int8, calibration: kl, activations: symmetric, equalize: true, bias_correction: true",
        targets="[phone-cpu, cortex-m7]",
        train="train: {epochs: 2}",
    )
    code, _, err = run_cli("build", recipe, "--out", tmp_path / "b")
    assert code == 0, err
    record = json.loads((tmp_path / "b" / "tiny" / "build.json").read_text())
    for r in record["results"]:
        q = r["quantization"]
        assert q["method"] == "kl" and q["activations"] == "symmetric" and q["samples"] == 50
        assert q["bias_correction"]["layers"] >= 1
        eq = q["equalization"]
        assert eq == EQUALIZATION, eq
    # one calibration serves both targets (phone: dynamic batch; cortex-m7: batch 1 after tracing again,
    # since the tiny model's Flatten reads the batch size)
    assert err.count("calibrate: tracing the float graph") == 2
    assert "calibrate: tracing the float graph, statistics of 50 samples" in err
    assert "calibrate: tracing the float graph (batch 1), statistics of 50 samples" in err
    report = (tmp_path / "b" / "tiny" / "cortex-m7" / "report.md").read_text()
    assert "## Calibration" in report and "Ranges by **kl**, symmetric activations" in report
    assert "Bias correction:" in report


@pytest.mark.parametrize(
    "quantize,message",
    [
        (
            "mode: int16x8, calibration: kl",
            "quantize: calibration, activations, equalize, bias_correction, smooth, float_layers, int16_layers "
            "and int4_layers apply",
        ),
        ("mode: float16, equalize: true", "apply to int8; phone-cpu gets 'float16'"),
    ],
)
def test_options_outside_int8_are_refused(tiny_recipe, tmp_path, run_cli, quantize, message):
    code, _, err = run_cli("build", tiny_recipe(quantize=quantize), "--out", tmp_path / "b")
    assert code == 9 and message in err
    assert not (tmp_path / "b" / "tiny").exists()


def test_options_with_qat_are_refused(tiny_recipe, tmp_path, run_cli):
    recipe = tiny_recipe(quantize="mode: int8, calibration: percentile", extra="compress: [{step: qat, epochs: 1}]")
    code, _, err = run_cli("recipe", "check", recipe)
    assert code == 3 and "QAT learns its ranges" in err


def test_bad_percentile_is_refused(tiny_recipe, run_cli):
    code, _, err = run_cli("recipe", "check", tiny_recipe(quantize="mode: int8, percentile: 20"))
    assert code == 3 and "percentile" in err


def test_float_layers_stay_float_on_a_phone_and_are_refused_by_an_mcu(tiny_recipe, tmp_path, run_cli):
    from toolchain.tflite_model import TFLiteModel

    recipe = tiny_recipe(quantize="mode: int8, float_layers: [dense]", train="train: {epochs: 2}")
    code, _, err = run_cli("build", recipe, "--out", tmp_path / "b")
    assert code == 0, err
    (r,) = json.loads((tmp_path / "b" / "tiny" / "build.json").read_text())["results"]
    assert r["quantization"]["float_ops"] and "dense" in r["quantization"]["float_ops"][0]
    m = TFLiteModel.from_file(r["artifact"])
    fc = next(op for op in m.ops if op.name == "FULLY_CONNECTED")
    conv = next(op for op in m.ops if op.name == "CONV_2D")
    assert m.tensors[fc.outputs[0]].dtype == "float32" and m.tensors[conv.outputs[0]].dtype == "int8"
    assert r["metrics"]["top1_agreement"] > 0.9  # LiteRT runs the mixed model
    code, _, err = run_cli("build", tiny_recipe(quantize="mode: int8, float_layers: [dense]", targets="[cortex-m7]"))
    assert code == 9 and "cortex-m7 runs integer models only" in err


def test_float_layers_that_match_nothing_are_refused(tiny_recipe, tmp_path, run_cli):
    recipe = tiny_recipe(quantize="mode: int8, float_layers: [nosuchlayer]", train="train: {epochs: 1}")
    code, _, err = run_cli("build", recipe, "--out", tmp_path / "b")
    assert code == 3 and err.strip().splitlines()[-1].startswith("error: quantize.float_layers: nosuchlayer match no")


def test_an_attention_encoder_calibrates(keras, tmp_path, run_cli):
    """MultiHeadAttention makes tensors whose last axis grows with the batch (heads x tokens): their statistics
    are taken without per-channel terms (the calibration stopped on the broadcast of a batch of 16 against the last
    batch before), and bias correction skips them."""
    import numpy as np

    from tests.conftest import write_recipe

    keras.utils.set_random_seed(0)
    L = keras.layers
    x_in = keras.Input((8, 16), name="x")
    h = L.LayerNormalization()(x_in + L.MultiHeadAttention(num_heads=2, key_dim=8)(x_in, x_in))
    out = L.Dense(4, activation="softmax")(L.GlobalAveragePooling1D()(L.Dense(16, activation="relu")(h)))
    model = keras.Model(x_in, out)
    rng = np.random.default_rng(1)
    for layer in model.layers:  # biases the converter keeps (zeros it folds away)
        if isinstance(layer, L.Dense):
            layer.bias.assign(rng.normal(0, 0.1, layer.bias.shape).astype(np.float32))
    model.save(tmp_path / "enc.keras")
    x = np.random.default_rng(0).normal(size=(230, 8, 16)).astype(np.float32)  # 23 calibration samples: 16 + 7
    np.savez(tmp_path / "d.npz", x=x, y=model.predict(x, verbose=0).argmax(1))
    recipe = write_recipe(
        tmp_path,
        """
        schema_version: 1
        name: enc
        model: {file: enc.keras, classes: 4}
        data: {npz: d.npz}
        quantize: {bias_correction: true}
        targets: [phone-cpu]
        acceptance: {max_accuracy_drop: 20}
        """,
    )
    code, out, err = run_cli("build", recipe, "--out", tmp_path / "b", "--json")
    assert code == 0, err
    (r,) = json.loads(out)["results"]
    assert r["ops"].get("BATCH_MATMUL", 0) >= 1 and r["metrics"]["top1_agreement"] >= 0.9, (r["ops"], r["metrics"])
    assert r["quantization"]["bias_correction"]["layers"] >= 1

"""Attention models: the toolchain's Transformer encoder, the kernels a target's runtime lacks, the GELU rewrite."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import write_recipe
from toolchain.checks.kernels import missing, refuse_missing
from toolchain.config.loader import load_target
from toolchain.errors import CompatibilityError


def test_gelu_has_no_tflite_micro_kernel_and_the_refusal_says_the_fix():
    assert missing(load_target("phone-cpu"), {"GELU": 2, "BATCH_MATMUL": 4}) == {}
    assert set(missing(load_target("cortex-m7"), {"GELU": 2, "SOFTMAX": 3, "RSQRT": 4})) == {"GELU"}
    with pytest.raises(CompatibilityError, match=r"cortex-m7: GELU x2: tflite-micro has no int8 kernel.*rewrite"):
        refuse_missing(load_target("cortex-m7"), {"GELU": 2})
    # on an Ethos-U85 Vela keeps GELU on the NPU; the numerics check (tflite-micro) still cannot run it
    with pytest.raises(CompatibilityError, match=r"Vela keeps it on the NPU"):
        refuse_missing(load_target("ethos-u85-256"), {"GELU": 1})
    refuse_missing(load_target("cortex-m7"), {"LOGISTIC": 2, "MUL": 4})  # the rewrite's ops pass


RECIPE = """
schema_version: 1
name: tiny-enc
model:
  application: Transformer
  input_shape: [8, 8, 1]
  classes: 10
  transformer: {{dim: 16, heads: 2, blocks: 1, ffn: 32}}
data:
  builtin: digits
train: {{epochs: 6, batch_size: 32, learning_rate: 0.003}}
{compress}
quantize: {{mode: int8}}
targets: [cortex-m7]
acceptance: {{max_accuracy_drop: 3.0}}
"""


@pytest.mark.tf
def test_a_gelu_encoder_is_refused_on_tflite_micro_then_builds_rewritten(tmp_path, run_cli):
    code, _, err = run_cli("build", write_recipe(tmp_path, RECIPE.format(compress="")), "--out", tmp_path / "a")
    assert code == 9 and "GELU" in err and "rewrite" in err, err
    assert "train:" not in err  # refused from the recipe, before anything trained
    assert not (tmp_path / "a" / "tiny-enc" / "cortex-m7").exists()  # refused before any runtime ran it
    rewritten = RECIPE.format(compress="compress: [{step: rewrite, gelu: sigmoid}]")
    code, out, err = run_cli("build", write_recipe(tmp_path, rewritten), "--out", tmp_path / "b", "--json")
    assert code == 0, err
    (r,) = json.loads(out)["results"]
    assert "GELU" not in r["ops"] and r["ops"]["LOGISTIC"] == 1 and r["ops"]["BATCH_MATMUL"] == 2, r["ops"]
    assert {"SOFTMAX", "RSQRT", "SQUARED_DIFFERENCE", "MEAN"} <= set(r["ops"])
    assert r["runtime"] == "tflite-micro" and r["metrics"]["top1"] > 0.5, r["metrics"]


@pytest.mark.tf
def test_the_gelu_rewrite_keeps_the_function_and_loads_back(keras, tmp_path):
    from toolchain.compress.rewrite import rewrite_gelu
    from toolchain.config.recipe import ModelSpec
    from toolchain.models.source import build_model, load_model_file

    model = build_model(ModelSpec(application="Transformer", input_shape=(8, 8, 1)))
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype(np.float32)
    for form, tol in (("sigmoid", 0.05), ("tanh", 0.01)):
        new, changed = rewrite_gelu(model, form)
        assert changed == ["ffn_0_up", "ffn_1_up"]
        a, b = model.predict(x, verbose=0), new.predict(x, verbose=0)
        assert 0 < np.abs(a - b).max() < tol, (form, np.abs(a - b).max())  # an approximation, close
        new.save(tmp_path / f"{form}.keras")
        back = load_model_file(tmp_path / f"{form}.keras")
        np.testing.assert_allclose(back.predict(x, verbose=0), b, atol=1e-6)
        new.save(tmp_path / f"{form}.h5")  # how the compress stage stores it: loaded again in a fresh process
        np.save(tmp_path / "x.npy", x)
        code = (
            "import sys, numpy as np; from toolchain.stages.model import ModelStage; "
            "m = ModelStage('k', __import__('pathlib').Path(sys.argv[1]), None, {}).keras(); "
            "np.save(sys.argv[2], m.predict(np.load(sys.argv[3]), verbose=0))"
        )
        args = [tmp_path / f"{form}.h5", tmp_path / "y.npy", tmp_path / "x.npy"]
        subprocess.run([sys.executable, "-c", code, *map(str, args)], check=True, capture_output=True)
        np.testing.assert_allclose(np.load(tmp_path / "y.npy"), b, atol=1e-6)


def outlier_model(keras):
    """A pre-norm block whose LayerNorm output has 3 channels planted 100x the rest (gamma, beta x100, the next
    Dense's rows /100: the same function)."""
    L = keras.layers
    keras.utils.set_random_seed(0)
    x_in = keras.Input((8, 16), name="x")
    h = L.Dense(32, name="embed")(x_in)
    f = L.Dense(64, activation="gelu", name="up")(L.LayerNormalization(name="ln")(h))
    h = L.Add()([h, L.Dense(32, name="down")(f)])
    model = keras.Model(x_in, L.Dense(4, activation="softmax", name="head")(L.GlobalAveragePooling1D()(h)))
    g, b = model.get_layer("ln").get_weights()
    model.get_layer("ln").set_weights([g * np.r_[[100.0] * 3, [1.0] * 29], b * np.r_[[100.0] * 3, [1.0] * 29]])
    w, bias = model.get_layer("up").get_weights()
    model.get_layer("up").set_weights([w / np.r_[[100.0] * 3, [1.0] * 29][:, None], bias])
    return model


def test_smooth_is_refused_for_a_model_that_is_not_keras(tmp_path, run_cli):
    (tmp_path / "m.tflite").write_bytes(b"")
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 4), np.float32))
    body = """
        schema_version: 1
        name: sq
        task: none
        model: {file: m.tflite}
        data: {npz: d.npz}
        quantize: {smooth: {alpha: 0.5}}
        targets: [phone-cpu]
        """
    code, _, err = run_cli("recipe", "check", write_recipe(tmp_path, body))
    assert code == 3 and len(err.strip().splitlines()) == 1, err
    assert "quantize.smooth: SmoothQuant rewrites a Keras model's weights; a .tflite model" in err, err


@pytest.mark.tf
def test_smoothquant_keeps_the_function_and_pulls_the_outlier_channels_in(keras):
    from toolchain.quantize.smooth import smooth

    model = outlier_model(keras)
    x = np.random.default_rng(0).normal(size=(64, 8, 16)).astype(np.float32)
    smoothed, rows = smooth(model, [x], 0.5)
    np.testing.assert_allclose(smoothed.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-4)
    (row,) = rows  # the LayerNorm feeds only 'up'; 'embed' also feeds the residual Add: left alone
    assert row["layer"] == "ln" and row["into"] == ["up"]
    assert row["channel_range_before"] > 50 and row["channel_range_after"] < 3, row


@pytest.mark.tf
def test_smooth_in_a_build_is_reported_per_layer(keras, tmp_path, run_cli):
    model = outlier_model(keras)
    model.save(tmp_path / "m.keras")
    x = np.random.default_rng(1).normal(size=(200, 8, 16)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=model.predict(x, verbose=0).argmax(1))
    body = """
        schema_version: 1
        name: sq
        model: {file: m.keras, classes: 4}
        data: {npz: d.npz}
        quantize: {mode: int8, smooth: {alpha: 0.5}}
        targets: [cortex-m7]
        acceptance: {max_accuracy_drop: 50}
        """
    code, out, err = run_cli("build", write_recipe(tmp_path, body), "--out", tmp_path / "b", "--json")
    assert code == 9 and "GELU" in err, err  # tflite-micro: the rewrite is needed first
    body = body.replace("data: {npz: d.npz}", "data: {npz: d.npz}\n        compress: [{step: rewrite}]")
    code, out, err = run_cli("build", write_recipe(tmp_path, body), "--out", tmp_path / "c", "--json")
    assert code == 0, err
    (r,) = json.loads(out)["results"]
    (row,) = r["quantization"]["smoothing"]["layers"]
    assert row["layer"] == "ln" and row["channel_range_after"] < row["channel_range_before"] / 10, row
    assert "SmoothQuant (alpha 0.5)" in (tmp_path / "c" / "sq" / "cortex-m7" / "report.md").read_text()


def test_the_diagnosis_names_the_sensitive_ops_by_kind():
    from toolchain.report.diagnosis import markdown, sensitive

    def layer(name, op, snr):
        iso = {"channel_snr_db": snr, "snr_db": snr, "rmse_steps": 1.0}
        return {"layer": name, "tensor": name, "op": op, "depth": 1, "isolated": iso, "accumulated": None}

    d = {
        "layers": [
            layer("attention_0", "BATCH_MATMUL", 5.0),
            layer("pool", "MEAN", 20.0),  # a pooling MEAN: not the LayerNorm chain
            layer("norm_0", "MEAN", 30.0),
            layer("norm_0", "RSQRT", 35.0),
            layer("head", "SOFTMAX", 50.0),
        ]
    }
    for x in d["layers"]:
        x.update(range=[0, 1], clipped=0.0, weight_spread=None, fixes=["f"])
    rows = {r["role"]: (r["ops"], r["rank"], r["worst"]["layer"]) for r in sensitive(d)}
    assert rows == {
        "attention matmul": (1, 1, "attention_0"),
        "LayerNorm chain": (2, 3, "norm_0"),
        "softmax": (1, 5, "head"),
    }
    text = markdown({**d, "recipe": "r", "target": "t", "plan": "int8", "samples": 8})
    assert "## Sensitive ops" in text and "| LayerNorm chain | 2 | norm_0 (MEAN) | 3 |" in text


@pytest.mark.tf
def test_auto_gives_an_attention_models_sensitive_ops_16_bit_activations(tmp_path):
    """The plan search's rung for attention models: the softmax, LayerNorm chain, GELU and attention matmuls the
    phone's LiteRT runs in 16 bits (measured: int16_ops.yaml; RSQRT and SQUARED_DIFFERENCE are not among them),
    built: those ops have int16 activations in the artifact, and it runs."""
    from toolchain.config import load_recipe, load_target
    from toolchain.stages import search
    from toolchain.stages import target as one
    from toolchain.stages.context import open_build
    from toolchain.stages.data import stage_data
    from toolchain.stages.model import stage_compress, stage_model
    from toolchain.stages.plan import resolve_plan

    recipe = load_recipe(write_recipe(tmp_path, RECIPE.format(compress="").replace("[cortex-m7]", "[phone-cpu]")))
    phone = load_target("phone-cpu")
    with open_build(recipe, tmp_path / "b") as b:
        data = stage_data(b)
        model = stage_compress(b, stage_model(b, data), data)
        rungs = {name: rb for name, rb, _ in search._rungs(b, phone, data, model) if "sensitive" in name}
        ((name, rb),) = rungs.items()
        assert name == "int8, BATCH_MATMUL, GELU, MEAN, SOFTMAX with 16-bit activations (the sensitive ops)"
        r = one.build(rb, phone, resolve_plan(rb.recipe, phone), data, model)
    ops = r.quantization.int16_ops
    assert len(ops) >= 2 + 1 + 4 + 1, ops  # 2 attention matmuls, a GELU, LayerNorm and pooling means, softmaxes
    assert r.metrics.top1 is not None and r.metrics.top1_agreement > 0.9, r.metrics

"""Bring your own model and data: any task, any input rank, several inputs and outputs, an existing .tflite.

Each model is tiny and built here; each recipe goes through phone-cpu and cortex-m7 (and ethos-u55-128 where the
artifact is int8) with the real converter, LiteRT, tflite-micro and Vela.
"""

import hashlib
import json

import numpy as np
import pytest

from tests.conftest import int8_model, write_recipe

pytestmark = pytest.mark.tf

TARGETS = "[phone-cpu, cortex-m7, ethos-u55-128]"


def sensor_windows(n: int = 600, features: int = 16, anomalies: float = 0.08, seed: int = 0):
    """Vibration-like windows: a sine of random phase plus noise; anomalies are broadband bursts (label 1)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, features, endpoint=False)
    x = np.sin(t[None] * 2 + rng.uniform(0, 2 * np.pi, (n, 1))) + 0.05 * rng.normal(size=(n, features))
    y = (rng.uniform(size=n) < anomalies).astype(np.int64)
    x[y == 1] = rng.normal(0, 1.5, (int(y.sum()), features))
    return x.astype(np.float32), y


def build(run_cli, tmp_path, body: str, code: int = 0):
    recipe = write_recipe(tmp_path, body)
    rc, out, err = run_cli("build", recipe, "--out", tmp_path / "b", "--json")
    assert rc == code, err
    return (json.loads(out) if out else None), err


def by_target(record):
    return {r["target"]: r for r in record["results"]}


def test_autoencoder_anomaly_reports_auc(keras, tmp_path, run_cli):
    keras.utils.set_random_seed(3)
    L = keras.layers
    model = keras.Sequential(
        [
            keras.Input((16,), name="x"),
            L.Dense(8, activation="relu"),
            L.Dense(4, activation="relu"),
            L.Dense(8, activation="relu"),
            L.Dense(16),
        ]
    )
    model.save(tmp_path / "ae.keras")
    x, y = sensor_windows()
    np.savez(tmp_path / "sensors.npz", x=x, y=y)
    record, err = build(
        run_cli,
        tmp_path,
        f"""
        schema_version: 1
        name: ae
        task: anomaly
        model: {{file: ae.keras}}
        data: {{npz: sensors.npz}}
        train: {{epochs: 40, batch_size: 32, learning_rate: 0.01}}
        targets: {TARGETS}
        acceptance: {{max_metric_drop: 0.05, min_snr_db: 10}}
        """,
    )
    results = by_target(record)
    assert sorted(results) == ["cortex-m7", "ethos-u55-128", "phone-cpu"]
    for name, r in results.items():
        m = r["metrics"]
        assert m["task"] == "anomaly" and r["passed"], (name, r["failures"])
        assert m["reference_auc"] >= 0.95 and m["auc"] >= m["reference_auc"] - 0.05, (name, m)
        assert m["mean_error"] > 0 and m["snr_db"] >= 10
    assert results["cortex-m7"]["runtime"] == "tflite-micro" and results["cortex-m7"]["memory"]["arena_bytes"] > 0
    assert "model: float reference auc" in err


def test_audio_features_cnn_classifies(keras, tmp_path, run_cli):
    """49 frames x 10 mel bands, like keyword spotting: used as given (no image resizing)."""
    rng = np.random.default_rng(1)
    y = np.arange(400) % 4
    x = rng.normal(0, 0.3, (400, 49, 10, 1)).astype(np.float32)
    for c in range(4):
        x[y == c, :, 2 * c : 2 * c + 2, 0] += 1.5  # energy in the class's bands
    np.savez(tmp_path / "kws.npz", x=x, y=y)
    keras.utils.set_random_seed(4)
    L = keras.layers
    model = keras.Sequential(
        [
            keras.Input((49, 10, 1)),
            L.Conv2D(4, 3, activation="relu"),
            L.MaxPooling2D(2),
            L.Flatten(),
            L.Dense(4, activation="softmax"),
        ]
    )
    model.save(tmp_path / "kws.keras")
    record, _ = build(
        run_cli,
        tmp_path,
        f"""
        schema_version: 1
        name: kws
        model: {{file: kws.keras, classes: 4}}
        data: {{npz: kws.npz}}
        train: {{epochs: 4, learning_rate: 0.01}}
        targets: {TARGETS}
        acceptance: {{max_accuracy_drop: 3}}
        """,
    )
    assert [r["target"] for r in record["results"]] == ["phone-cpu", "cortex-m7", "ethos-u55-128"]
    for r in record["results"]:
        m = r["metrics"]
        assert m["reference_top1"] >= 0.9 and m["top1"] >= 0.87 and len(m["per_class"]) == 4, m
        assert np.sum(m["confusion"]) == m["samples"] and m["top5"] == 1.0


def test_regression_mlp_reports_mae_and_r2(keras, tmp_path, run_cli):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 6)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0, 1.5, -1.0]) + 0.1 * rng.normal(size=500)).astype(np.float32)
    np.savez(tmp_path / "reg.npz", x=x, y=y)
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    model.save(tmp_path / "mlp.keras")
    record, _ = build(
        run_cli,
        tmp_path,
        f"""
        schema_version: 1
        name: reg
        task: regression
        model: {{file: mlp.keras}}
        data: {{npz: reg.npz}}
        train: {{epochs: 60, learning_rate: 0.01}}
        targets: {TARGETS}
        acceptance: {{max_metric_drop: 0.2}}
        """,
    )
    assert [r["target"] for r in record["results"]] == ["phone-cpu", "cortex-m7", "ethos-u55-128"]
    for r in record["results"]:
        m = r["metrics"]
        assert m["task"] == "regression" and m["reference_r2"] >= 0.95 and m["r2"] >= 0.9, m
        assert m["mae"] <= m["reference_mae"] + 0.2 and r["passed"]


def two_input_data(n: int = 300, seed: int = 6):
    rng = np.random.default_rng(seed)
    accel, gyro = rng.normal(size=(n, 8)).astype(np.float32), rng.normal(size=(n, 4)).astype(np.float32)
    y = (accel[:, 0] > 0).astype(np.int64) + (gyro[:, 0] > 0).astype(np.int64)  # needs both inputs
    return accel, gyro, y


def test_two_inputs_matched_by_name(keras, tmp_path, run_cli):
    accel, gyro, y = two_input_data()
    np.savez(tmp_path / "imu.npz", gyro=gyro, accel=accel, y=y)  # not in the model's order: matched by name
    keras.utils.set_random_seed(7)
    L = keras.layers
    a, g = keras.Input((8,), name="accel"), keras.Input((4,), name="gyro")
    out = L.Dense(3, activation="softmax")(L.Dense(16, activation="relu")(L.Concatenate()([a, g])))
    keras.Model([a, g], out).save(tmp_path / "imu.keras")
    record, _ = build(
        run_cli,
        tmp_path,
        f"""
        schema_version: 1
        name: imu
        model: {{file: imu.keras, classes: 3}}
        data: {{npz: imu.npz}}
        train: {{epochs: 30, learning_rate: 0.01}}
        targets: {TARGETS}
        acceptance: {{max_accuracy_drop: 5, min_cosine: 0.98}}
        """,
    )
    assert [r["target"] for r in record["results"]] == ["phone-cpu", "cortex-m7", "ethos-u55-128"]
    for r in record["results"]:
        assert [t["name"] for t in r["io"]["inputs"]] and len(r["io"]["inputs"]) == 2
        assert r["metrics"]["reference_top1"] >= 0.75 and r["metrics"]["cosine"] >= 0.98 and r["passed"], r["failures"]


def test_two_outputs_each_compared(keras, tmp_path, run_cli):
    accel, _, y = two_input_data()
    np.savez(tmp_path / "d.npz", x=accel, y=(accel[:, 0] > 0).astype(np.int64))
    keras.utils.set_random_seed(8)
    L = keras.layers
    inp = keras.Input((8,), name="x")
    h = L.Dense(16, activation="relu")(inp)
    keras.Model(inp, [L.Dense(2, activation="softmax", name="cls")(h), L.Dense(3, name="aux")(h)]).save(
        tmp_path / "two.keras"
    )
    record, _ = build(
        run_cli,
        tmp_path,
        f"""
        schema_version: 1
        name: two
        model: {{file: two.keras, classes: 2}}
        data: {{npz: d.npz}}
        targets: {TARGETS}
        acceptance: {{max_accuracy_drop: 5, min_snr_db: 15}}
        """,
    )
    assert [r["target"] for r in record["results"]] == ["phone-cpu", "cortex-m7", "ethos-u55-128"]
    for r in record["results"]:
        outputs = r["metrics"]["outputs"]
        assert len(outputs) == 2 and len(r["io"]["outputs"]) == 2
        assert [o["output"] for o in outputs] == ["0", "1"]
        assert all(o["snr_db"] >= 15 and o["cosine"] > 0.99 for o in outputs), outputs  # both outputs in order
        assert r["io"]["outputs"][1]["shape"][-1] == 3


@pytest.fixture
def mlp_files(keras, tmp_path):
    rng = np.random.default_rng(9)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    y = (x.sum(axis=1) > 0).astype(np.int64)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    keras.utils.set_random_seed(10)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2, activation="softmax")]
    )
    for layer in model.layers:  # biases the converter keeps (zeros it folds away)
        layer.bias.assign(rng.normal(0, 0.1, layer.bias.shape).astype(np.float32))
    int8_model(model, tmp_path / "mlp_int8.tflite")
    from toolchain.convert import ConvertPlan, convert

    (tmp_path / "mlp_float.tflite").write_bytes(convert(model, ConvertPlan("float32", batch=1)))
    return tmp_path


def test_existing_tflite_is_validated_without_conversion(mlp_files, run_cli):
    record, err = build(
        run_cli,
        mlp_files,
        f"""
        schema_version: 1
        name: given
        model: {{file: mlp_int8.tflite, reference: mlp_float.tflite, classes: 2}}
        data: {{npz: d.npz}}
        targets: {TARGETS}
        acceptance: {{max_accuracy_drop: 10}}
        """,
    )
    sha = hashlib.sha256((mlp_files / "mlp_int8.tflite").read_bytes()).hexdigest()
    assert {r["sha256"] for r in record["results"]} == {sha}  # the file itself, on every target
    assert "convert: none, mlp_int8.tflite is used as it is (int8, I/O int8)" in err and "calibrating" not in err
    assert [r["target"] for r in record["results"]] == ["phone-cpu", "cortex-m7", "ethos-u55-128"]
    for r in record["results"]:
        m = r["metrics"]
        assert r["mode"] == "int8" and m["top1_agreement"] >= 0.9 and m["cosine"] > 0.98, m


def test_float_tflite_is_quantized_by_the_toolchain(mlp_files, run_cli):
    """A float .tflite gets the toolchain's own int8 calibration on integer targets (it was refused before): its
    own outputs on LiteRT are the reference, layers are named by tensor or op type."""
    record, err = build(
        run_cli,
        mlp_files,
        """
        schema_version: 1
        name: given
        model: {file: mlp_float.tflite, classes: 2}
        data: {npz: d.npz}
        quantize: {calibration: percentile, percentile: 99.9}
        targets: [phone-cpu, cortex-m7, ethos-u55-128]
        acceptance: {max_accuracy_drop: 5}
        """,
    )
    results = by_target(record)
    assert "calibrate: tracing" in err and "used as it is" not in err
    for name, r in results.items():
        q = r["quantization"]
        assert r["mode"] == "int8" and q["method"] == "percentile" and q["route"] == "flatbuffer", name
        assert r["metrics"]["top1_agreement"] >= 0.9 and r["metrics"]["cosine"] > 0.98, r["metrics"]
    assert results["phone-cpu"]["io"]["input"]["dtype"] == "float32"
    assert results["cortex-m7"]["io"]["input"]["dtype"] == "int8"
    assert results["ethos-u55-128"]["accelerator"]["ops_on"] == results["ethos-u55-128"]["accelerator"]["ops_total"]

    # an op type names the layers to keep in float (a flatbuffer's ops have no Keras layer)
    record, _ = build(
        run_cli,
        mlp_files,
        """
        schema_version: 1
        name: given
        model: {file: mlp_float.tflite, classes: 2}
        data: {npz: d.npz}
        quantize: {float_layers: [SOFTMAX]}
        targets: [phone-cpu]
        acceptance: {max_accuracy_drop: 5}
        """,
    )
    (r,) = record["results"]
    assert r["quantization"]["float_ops"] == [r["io"]["output"]["name"]]  # the softmax makes the output
    assert r["ops"].get("DEQUANTIZE", 0) >= 1


def test_float_tflite_plan_search_and_diagnosis(mlp_files, run_cli):
    """mode auto climbs the ladder on a float .tflite (no QAT rung, no converter modes); its worst layers are named
    by tensor; diagnose explains its int8 plan; equalization and bias correction edit its weights."""
    body = """
        schema_version: 1
        name: given
        model: {file: mlp_float.tflite, classes: 2}
        data: {npz: d.npz}
        quantize: {mode: auto}
        targets: [phone-cpu]
        acceptance: {min_snr_db: 60}
        """
    record, err = build(run_cli, mlp_files, body)  # 60 dB: no int8 rung reaches it, the float32 rung does
    (r,) = record["results"]
    rungs = [p["plan"] for p in r["plan_search"]]
    assert rungs[0] == "int8 minmax" and rungs[-1] == "float32", rungs
    assert not any("quantization-aware" in p or "int16x8" in p or "float16" in p for p in rungs), rungs
    assert any("in float (the diagnosis' worst)" in p for p in rungs), rungs
    assert r["mode"] == "float32", r["mode"]  # the last rung is the float graph itself: it meets 60 dB
    code, out, err = run_cli("diagnose", mlp_files / "recipe.yaml", "--out", mlp_files / "diag", "--format", "json")
    assert code == 0, err
    layers = json.loads(out)["layers"]
    assert layers and all(d["layer"] is None and d["tensor"] for d in layers), layers
    assert {d["op"] for d in layers} >= {"FULLY_CONNECTED"}
    body = body.replace("{mode: auto}", "{equalize: true, bias_correction: true}").replace("60", "20")
    record, _ = build(run_cli, mlp_files, body)
    q = record["results"][0]["quantization"]
    assert len(q["equalization"]["pairs"]) == 1 and q["bias_correction"]["layers"] == 2, q


def test_float_tflite_refuses_the_converter_modes(mlp_files, run_cli):
    _, err = build(
        run_cli,
        mlp_files,
        """
        schema_version: 1
        name: given
        model: {file: mlp_float.tflite, classes: 2}
        data: {npz: d.npz}
        quantize: {mode: float16}
        targets: [phone-cpu]
        """,
        code=9,
    )
    assert "quantize.mode: 'float16' is made by the TFLite converter from a TensorFlow graph" in err
    assert not (mlp_files / "b" / "given").exists()  # refused before any work


def test_quantized_tflite_refuses_calibration_options(mlp_files, run_cli):
    _, err = build(
        run_cli,
        mlp_files,
        """
        schema_version: 1
        name: given
        model: {file: mlp_int8.tflite, classes: 2}
        data: {npz: d.npz}
        quantize: {calibration: mse}
        targets: [cortex-m7]
        """,
        code=9,
    )
    assert "mlp_int8.tflite is already quantized (int8) and is used as it is" in err


def test_sensor_anomaly_recipe_builds_for_all_its_targets(tmp_path, run_cli):
    """recipes/sensor-anomaly.yaml: a dense autoencoder on synthetic vibration windows (from
    scripts/make_sensor_anomaly.py)."""
    from tests.conftest import REPO

    code, out, err = run_cli("build", REPO / "recipes" / "sensor-anomaly.yaml", "--out", tmp_path / "b", "--json")
    assert code == 0, err
    results = {r["target"]: r for r in json.loads(out)["results"]}
    assert set(results) == {"phone-cpu", "cortex-m4", "ethos-u55-128", "edgetpu"}
    for r in results.values():
        m = r["metrics"]
        assert m["task"] == "anomaly" and m["reference_auc"] >= 0.95 and m["auc"] >= m["reference_auc"] - 0.02, m
    assert results["edgetpu"]["accelerator"]["ops_on"] == results["edgetpu"]["accelerator"]["ops_total"]


def test_a_keras3_model_file_converts_and_runs(tmp_path, run_cli):
    import keras as keras3  # Keras 3: the format users of recent TensorFlow save in

    keras3.utils.set_random_seed(11)
    model = keras3.Sequential(
        [keras3.Input((6,)), keras3.layers.Dense(8, activation="relu"), keras3.layers.Dense(2, activation="softmax")]
    )
    model.save(tmp_path / "k3.keras")
    rng = np.random.default_rng(12)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=(x.sum(axis=1) > 0).astype(np.int64))
    body = """
        schema_version: 1
        name: k3
        model: {file: k3.keras, classes: 2}
        data: {npz: d.npz}
        targets: [phone-cpu, cortex-m7]
        acceptance: {max_accuracy_drop: 100, min_cosine: 0.98}
        """
    record, _ = build(run_cli, tmp_path, body)
    assert [r["target"] for r in record["results"]] == ["phone-cpu", "cortex-m7"]
    for r in record["results"]:
        assert r["metrics"]["cosine"] >= 0.98 and r["metrics"]["top1_agreement"] >= 0.9 and r["passed"], r
    _, err = build(
        run_cli, tmp_path, body.replace("data: {npz: d.npz}", "data: {npz: d.npz}\n        train: {epochs: 1}"), code=5
    )
    assert "k3.keras was saved by Keras 3; the toolchain trains tf_keras models" in err


def test_a_savedmodel_signature_converts_with_its_named_outputs(tmp_path, run_cli):
    """A SavedModel written with tf.saved_model.save (no Keras): its 'serving_default' signature, two named outputs."""
    from toolchain.models.compat import tf

    t = tf()
    rng = np.random.default_rng(13)

    class Scorer(t.Module):
        def __init__(self):
            super().__init__()
            self.w = t.Variable(rng.normal(size=(6, 2)).astype(np.float32))
            self.v = t.Variable(rng.normal(size=(6, 3)).astype(np.float32))

        @t.function(input_signature=[t.TensorSpec([None, 6], t.float32, name="features")])
        def serve(self, features):
            return {"probs": t.nn.softmax(features @ self.w), "embedding": t.nn.relu(features @ self.v)}

    module = Scorer()
    t.saved_model.save(module, str(tmp_path / "scorer"), signatures={"serving_default": module.serve})
    x = rng.normal(size=(200, 6)).astype(np.float32)
    np.savez(tmp_path / "d.npz", features=x, y=(x @ module.w.numpy()).argmax(axis=1))
    body = """
        schema_version: 1
        name: sm
        task: none
        model: {file: scorer, signature: serving_default}
        data: {npz: d.npz}
        targets: [phone-cpu, cortex-m7]
        acceptance: {min_snr_db: 15}
        """
    record, _ = build(run_cli, tmp_path, body)
    assert [r["target"] for r in record["results"]] == ["phone-cpu", "cortex-m7"]
    for r in record["results"]:
        m = r["metrics"]
        # outputs in the order of their names: embedding (3 values), then probs (2)
        assert [o["output"] for o in m["outputs"]] == ["0", "1"] and r["io"]["outputs"][0]["shape"][-1] == 3
        assert m["task"] == "none" and m["top1"] is None
        assert all(o["snr_db"] >= 15 for o in m["outputs"]) and r["passed"], (m["outputs"], r["failures"])
    _, err = build(
        run_cli, tmp_path, body.replace("data: {npz: d.npz}", "data: {npz: d.npz}\n        train: {epochs: 1}"), code=5
    )
    assert "a SavedModel signature is converted as it is" in err

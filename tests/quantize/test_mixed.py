"""16-bit activations on chosen layers (quantize.int16_layers): the artifact each runtime really runs, and the
profile data's refusals checked against what the runtime really does."""

import json
from pathlib import Path

import numpy as np
import pytest

from toolchain.quantize.mixed import int16_data, refused_int16


@pytest.mark.tf
def test_one_int16_layer_runs_in_litert_and_tflite_micro_and_the_edge_tpu_refuses_it(tiny_recipe, tmp_path, run_cli):
    from toolchain.tflite_model import TFLiteModel

    recipe = tiny_recipe(
        quantize="mode: int8, int16_layers: [conv]", targets="[cortex-m7, phone-cpu]", train="train: {epochs: 2}"
    )
    code, _, err = run_cli("build", recipe, "--out", tmp_path / "b")
    assert code == 0, err
    results = {r["target"]: r for r in json.loads((tmp_path / "b" / "tiny" / "build.json").read_text())["results"]}
    m7 = results["cortex-m7"]
    assert list(m7["sections"]) == ["litert", "tflm"] and m7["passed"]
    m = TFLiteModel.from_file(m7["artifact"])
    conv = next(op for op in m.ops if op.name == "CONV_2D")
    fc = next(op for op in m.ops if op.name == "FULLY_CONNECTED")
    assert m.tensors[conv.outputs[0]].dtype == "int16" and m.tensors[conv.inputs[0]].dtype == "int16"
    assert m.tensors[conv.inputs[1]].dtype == "int8"  # 8-bit weights
    assert m.tensors[fc.outputs[0]].dtype == "int8" and m.tensors[m.inputs[0]].dtype == "int8"
    assert m.op_counts()["QUANTIZE"] >= 2  # int8 -> int16 before the conv, int16 -> int8 after it
    assert (
        m7["sections"]["tflm"]["metrics"]["top1_agreement"] >= 0.9
    )  # tflite-micro's outputs agree with the float model
    q = m7["quantization"]
    assert q["int16_ops"] and "conv" in q["int16_ops"][0]
    assert 0 < abs(m7["size_bytes"] - q["int8_bytes"]) < 2000  # the exception's size cost is recorded
    phone = results["phone-cpu"]  # float I/O on the phone: QUANTIZE/DEQUANTIZE at the edges
    assert phone["io"]["input"]["dtype"] == "float32" and phone["quantization"]["int16_ops"]
    report = (tmp_path / "b" / "tiny" / "cortex-m7" / "report.md").read_text()
    assert "16-bit activations (quantize.int16_layers): 1 ops" in report and "Cost of the exceptions" in report

    code, _, err = run_cli("build", tiny_recipe(quantize="mode: int8, int16_layers: [conv]", targets="[edgetpu]"))
    assert code == 9 and "edgetpu has no 16-bit activation kernels" in err


@pytest.mark.tf
def test_int16_layers_whose_op_the_runtime_lacks_are_refused_with_the_measured_reason(tmp_path, run_cli, keras):
    """tflite-micro has no int16 GELU (measured): an MCU refuses it; the phone's LiteRT runs it."""
    import textwrap

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(16, name="d1"),
            keras.layers.Activation("gelu", name="act"),
            keras.layers.Dense(10, activation="softmax", name="d2"),
        ]
    )
    model.save(tmp_path / "m.keras")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        textwrap.dedent(f"""
        schema_version: 1
        name: gelu
        model: {{file: {tmp_path / "m.keras"}, classes: 10}}
        data: {{builtin: digits}}
        train: {{epochs: 1}}
        quantize: {{mode: int8, int16_layers: [act], calibration_samples: 32}}
        targets: [cortex-m7]
        """)
    )
    code, _, err = run_cli("build", recipe, "--out", tmp_path / "b")
    assert code == 9, err
    line = err.strip().splitlines()[-1]
    assert "tflm has no 16-bit-activation kernel for GELU" in line and "failed to allocate" in line
    assert not (tmp_path / "b" / "gelu" / "cortex-m7").exists()


@pytest.mark.tf
@pytest.mark.parametrize("op", ["GELU", "RESIZE_BILINEAR"])
def test_the_data_says_what_tflite_micro_really_does(op, tmp_path, keras):
    """The ops int16_ops.yaml refuses for tflm fail in tflite-micro; the ones it accepts run (SNR >= 20 dB)."""
    from toolchain.checks import tflm
    from toolchain.errors import ToolchainError
    from toolchain.quantize import ranges
    from toolchain.quantize.calibrate import calibrate
    from toolchain.quantize.graph import Graph
    from toolchain.quantize.mixed import quantize_mixed

    assert op in refused_int16("tflm", {op}) and not refused_int16("litert", {op})
    keras.utils.set_random_seed(0)
    layer = keras.layers.Activation("gelu", name="x") if op == "GELU" else keras.layers.Resizing(8, 8, name="x")
    shape = (16,) if op == "GELU" else (4, 4, 2)
    inp = keras.Input(shape)
    x = layer(keras.layers.Dense(shape[-1], name="pre")(inp))
    out = keras.layers.Dense(3, name="post")(keras.layers.Flatten()(x))
    xs = np.random.default_rng(0).normal(size=(16, *shape)).astype(np.float32)
    graph, st, _ = calibrate(keras.Model(inp, out), [xs], False, 1)
    g = Graph(graph)
    nodes = [g.name(int(o.outputs[0])) for o in g.sg.operators if g.name(int(o.outputs[0])).startswith("x")]
    bounds = {g.name(i): ranges.compute(st[i], "minmax", 100) for i in g.slots()}
    path = tmp_path / "m.tflite"
    path.write_bytes(quantize_mixed(graph, bounds, nodes, [], "float32", True))
    with pytest.raises(ToolchainError):
        tflm.run(path, 1 << 18, xs[:2])


def test_every_profile_names_a_measured_table():
    from toolchain.config.loader import list_targets, load_target

    data = int16_data()
    assert set(data["runtimes"]) == {"litert", "tflm", "vela-ethos-u55", "vela-ethos-u85"}
    for target in map(load_target, list_targets()):
        if target.numerics.int16_ops:
            assert data["runtimes"][target.numerics.int16_ops]["ok"], target.name
    assert "CONV_2D" in data["runtimes"]["tflm"]["ok"] and "GELU" in data["runtimes"]["tflm"]["refused"]


@pytest.mark.tf
def test_int4_weights_run_on_litert_and_tflite_micro(tiny_recipe, tmp_path, run_cli):
    """4-bit conv and dense weights (int8 activations): the artifact holds INT4 tensors, is smaller than the same
    ranges all int8, and passes LiteRT on the phone and tflite-micro on cortex-m7 (per-tensor dense weights there)."""
    from toolchain.tflite_model import TFLiteModel

    recipe = tiny_recipe(
        quantize="mode: int8, int4_layers: ['*']",
        targets="[phone-cpu, cortex-m7]",
        extra="acceptance: {max_accuracy_drop: 10}",
    )
    code, out, err = run_cli("build", recipe, "--out", tmp_path / "b", "--json")
    assert code == 0, err
    for r in json.loads(out)["results"]:
        q = r["quantization"]
        assert len(q["int4_ops"]) == 2 and r["size_bytes"] < q["int8_bytes"] - 1000, (r["target"], q)
        m = TFLiteModel(Path(r["artifact"]).read_bytes())
        four = [t for t in m.tensors if t.dtype == "int4"]
        assert {t.elements for t in four} == {72, 2880}  # conv 3x3x1x8 and dense 288x10
        dense = next(t for t in four if t.elements == 2880)
        assert len(dense.scales) == (10 if r["target"] == "phone-cpu" else 1)
        assert r["passed"] and r["metrics"]["top1"] > 0.5


@pytest.mark.tf
def test_int4_weights_refused_where_no_runtime_runs_them(tiny_recipe, tmp_path, run_cli):
    recipe = tiny_recipe(quantize="mode: int8, int4_layers: ['*']", targets="[ethos-u55-128]")
    code, _, err = run_cli("build", recipe, "--out", tmp_path / "b")
    assert code == 9 and "quantize.int4_layers: ethos-u55-128 runs no 4-bit weights" in err
    recipe = tiny_recipe(quantize="mode: int8, int4_layers: [flatten]", targets="[phone-cpu]")
    code, _, err = run_cli("build", recipe, "--out", tmp_path / "c")
    assert code == 9 and "runs none of the named layers' ops with 4-bit weights" in err

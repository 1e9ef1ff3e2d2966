"""ONNX models: onnx2torch, litert-torch, the toolchain's quantization, the real runtimes; onnxruntime the reference.
The models are built here with ``onnx.helper`` (no exporter): conv, batch norm, ReLU, max pool, flatten, gemm,
softmax on NCHW 3x8x8 images; one with an op the route cannot convert, one whose layout the graph does not show."""

import json

import numpy as np
import pytest

from tests.conftest import write_recipe

pytestmark = pytest.mark.tf
onnx = pytest.importorskip("onnx", reason="the onnx extra: pip install -e '.[onnx]'")
pytest.importorskip("onnx2torch", reason="the onnx extra: pip install -e '.[onnx]'")


def tiny_cnn(extra_op: str | None = None, seed: int = 0):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    init = lambda name, a: numpy_helper.from_array(np.asarray(a, dtype=np.float32), name)  # noqa: E731
    inits = [
        init("W", rng.normal(0, 0.3, (8, 3, 3, 3))),
        init("B", rng.normal(0, 0.1, 8)),
        init("scale", rng.uniform(0.5, 1.5, 8)),
        init("bias", rng.uniform(-0.2, 0.2, 8)),
        init("mean", rng.uniform(-0.5, 0.5, 8)),
        init("var", rng.uniform(0.5, 2.0, 8)),
        init("FW", rng.normal(0, 0.1, (10, 128))),
        init("FB", rng.normal(0, 0.1, 10)),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "W", "B"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["b"], epsilon=1e-5),
        helper.make_node("Relu", ["b"], ["r"]),
    ]
    last = "r"
    if extra_op:
        nodes.append(helper.make_node(extra_op, [last], ["e"]))
        last = "e"
    nodes += [
        helper.make_node("MaxPool", [last], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "FW", "FB"], ["g"], transB=1),
        helper.make_node("Softmax", ["g"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import onnxruntime as ort

    d = tmp_path_factory.mktemp("onnx")
    onnx.save(tiny_cnn(), d / "net.onnx")
    onnx.save(tiny_cnn("Hardmax"), d / "hardmax.onnx")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3, 8, 8)).astype(np.float32)
    sess = ort.InferenceSession(str(d / "net.onnx"), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"input": x})[0].argmax(1)  # labels the net gets right: top-1 means something
    np.savez(d / "nchw.npz", x=x, y=y)
    (d / "junk.onnx").write_bytes(b"\x08\x07 not a model")
    return d


def recipe(d, model: str = "net.onnx", extra: str = "", targets: str = "[phone-cpu]"):
    return write_recipe(
        d,
        f"""
        schema_version: 1
        name: onet
        model: {{file: {model}, classes: 10}}
        data: {{npz: nchw.npz}}
        {extra}
        targets: {targets}
        acceptance: {{max_accuracy_drop: 5}}
        """,
    )


def test_onnx_builds_float_and_int8_against_onnxruntime(files, run_cli, tmp_path):
    code, out, err = run_cli(
        "build", recipe(files, extra="quantize: {mode: float32}"), "--out", tmp_path / "f", "--json"
    )
    assert code == 0, err
    (r,) = json.loads(out)["results"]
    assert r["io"]["input"]["shape"] == [1, 8, 8, 3] and r["ops"].get("TRANSPOSE", 0) <= 1, (r["io"], r["ops"])
    assert r["metrics"]["cosine"] > 0.9999 and r["metrics"]["top1"] == r["metrics"]["reference_top1"] == 1.0
    targets = "[phone-cpu, cortex-m7, ethos-u55-128]"
    code, out, err = run_cli("build", recipe(files, targets=targets), "--out", tmp_path / "q", "--json")
    assert code == 0, err
    for r in json.loads(out)["results"]:
        assert r["mode"] == "int8" and r["metrics"]["top1_agreement"] >= 0.9 and r["metrics"]["snr_db"] > 15, r


@pytest.mark.parametrize(
    ("model", "extra", "code", "message"),
    [
        ("junk.onnx", "", 5, "model.file: junk.onnx is not a valid ONNX model"),
        ("hardmax.onnx", "", 8, "ONNX: the route cannot convert Hardmax-13"),
        ("net.onnx", "train: {epochs: 1}", 3, "an ONNX model is used as trained"),
    ],
)
def test_bad_onnx_input_is_one_line_with_its_exit_code(files, run_cli, tmp_path, model, extra, code, message):
    rc, _, err = run_cli("build", recipe(files, model, extra), "--out", tmp_path / "b")
    assert rc == code and message in err, err
    assert "Traceback" not in err and not (tmp_path / "b" / "onet" / "phone-cpu").exists()


def test_a_layout_the_graph_does_not_show_must_be_given(tmp_path):
    from onnx import TensorProto, helper

    from toolchain.errors import DataShapeError
    from toolchain.models.onnx_route import input_specs

    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "ambiguous",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])],
    )
    model = helper.make_model(g)
    with pytest.raises(DataShapeError, match="is NCHW or NHWC: set data.layout"):
        input_specs(model)
    (spec,) = input_specs(model, "nchw")
    assert spec.channels_first and spec.shape == (8, 8, 8)
    assert [s.channels_first for s in input_specs(tiny_cnn())] == [True]  # the Conv says NCHW

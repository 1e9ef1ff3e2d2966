"""Coral's published Edge TPU rules: one tiny model per rule, built to break exactly that rule."""

import numpy as np
import pytest

from tests.conftest import int8_model
from toolchain.checks.edgetpu import check
from toolchain.config.target import EdgeTpu
from toolchain.convert import ConvertPlan, convert
from toolchain.tflite_model import TFLiteModel


def tpu(blob: bytes, **spec) -> dict:
    return check(TFLiteModel(blob), EdgeTpu(**spec))


def cpu_ops(r: dict) -> list[tuple[str, str]]:
    return [(p["op"], p["reason"]) for p in r["placement"] if p["on"] == "cpu"]


@pytest.fixture(scope="module")
def conv_stack(keras):
    """conv -> conv -> flatten -> dense -> softmax: every op on Coral's list."""
    keras.utils.set_random_seed(0)
    L = keras.layers
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(4, 3, activation="relu"),
            L.Conv2D(4, 3),
            L.Flatten(),
            L.Dense(5),
            L.Softmax(),
        ]
    )


@pytest.mark.tf
def test_compliant_model_maps_entirely(conv_stack):
    r = tpu(int8_model(conv_stack, io="uint8"))
    assert r["compiles"] and r["ops_on_cpu"] == 0 and r["ops_on_tpu"] >= 5
    assert r["cached_param_bytes"] > 0 and r["streamed_param_bytes"] == 0
    assert r["estimate_ms"]["total"] > 0


@pytest.mark.tf
def test_rule_fully_8bit(conv_stack):
    """float16 weights: the compiler refuses a model that is not 8-bit quantized."""
    x = np.random.default_rng(0).uniform(-1, 1, (8, 8, 8, 1)).astype(np.float32)
    blob = convert(conv_stack, ConvertPlan("float16", batch=1), x)
    r = tpu(blob)
    assert not r["compiles"] and r["ops_on_tpu"] == 0
    assert any("fully 8-bit" in msg for msg in r["refusals"])


@pytest.mark.tf
def test_rule_static_shapes(conv_stack):
    r = tpu(int8_model(conv_stack, batch=None))
    assert not r["compiles"]
    assert any("constant at compile time" in msg and "dynamic axis" in msg for msg in r["refusals"])


@pytest.mark.tf
def test_rule_rank(keras):
    """A 5-D activation with a non-1 axis outside the 3 innermost stays on the CPU."""
    import tensorflow as tf

    L = keras.layers
    model = keras.Sequential(
        [
            keras.Input((8, 8, 4)),
            L.Conv2D(4, 1),
            L.Reshape((2, 4, 8, 4)),
            L.Lambda(lambda x: tf.reduce_max(x, axis=1)),
            L.Conv2D(2, 1),
        ]
    )
    r = tpu(int8_model(model))
    first = next(p for p in r["placement"] if p["on"] == "cpu")
    assert first["op"] == "RESHAPE" and "unsupported rank" in first["reason"] and "[1, 2, 4, 8, 4]" in first["reason"]
    assert r["ops_on_tpu"] == 1  # only the first conv


@pytest.mark.tf
def test_rule_supported_ops_and_single_partition(keras):
    """HARD_SWISH is not in Coral's table; the supported conv after it runs on the CPU too."""
    import tensorflow as tf

    L = keras.layers
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(4, 3),
            L.Activation(tf.nn.relu6),
            L.Lambda(lambda x: x * tf.nn.relu6(x + 3) / 6),
            L.Conv2D(4, 3),
        ]
    )
    blob = int8_model(model)
    names = [op.name for op in TFLiteModel(blob).ops]
    assert "HARD_SWISH" in names
    r = tpu(blob)
    ops = cpu_ops(r)
    assert ops[0][0] == "HARD_SWISH" and "not supported" in ops[0][1]
    assert ops[-1][0] == "CONV_2D" and "one TPU partition" in ops[-1][1]
    assert r["first_cpu_op"].endswith("HARD_SWISH")


@pytest.mark.tf
def test_rule_op_constraint_softmax_1d(keras):
    """Softmax over a 2-D (4 x 10) input breaks the 1-D limitation."""
    L = keras.layers
    model = keras.Sequential([keras.Input((4, 10)), L.Softmax()])
    r = tpu(int8_model(model))
    assert cpu_ops(r)[0][0] == "SOFTMAX" and "1-D input" in cpu_ops(r)[0][1]


@pytest.mark.tf
def test_rule_op_constraint_dilation(keras):
    L = keras.layers
    model = keras.Sequential([keras.Input((12, 12, 1)), L.Conv2D(4, 3, dilation_rate=(2, 1))])
    r = tpu(int8_model(model))
    assert cpu_ops(r)[0][0] == "CONV_2D" and "same dilation" in cpu_ops(r)[0][1] and "2x1" in cpu_ops(r)[0][1]


@pytest.mark.tf
def test_rule_parameter_cache(keras):
    """9 MB of int8 weights exceed the 8 MB on-chip cache: the rest is streamed every inference."""
    L = keras.layers
    model = keras.Sequential([keras.Input((3000,)), L.Dense(3000)])
    r = tpu(int8_model(model))
    assert r["ops_on_tpu"] == 1
    assert r["cached_param_bytes"] == 8 * 1024 * 1024
    assert r["streamed_param_bytes"] >= 9_000_000 - 8 * 1024 * 1024
    assert r["estimate_ms"]["param_streaming"] > 0


def test_committed_op_docs_are_generated_from_the_rules_and_the_table():
    from tests.conftest import REPO
    from toolchain.checks.edgetpu import SUPPORTED_OPS, docs

    assert (REPO / "docs" / "edgetpu-ops.md").read_text() == docs(), (
        "regenerate it: python -m toolchain.checks.edgetpu > docs/edgetpu-ops.md"
    )
    assert "CONV_2D" in SUPPORTED_OPS and "HARD_SWISH" not in SUPPORTED_OPS


@pytest.mark.tf
@pytest.mark.parametrize(("ctor", "published_ms"), [("MobileNet", 2.4), ("MobileNetV2", 2.6)])
def test_the_profile_estimate_is_within_25_percent_of_corals_published_latency(ctor, published_ms, tmp_path):
    """Coral's table (USB Accelerator, coral.ai/docs/edgetpu/benchmarks): MobileNet v1 1.0 224 2.4 ms, v2 2.6 ms.
    The same architecture with random weights (the shapes decide the time) through the edgetpu profile's fitted
    estimate."""
    from toolchain.config import load_target
    from tools.edgetpu_models import build

    name = "mobilenet_v1_1.0_224" if ctor == "MobileNet" else "mobilenet_v2_1.0_224"
    spec = load_target("edgetpu").edgetpu
    r = check(TFLiteModel.from_file(build(name, tmp_path)), spec)
    assert r["compiles"] and r["ops_on_cpu"] == 0
    assert abs(r["estimate_ms"]["total"] / published_ms - 1) <= 0.25, r["estimate_ms"]
    assert spec.error_pct is not None and spec.measurements >= 3

"""The toolchain's int8 route on tiny models, with the real converter and LiteRT."""

import numpy as np
import pytest

from toolchain.checks.litert import LiteRT
from toolchain.convert import ConvertPlan, convert
from toolchain.quantize.calibrate import calibrate, quantize
from toolchain.quantize.graph import Graph
from toolchain.tflite_model import TFLiteModel

pytestmark = pytest.mark.tf

RNG = np.random.default_rng(0)
X = RNG.uniform(-1, 1, (40, 8, 8, 1)).astype(np.float32)
OPTIONS = dict(method="minmax", percentile=99.99, symmetric=False, bias_correction=False, per_channel=True)


def numerics(blob: bytes) -> list[tuple]:
    """Everything about each tensor but its name (a Keras 3 twin names tensors its own way); scales rounded to
    float32 precision (the converter keeps min/max in float32, the toolchain in float64)."""
    m = TFLiteModel(blob)
    tensors = [(t.shape_signature, t.dtype, [float(f"{s:.6g}") for s in t.scales], t.zero_points) for t in m.tensors]
    return [*tensors, m.op_counts()]


@pytest.fixture(scope="module")
def pooled(keras):
    """Conv (BatchNorm, ReLU) -> global average pooling -> dense softmax: no op reads the batch size."""
    keras.utils.set_random_seed(2)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(name="relu"),
            keras.layers.GlobalAveragePooling2D(name="pool"),
            keras.layers.Dense(10, activation="softmax", name="dense"),
        ]
    )


@pytest.fixture(scope="module")
def calibrated(pooled):
    return calibrate(pooled, [X], equalize=False)


@pytest.mark.parametrize("io", ["int8", "uint8", "float32"])
def test_minmax_route_equals_the_converters_own_quantization(pooled, calibrated, io):
    """Fed the converter's own ranges (min/max of the same samples), the route writes the converter's model."""
    graph, stats, _ = calibrated
    ours, _ = quantize(graph, stats, io_type=io, batch=None, **OPTIONS)
    theirs = convert(pooled, ConvertPlan("int8", io, True, None), [X], sample=X)
    assert numerics(ours) == numerics(theirs)


def test_fixed_batch_is_derived_from_the_dynamic_graph(calibrated):
    graph, stats, meta = calibrated
    assert meta["batch_fixable"]
    dynamic, _ = quantize(graph, stats, io_type="int8", batch=None, **OPTIONS)
    fixed, _ = quantize(graph, stats, io_type="int8", batch=1, **OPTIONS)
    assert TFLiteModel(dynamic).tensors[0].shape_signature == [-1, 8, 8, 1]
    assert TFLiteModel(fixed).tensors[0].shape_signature == [1, 8, 8, 1]
    a, b = LiteRT(dynamic).predict(X), LiteRT(fixed).predict(X)
    np.testing.assert_array_equal(a[0], b[0])


def test_a_graph_that_reads_its_batch_is_traced_with_it(tiny_conv):
    """Flatten on a dynamic batch becomes SHAPE -> ... -> RESHAPE: that graph is traced again with batch 1."""
    graph, stats, meta = calibrate(tiny_conv, [X], equalize=False)
    assert not meta["batch_fixable"]
    graph1, stats1, meta1 = calibrate(tiny_conv, [X], equalize=False, batch=1)
    blob, _ = quantize(graph1, stats1, io_type="int8", batch=None, **OPTIONS)
    assert TFLiteModel(blob).tensors[TFLiteModel(blob).inputs[0]].shape_signature == [1, 8, 8, 1]
    assert "SHAPE" not in TFLiteModel(blob).op_counts()


def test_statistics_are_the_tensors_true_range(keras):
    """Min/max of a residual block's tensors equal the Keras model's own intermediate outputs (the converter's
    calibrator, in TF 2.21, records the in-place ADD's output range for the convolution that feeds it)."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 4))
    conv = keras.layers.Conv2D(4, 3, padding="same", name="branch")(inp)
    out = keras.layers.Add(name="sum")([inp, conv])
    model = keras.Model(inp, out)
    x = RNG.normal(size=(24, 8, 8, 4)).astype(np.float32) * 3
    graph, stats, _ = calibrate(model, [x], equalize=False)
    g = Graph(graph)
    branch = next(i for i in g.slots() if "branch" in g.name(i) and "sum" not in g.name(i))
    want = keras.Model(inp, conv).predict(x, verbose=0)
    assert stats[branch].min == pytest.approx(want.min(), rel=1e-4)
    assert stats[branch].max == pytest.approx(want.max(), rel=1e-4)


def test_symmetric_activations_have_zero_point_zero(keras):
    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.GlobalAveragePooling2D()]
        + [keras.layers.Dense(3)]
    )
    graph, stats, _ = calibrate(model, [X], equalize=False)
    blob, report = quantize(graph, stats, io_type="int8", batch=1, **{**OPTIONS, "symmetric": True})
    acts = [t for t in TFLiteModel(blob).tensors if t.dtype == "int8" and not t.is_constant]
    assert acts and all(t.zero_points == [0] for t in acts)
    assert report["activations"] == "symmetric"
    assert 0.4 < report["utilisation_mean"] < 0.95  # the ReLU output uses half of its grid
    asym, _ = quantize(graph, stats, io_type="int8", batch=1, **OPTIONS)
    assert any(t.zero_points != [0] for t in TFLiteModel(asym).tensors if t.dtype == "int8" and not t.is_constant)


def test_clipping_methods_report_what_they_clip(pooled):
    x = X.copy()
    x[0] *= 20  # one extreme sample
    graph, stats, _ = calibrate(pooled, [x], equalize=False)
    _, minmax = quantize(graph, stats, io_type="int8", batch=1, **OPTIONS)
    _, pct = quantize(graph, stats, io_type="int8", batch=1, **{**OPTIONS, "method": "percentile", "percentile": 99})
    assert minmax["clipped_tensors"] == 0 and minmax["clipped_share_max"] == 0
    assert pct["clipped_tensors"] > 0 and 0 < pct["clipped_share_max"] <= 0.05
    worst = pct["most_clipped"][0]
    assert worst["range"][1] < worst["observed"][1]

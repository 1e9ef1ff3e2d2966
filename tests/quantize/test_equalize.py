"""Cross-layer equalization and bias correction on tiny Dense nets, with the real converter and LiteRT."""

import numpy as np
import pytest

from toolchain.checks.litert import LiteRT
from toolchain.quantize.bias import correct
from toolchain.quantize.calibrate import calibrate, quantize
from toolchain.quantize.converter import calibration_graph, quantize_graph
from toolchain.quantize.graph import Graph
from toolchain.quantize.stats import collect

pytestmark = pytest.mark.tf

RNG = np.random.default_rng(0)
X = RNG.uniform(-1, 1, (64, 16)).astype(np.float32)
OPTIONS = dict(method="minmax", percentile=99.99, symmetric=False, bias_correction=False, io_type="float32")


@pytest.fixture(scope="module")
def rescaled(keras):
    """Dense 16 -> 12 (ReLU) -> 4 whose hidden channels are scaled by 0.1 ... 10 and compensated: same function."""
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(12, activation="relu"), keras.layers.Dense(4)])
    before = model.predict(X, verbose=0)
    (w1, b1), (w2, b2) = model.layers[0].get_weights(), model.layers[1].get_weights()
    s = np.logspace(-1, 1, 12).astype(np.float32)
    model.layers[0].set_weights([w1 * s, b1 * s])
    model.layers[1].set_weights([w2 / s[:, None], b2])
    np.testing.assert_allclose(model.predict(X, verbose=0), before, atol=1e-4)
    return model, before


def test_equalization_preserves_the_function_and_evens_the_ranges(rescaled):
    model, before = rescaled
    graph, stats, meta = calibrate(model, [X], equalize=True)
    eq = meta["equalization"]
    assert len(eq["pairs"]) == 1
    assert eq["range_ratio_before"] > 20 and eq["range_ratio_after"] < eq["range_ratio_before"] / 5
    np.testing.assert_allclose(LiteRT(graph).predict(X)[0], before, atol=1e-4)


def test_equalization_rescues_per_tensor_int8(rescaled):
    model, before = rescaled

    def error(equalize):
        graph, stats, _ = calibrate(model, [X], equalize=equalize)
        blob, _ = quantize(graph, stats, per_channel=False, batch=None, **OPTIONS)
        return float(np.abs(LiteRT(blob).predict(X)[0] - before).mean())

    plain, equalized = error(False), error(True)
    assert equalized < plain / 2, (plain, equalized)


def test_relu6_pairs_are_left_alone(keras):
    keras.utils.set_random_seed(6)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, activation="relu6"), keras.layers.Dense(4)])
    _, _, meta = calibrate(model, [X], equalize=True)
    assert meta["equalization"]["pairs"] == []
    assert list(meta["equalization"]["skipped"].values()) == [1]
    assert "RELU6" in next(iter(meta["equalization"]["skipped"]))


def test_bias_correction_removes_the_expected_shift_on_the_converters_grid(keras):
    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(4)])
    w, b = model.layers[0].get_weights()
    model.layers[0].set_weights([w, b + 0.1])  # the converter drops an all-zero bias
    x = (X + 0.5).astype(np.float32)  # a non-zero input mean: the shift dW @ E[x] is not zero
    graph, _ = calibration_graph(model, [x])
    g = Graph(graph)
    stats = collect(graph, [x])
    op = g.linear_ops()[0]
    w, b = g.array(op.weights), g.array(op.bias)
    trial = quantize_graph(g.to_bytes(), "float32", per_channel=False)
    report = correct(g, trial, {i: s.channel_mean for i, s in stats.items()})
    scale = np.abs(w).max() / 127  # the per-tensor symmetric grid, by hand
    wq = np.round(w / scale) * scale
    expected = b - (wq - w) @ x.mean(axis=0)
    assert report.layers == 1
    np.testing.assert_allclose(g.array(op.bias), expected, rtol=1e-5, atol=1e-7)
    assert np.abs(expected - b).max() > 1e-5  # the correction is not nothing

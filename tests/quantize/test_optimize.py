"""EQ, ADMM and AdaRound: on synthetic layers (the fast tier) the rounded weights stay on the grid and reconstruct
the output better than nearest rounding, EQ's scales give a cosine at least minmax's; on the tiny conv net
through the converter (8-bit) and ai-edge-quantizer (4-bit) the artifact's integers are exactly the ones chosen."""

from __future__ import annotations

import numpy as np
import pytest

from toolchain.quantize import optimize
from toolchain.quantize.graph import LinearOp


def synthetic(kind="FULLY_CONNECTED", bits=8, per_channel=True, seed=0, rows=512, d=24, c=16):
    """A linear layer with correlated inputs (as real activations are) and outlier weights in a few channels."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d))
    if kind == "DEPTHWISE_CONV_2D":
        x = np.maximum(rng.normal(size=(rows, 9, c)) + 0.3, 0)
        w = rng.normal(size=(9, c)) * np.linspace(0.2, 2.0, c)[None, :]
        shape = (1, 3, 3, c)
    else:
        x = np.maximum(rng.normal(size=(rows, d)) @ mix * 0.3 + 0.2, 0)
        w = rng.normal(size=(c, d)) * np.linspace(0.2, 2.0, c)[:, None]
        w[0, 0] = 8.0  # one large weight: per-tensor scales suffer
        shape = (c, d)
    op = LinearOp(0, kind, 0, 1, None, 2, "NONE", "SAME")
    return optimize.Layer(op, "layer", x, w, shape, bits, per_channel, (0.0, float(x.max())))


def on_grid(layer: optimize.Layer, w_hat: np.ndarray) -> np.ndarray:
    """The integers of ``w_hat`` on the layer's grid (the quantizer's scale of ``w_hat`` itself), checked."""
    s = layer.scale(w_hat)
    np.testing.assert_allclose(s, layer.scale(), rtol=1e-12)  # the largest |w| of each channel was kept
    q = layer.grid(w_hat, s)
    np.testing.assert_allclose(q, np.round(q), atol=1e-9)
    assert np.abs(np.round(q)).max() <= layer.levels
    return np.round(q)


@pytest.mark.parametrize("kind", ["FULLY_CONNECTED", "DEPTHWISE_CONV_2D"])
@pytest.mark.parametrize(("bits", "per_channel"), [(8, True), (4, True), (4, False)])
@pytest.mark.parametrize("method", ["adaround", "admm"])
def test_learnt_weights_stay_on_the_grid_and_reconstruct_better_than_nearest(method, bits, per_channel, kind):
    layer = synthetic(kind, bits, per_channel)
    xq = optimize.quant_input(layer.x, *layer.input_range)
    w_hat = getattr(optimize, method)(layer, xq)
    q = on_grid(layer, w_hat)
    before, after = optimize.error(layer, optimize.nearest(layer), xq), optimize.error(layer, w_hat, xq)
    assert after < before, (before, after)
    if method == "adaround":  # up or down from the weight itself: never further than one step
        assert np.abs(q - layer.grid(layer.w, layer.scale())).max() < 1 + 1e-9


@pytest.mark.parametrize("per_channel", [True, False])
def test_eq_scales_give_a_cosine_at_least_minmax_s(per_channel):
    layer = synthetic("FULLY_CONNECTED", 4, per_channel, seed=3)
    lo, hi = layer.input_range
    w, (alo, ahi) = optimize.easyquant(layer, lo, hi)
    y = layer.out(layer.w)
    minmax = optimize.cosine(y, layer.out(optimize.nearest(layer), optimize.quant_input(layer.x, lo, hi)))
    eq = optimize.cosine(y, layer.out(optimize.nearest(layer, w), optimize.quant_input(layer.x, alo, ahi)))
    assert eq >= minmax and 0.5 * (hi - lo) <= ahi - alo <= hi - lo
    assert np.all(np.abs(w) <= np.abs(layer.w) + 1e-12)  # clipped, never grown


@pytest.mark.tf
@pytest.mark.parametrize("method", ["adaround", "admm", "eq"])
@pytest.mark.parametrize("bits", [8, 4])
def test_the_artifact_holds_exactly_the_integers_chosen(method, bits, tiny_conv, monkeypatch):
    """Through the converter (8-bit) or ai-edge-quantizer (4-bit layers) the weights written on the grid come back
    as the same integers; each layer's report says its output error fell (or, for eq, its cosine rose)."""
    from ai_edge_litert import schema_py_generated as fb

    from toolchain.quantize.calibrate import calibrate, quantize
    from toolchain.quantize.graph import Graph

    rng = np.random.default_rng(0)
    xs = [rng.uniform(0, 1, (48, 8, 8, 1)).astype(np.float32)]
    graph, stats, _ = calibrate(tiny_conv, xs, False)
    g = Graph(graph)
    names = {g.name(op.output): op for op in g.linear_ops()}
    kinds = {g.name(op.weights): op.kind for op in g.linear_ops()}
    int4 = {n: "channelwise" for n, op in names.items() if op.kind == "CONV_2D"} if bits == 4 else {}
    written = {}
    real_run = optimize.run

    def spy(graph_, *a, **kw):
        out = real_run(graph_, *a, **kw)
        written.update({graph_.name(op.weights): graph_.array(op.weights) for op in graph_.linear_ops()})
        return out

    monkeypatch.setattr(optimize, "run", spy)
    opts = {"method": "eq", "rounding": "nearest"} if method == "eq" else {"method": "minmax", "rounding": method}
    blob, report = quantize(
        graph, stats, percentile=99.99, symmetric=False, bias_correction=False, io_type="int8", per_channel=True,
        batch=None, int4_nodes=int4, xs=xs, **opts,
    )  # fmt: skip
    rows = report["optimization"]["layers"]
    assert {r["layer"] for r in rows} == set(names)
    for r in rows:
        if method == "eq":
            assert r["cosine_after"] >= r["cosine_before"] - 1e-12
        else:
            assert r["error_after"] <= r["error_before"]
    m = fb.ModelT.InitFromObj(fb.Model.GetRootAs(blob, 0))
    sg = m.subgraphs[0]
    checked = 0
    for t in sg.tensors:
        name = t.name.decode()
        if name not in written or t.quantization is None or t.quantization.scale is None:
            continue
        data = np.asarray(m.buffers[t.buffer].data, dtype=np.uint8)
        if t.type == fb.TensorType.INT4:
            lo, hi = (data & 0x0F).astype(np.int8), (data >> 4).astype(np.int8)
            q = np.stack([lo, hi], axis=1).reshape(-1)[: int(np.prod(t.shape))]
            q = np.where(q > 7, q - 16, q)
        else:
            q = data.view(np.int8)
        q = q.reshape(t.shape).astype(np.float64)
        scale = np.asarray(t.quantization.scale, dtype=np.float64)
        axis = t.quantization.quantizedDimension
        shape = [1] * q.ndim
        shape[axis] = -1
        w = written[name].astype(np.float64)
        np.testing.assert_allclose(w / scale.reshape(shape), q, atol=2e-3, err_msg=name)  # the same integers
        four = bits == 4 and kinds[name] == "CONV_2D"
        assert (t.type == fb.TensorType.INT4) == four, (name, t.type)
        checked += 1
    assert checked == len(names)

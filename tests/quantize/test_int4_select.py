"""``quantize.int4_select``: 4-bit weights only where the measurement says they cost little (real quantizer, real
LiteRT, a float graph written without TensorFlow)."""

import numpy as np
import pytest

from toolchain.checks.litert import LiteRT
from toolchain.checks.metrics import parity, top1
from toolchain.quantize.int4_select import select
from toolchain.tflite_model import GraphBuilder

pytestmark = pytest.mark.tf


def scored(xs):
    """The stage's ``run`` and ``score`` on these inputs."""
    return (lambda blob: LiteRT(blob).predict(xs)[0]), (lambda ref, out, y: (top1(out, y), parity(ref, out)["snr_db"]))


def two_dense() -> tuple[bytes, dict, np.ndarray, np.ndarray]:
    """x[16] -> dense 'smooth' (Gaussian weights: 4 bits fit them) -> dense 'spiky' (each row one weight 40x the
    rest, on a small input: a 4-bit grid sized by it rounds the weights that carry the signal to 0) -> logits[10];
    float ranges, inputs, labels."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.3, (16, 16)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (10, 16)).astype(np.float32)
    w1[0] /= 40  # hidden unit 0 is small; every row of w2 reads it with a weight 40x the others
    w2[:, 0] = 12.0
    g = GraphBuilder()
    x = g.tensor([1, 16], "float32", name="x")
    h = g.tensor([1, 16], "float32", name="smooth")
    y = g.tensor([1, 10], "float32", name="spiky")
    g.op("FULLY_CONNECTED", [x, g.tensor([16, 16], "float32", data=w1, name="w1"), -1], [h])
    g.op("FULLY_CONNECTED", [h, g.tensor([10, 16], "float32", data=w2, name="w2"), -1], [y])
    xs = rng.normal(0, 1, (2000, 16)).astype(np.float32)
    top2 = np.sort(xs @ w1.T @ w2.T, axis=1)[:, -2:]
    xs = xs[np.argsort(top2[:, 0] - top2[:, 1])[:200]]  # the 200 with the clearest top-1: labels noise cannot flip
    hs = xs @ w1.T
    ys = hs @ w2.T
    ranges = {n: (float(a.min()), float(a.max())) for n, a in (("x", xs), ("smooth", hs), ("spiky", ys))}
    return g.to_bytes([x], [y], signature="serving_default"), ranges, xs, np.argmax(ys, axis=1)


def test_the_insensitive_layer_gets_4_bit_weights_and_the_sensitive_one_keeps_8():
    from toolchain.quantize.mixed import quantize_mixed

    graph, ranges, xs, labels = two_dense()
    built = []

    def build(four):
        built.append(dict(four or {}))
        return quantize_mixed(graph, ranges, [], [], "float32", True, four)

    candidates = {"smooth": "channelwise", "spiky": "channelwise"}
    chosen, report = select(build, *scored([xs]), candidates, labels, max_drop=1.0)
    rows = {r["op"]: r for r in report["candidates"]}
    assert [r["op"] for r in report["candidates"]] == ["smooth", "spiky"]  # least sensitive first
    assert rows["smooth"]["snr_db"] > rows["spiky"]["snr_db"] + 3
    assert all(r["saved_bytes"] > 0 for r in rows.values())  # 4 bits are smaller alone
    assert chosen == {"smooth": "channelwise"} and rows["smooth"]["chosen"] and not rows["spiky"]["chosen"]
    assert 100 * (report["int8_top1"] - rows["spiky"]["top1_with"]) > 1.0  # what keeping it 8-bit saved
    assert report["bytes"] == len(build(chosen)) < report["int8_bytes"]
    assert built[0] == {} and len(built) == 1 + 2 + 2 + 1  # all-int8, each alone, each added, the check above
    # the output's SNR against all-int8 is the second condition: above any layer's, none is kept
    none, report = select(
        build, *scored([xs]), candidates, labels, max_drop=100, min_snr_db=rows["smooth"]["snr_db"] + 1
    )
    assert none == {} and report["bytes"] == report["int8_bytes"] and report["snr_db"] is None


def test_without_labels_the_all_int8_artifacts_top1_stands_in():
    from toolchain.quantize.mixed import quantize_mixed

    graph, ranges, xs, _ = two_dense()
    build = lambda four: quantize_mixed(graph, ranges, [], [], "float32", True, four)  # noqa: E731
    chosen, report = select(build, *scored([xs]), {"smooth": "channelwise", "spiky": "channelwise"}, None, max_drop=0.0)
    assert report["int8_top1"] == 1.0 and report["against"] == "the all-int8 artifact's top-1"
    assert chosen == {"smooth": "channelwise"}  # a zero budget: it changes no sample's top-1, spiky does
    assert all(r["top1_with"] == 1.0 for r in report["candidates"] if r["chosen"])

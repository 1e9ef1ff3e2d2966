"""The per-op MCU cost model: its arithmetic on a real artifact, the profile's fitted coefficients against the
published measurements they were fitted to, and the band every estimate carries."""

import csv
from pathlib import Path

import numpy as np
import pytest

from toolchain.checks.mcu_cost import cycles, features, kind_of
from toolchain.checks.tflm import _estimate
from toolchain.config import load_target
from toolchain.config.target import McuCost
from toolchain.tflite_model import TFLiteModel

ANCHORS = Path(__file__).resolve().parents[3] / "shared" / "anchors" / "mlperf-tiny"


@pytest.mark.tf
def test_cycles_are_the_sum_over_ops_of_the_profile_coefficients(tiny_conv_int8):
    m = TFLiteModel.from_file(tiny_conv_int8)
    cost = McuCost(
        kernels="CMSIS-NN",
        family="test",
        measurements=0,
        kinds={
            "conv": {"mac": 2.0, "element": 1.0, "op": 100.0},
            "fully_connected": {"mac": 3.0},
            "copy": {"element": 0.5, "op": 10.0},
            "softmax": {"op": 1000.0},
        },
    )
    macs = m.macs()
    expect = 0.0
    for op in m.ops:
        moved = sum(
            int(np.prod(m.tensors[i].shape))
            for i in [*op.inputs, *op.outputs]
            if i >= 0 and not m.tensors[i].is_constant
        )
        c = cost.kinds.get(kind_of(op.name))
        if c is not None:
            expect += c.mac * macs.get(op.index, 0) + c.element * moved + c.op
    total, per = cycles(m, cost)
    assert total == pytest.approx(expect) and total > 0
    assert set(per) <= {"conv", "fully_connected", "copy", "softmax"} and per["conv"] > 2.0 * macs[0]
    f = features(m)
    assert f["conv"]["macs"] == sum(v for i, v in macs.items() if m.ops[i].name == "CONV_2D")


@pytest.mark.tf
def test_an_estimate_carries_its_band_and_source(tiny_conv_int8):
    m = TFLiteModel.from_file(tiny_conv_int8)
    m4, m7 = load_target("cortex-m4"), load_target("cortex-m7")
    latency, details = _estimate(m, m4)
    c = m4.mcu.cost
    assert latency.error_pct == c.error_pct and f"against {c.measurements} published measurements" in latency.source
    assert latency.ms == pytest.approx(cycles(m, c)[0] / (m4.clock_mhz * 1e3))
    assert details["ms_by_kind"] and sum(details["ms_by_kind"].values()) == pytest.approx(latency.ms)
    if m7.mcu.cost is None:  # no published measurement for the family: said so, no band
        latency, _ = _estimate(m, m7)
        assert latency.error_pct is None and "uncalibrated" in latency.source


@pytest.mark.skipif(not (ANCHORS / "published.csv").exists(), reason="needs ../shared/anchors/mlperf-tiny")
def test_the_profile_reproduces_the_published_measurements_it_was_fitted_to():
    """cortex-m4's coefficients (family m4-m33), run at each published system's clock, land within the fit's
    stated leave-one-model-out bound of each published latency."""
    cost = load_target("cortex-m4").mcu.cost
    with open(ANCHORS / "published.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 4
    for r in rows:
        total, _ = cycles(TFLiteModel.from_file(ANCHORS / r["model_file"]), cost)
        ms = total / (float(r["clock_mhz"]) * 1e3)
        error = abs(ms / float(r["latency_ms"]) - 1) * 100
        assert error <= cost.max_error_pct, (r["benchmark"], ms, r["latency_ms"])

"""toolchain/stages/gates.py on hand-made metrics: each gate by task, the boundary, NaN, memory budgets."""

from __future__ import annotations

import math

import pytest

from toolchain.config.recipe import Acceptance
from toolchain.record import Memory, Metrics
from toolchain.stages import gates

NONE = dict(max_accuracy_drop=None)  # Acceptance's default drop gate (1 point) switched off


def classified(top1=0.90, ref=0.91, agreement=0.97, cosine=0.995, snr=30.0):
    return Metrics(
        top1=top1, reference_top1=ref, top1_agreement=agreement, cosine=cosine, snr_db=snr, rmse=0, samples=100
    )


def checks(acceptance, m, size=1024):
    return [f.check for f in gates.check(acceptance, m, size)]


def test_default_acceptance_is_one_point_of_top1():
    assert checks(Acceptance(), classified(top1=0.900, ref=0.909)) == []
    failed = gates.check(Acceptance(), classified(top1=0.90, ref=0.92), 1024)
    assert [(f.kind, f.check) for f in failed] == [("gate", "max_accuracy_drop")]
    assert failed[0].message == ("max_accuracy_drop: top-1 fell 2.00 points (92.00 % -> 90.00 %), allowed at most 1.0")


def test_a_drop_exactly_at_the_limit_passes():
    assert checks(Acceptance(max_accuracy_drop=1.0), classified(top1=0.90, ref=0.91)) == []  # 1.0 points (float)
    assert checks(Acceptance(max_accuracy_drop=0.99), classified(top1=0.90, ref=0.91)) == ["max_accuracy_drop"]


def test_an_accuracy_gain_passes_the_drop_gate():
    assert checks(Acceptance(max_accuracy_drop=0.0), classified(top1=0.95, ref=0.91)) == []


@pytest.mark.parametrize(
    ("gate", "value", "limit", "fails"),
    [
        ("min_top1_agreement", dict(agreement=0.95), 0.96, True),
        ("min_top1_agreement", dict(agreement=0.96), 0.96, False),
        ("min_cosine", dict(cosine=0.98), 0.99, True),
        ("min_cosine", dict(cosine=0.999), 0.99, False),
        ("min_snr_db", dict(snr=19.5), 20.0, True),
        ("min_snr_db", dict(snr=20.0), 20.0, False),
    ],
)
def test_at_least_gates(gate, value, limit, fails):
    got = gates.check(Acceptance(**NONE, **{gate: limit}), classified(**value), 1024)
    assert [f.check for f in got] == ([gate] if fails else [])
    if fails:
        assert "needs at least" in got[0].message and str(limit) in got[0].message


def test_size_gate_in_kb():
    assert checks(Acceptance(**NONE, max_size_kb=2.0), None, 2048) == []
    failed = gates.check(Acceptance(**NONE, max_size_kb=2.0), None, 2049)
    assert [f.message for f in failed] == ["max_size_kb: artifact is 2.0 KB, allowed at most 2.0"]


def test_without_metrics_only_the_size_gate_applies():
    """No metrics: the runtime could not run the artifact (already a failure of its own)."""
    acceptance = Acceptance(max_accuracy_drop=0.0, min_cosine=1.0, min_snr_db=100, max_size_kb=1)
    assert checks(acceptance, None, 4096) == ["max_size_kb"]


def test_a_gate_whose_value_is_missing_is_skipped():
    no_reference = Metrics(top1=0.5, samples=10)  # no float reference: no drop, no parity
    assert checks(Acceptance(max_accuracy_drop=0.0, min_cosine=0.99, min_top1_agreement=0.9), no_reference) == []


def test_nan_fails_every_gate_it_reaches():
    m = Metrics(top1=0.9, reference_top1=0.9, top1_agreement=1.0, cosine=math.nan, snr_db=math.nan, samples=10)
    assert checks(Acceptance(min_cosine=0.5, min_snr_db=0.0), m) == ["min_cosine", "min_snr_db"]


def test_regression_uses_max_metric_drop_on_mae_lower_is_better():
    worse = Metrics(task="regression", mae=0.30, reference_mae=0.25, samples=10)
    better = Metrics(task="regression", mae=0.20, reference_mae=0.25, samples=10)
    failed = gates.check(Acceptance(max_metric_drop=0.04), worse, 10)
    assert [f.check for f in failed] == ["max_metric_drop"]
    assert failed[0].message.startswith("max_metric_drop: mae 0.3 vs the reference's 0.25, allowed at most 0.04")
    assert checks(Acceptance(max_metric_drop=0.04), better, 10) == []
    assert checks(Acceptance(max_accuracy_drop=0.0), worse, 10) == []  # a classification gate: not applied


def test_anomaly_auc_higher_is_better():
    m = Metrics(task="anomaly", auc=0.80, reference_auc=0.90, samples=10)
    assert checks(Acceptance(**NONE, max_metric_drop=0.05), m) == ["max_metric_drop"]
    assert checks(Acceptance(**NONE, max_metric_drop=0.11), m) == []


def test_several_failed_gates_come_in_a_fixed_order():
    m = classified(top1=0.5, ref=0.9, agreement=0.5, cosine=0.5, snr=1.0)
    acceptance = Acceptance(
        max_accuracy_drop=1, min_top1_agreement=0.9, max_metric_drop=0.01, min_cosine=0.9, min_snr_db=10, max_size_kb=1
    )
    assert checks(acceptance, m, 4096) == [
        "max_accuracy_drop",
        "min_top1_agreement",
        "max_metric_drop",
        "min_cosine",
        "min_snr_db",
        "max_size_kb",
    ]


@pytest.mark.parametrize(
    ("memory", "budget", "messages"),
    [
        (Memory(ram_bytes=1024, flash_bytes=2048), {"ram_bytes": 1024, "flash_bytes": 2048}, []),
        (
            Memory(ram_bytes=1025 * 1024, flash_bytes=3 * 1024 * 1024),
            {"ram_bytes": 1024 * 1024, "flash_bytes": 2 * 1024 * 1024},
            [
                "does not fit m: needs 1025 KB RAM, has 1024 KB",
                "does not fit m: needs 3072 KB flash, has 2048 KB",
            ],
        ),
        (Memory(ram_bytes=None, flash_bytes=10**9), {"ram_bytes": 1, "flash_bytes": None}, []),
        (
            Memory(flash_bytes=4096),
            {"ram_bytes": 1024, "flash_bytes": 1024},
            ["does not fit m: needs 4 KB flash, has 1 KB"],
        ),
    ],
    ids=["exactly-fits", "both-over", "unknown-or-unbounded", "flash-only"],
)
def test_fit_budgets(memory, budget, messages):
    failures = gates.fit("m", memory, budget)
    assert [f.message for f in failures] == messages
    assert {(f.kind, f.check) for f in failures} <= {("fit", "fit")}


def test_language_model_gates_perplexity_rise_in_percent_and_next_token_agreement():
    m = Metrics(task="language_model", samples=9, perplexity=10.6, reference_perplexity=10.0, top1_agreement=0.94)
    failed = gates.check(Acceptance(max_perplexity_increase=5.0, min_top1_agreement=0.95), m, 10)
    assert [f.check for f in failed] == ["min_top1_agreement", "max_perplexity_increase"]
    assert "perplexity rose 6.00 % (10.0000 -> 10.6000)" in failed[1].message
    ok = m.model_copy(update={"perplexity": 10.4, "top1_agreement": 0.96})
    assert gates.check(Acceptance(max_perplexity_increase=5.0, min_top1_agreement=0.95), ok, 10) == []
    nan = m.model_copy(update={"perplexity": float("nan")})
    assert [f.check for f in gates.check(Acceptance(max_perplexity_increase=5.0), nan, 10)] == [
        "max_perplexity_increase"
    ]

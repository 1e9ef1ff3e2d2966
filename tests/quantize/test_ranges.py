"""Each range method against an expectation worked out by hand (no TensorFlow: statistics built from arrays)."""

import numpy as np
import pytest

from toolchain.quantize import ranges
from toolchain.quantize.stats import BINS, TensorStats


def stats_of(values, batch: int = 16) -> TensorStats:
    v = np.asarray(values, dtype=np.float64)
    a = max(abs(v.min()), abs(v.max()))
    parts = [v[k : k + batch] for k in range(0, len(v), batch)]
    return TensorStats(
        "t",
        float(v.min()),
        float(v.max()),
        np.array([p.min() for p in parts]),
        np.array([p.max() for p in parts]),
        np.zeros(1),
        np.zeros(1),
        np.histogram(v, bins=BINS, range=(-a, a))[0],
    )


RNG = np.random.default_rng(0)
UNIFORM = RNG.uniform(-1, 1, 100_000)
NORMAL = RNG.normal(size=100_000)


def test_minmax_is_the_absolute_range():
    assert ranges.compute(stats_of([-3.0, 0.5, 7.0]), "minmax") == (-3.0, 7.0)


def test_minmax_range_always_holds_zero():
    assert ranges.compute(stats_of([2.0, 5.0]), "minmax") == (0.0, 5.0)


def test_mean_minmax_averages_the_batches():
    # two batches of 16: mins -1 and -3, maxes 2 and 4
    first = np.r_[-1.0, 2.0, np.zeros(14)]
    second = np.r_[-3.0, 4.0, np.zeros(14)]
    assert ranges.compute(stats_of(np.r_[first, second]), "mean_minmax") == pytest.approx((-2.0, 3.0))


def test_percentile_of_a_uniform_distribution():
    # U(-1, 1): the 90th percentile is 0.8, the 10th -0.8 (to a bin width, 2/4096, and sampling)
    lo, hi = ranges.compute(stats_of(UNIFORM), "percentile", percentile=90)
    assert lo == pytest.approx(-0.8, abs=0.01) and hi == pytest.approx(0.8, abs=0.01)


def test_kl_keeps_a_distribution_without_tails():
    lo, hi = ranges.compute(stats_of(UNIFORM), "kl")
    assert lo == pytest.approx(-1, abs=0.01) and hi == pytest.approx(1, abs=0.01)


def test_kl_clips_a_far_outlier_near_the_first_candidate():
    # 10,000 values in [0, 1] and one at 100: the histogram's bins are 100/2048 wide, the bulk fills the first 21
    # and the smallest candidate threshold is 256 bins (the grid's levels for a non-negative tensor): 12.5. Every
    # candidate clips the outlier alike; only how the levels split the bulk's bins differs between the first few.
    lo, hi = ranges.compute(stats_of(np.r_[RNG.uniform(0, 1, 10_000), 100.0]), "kl")
    assert lo == 0.0 and 12.5 <= hi <= 13.5


def test_kl_of_a_gaussian_is_a_few_sigma():
    lo, hi = ranges.compute(stats_of(NORMAL), "kl")
    assert 3.0 < hi < 5.0 and lo == pytest.approx(-hi, rel=0.05)


def test_mse_matches_a_brute_force_search_on_the_raw_values():
    values = np.r_[NORMAL, 40.0]  # one outlier: clipping it costs its whole squared distance, so it is mostly kept
    lo, hi = ranges.compute(stats_of(values), "mse")

    def error(f):
        a, b = values.min() * f, values.max() * f
        scale = (b - a) / 255
        zero = np.round(-a / scale)
        q = (np.clip(np.round(values / scale) + zero, 0, 255) - zero) * scale
        return np.sum((values - q) ** 2)

    factors = np.linspace(1.0, 0.02, 100)
    best = factors[np.argmin([error(f) for f in factors])]
    assert hi == pytest.approx(values.max() * best, rel=0.03)
    assert hi < values.max()


def test_mse_of_a_gaussian_is_near_the_analytical_optimum():
    # Banner et al. (ACIQ): the MSE-optimal 8-bit clipping of a Gaussian is about 3.9 sigma
    lo, hi = ranges.compute(stats_of(NORMAL), "mse")
    assert 3.5 < hi < 4.3 and -4.3 < lo < -3.5


def test_symmetric_gives_zero_point_zero_after_nudging():
    lo, hi = ranges.symmetric(-0.5, 2.0)
    scale = (hi - lo) / 255
    assert round(-128 - lo / scale) == 0 and scale == pytest.approx(2.0 / 127)


def test_clipped_share_and_utilisation():
    s = stats_of(UNIFORM)
    assert ranges.clipped_share(s, -1, 1) == 0.0
    assert ranges.clipped_share(s, -0.5, 0.5) == pytest.approx(0.5, abs=0.01)
    relu = stats_of(np.abs(UNIFORM))
    assert ranges.utilisation(relu, *ranges.symmetric(0.0, 1.0)) == pytest.approx(127 / 255, abs=0.01)


def relu6_with_a_wall(share: float = 0.10) -> np.ndarray:
    """ReLU6 of a wide Gaussian: ``share`` of the values saturated at exactly 6 (the wall), the rest spread below."""
    body = np.clip(RNG.normal(1.0, 1.5, 100_000), 0, None)
    body = body[body < 6][: int(100_000 * (1 - share))]
    return np.r_[body, np.full(100_000 - len(body), 6.0)]


def test_kl_keeps_a_relu6_saturation_wall():
    """10 % of the mass at 6: TensorRT-style KL (tail folded into the last bin) clips it far below; the spike rule
    keeps 6 on the grid."""
    v = relu6_with_a_wall()
    assert abs(np.mean(v == 6.0) - 0.10) < 0.01
    lo, hi = ranges.compute(stats_of(v), "kl")
    assert lo == 0.0 and hi == pytest.approx(6.0)
    assert ranges.clipped_share(stats_of(v), lo, hi) == 0.0


def test_the_guard_falls_back_to_minmax_when_a_range_clips_too_much():
    rng = np.random.default_rng(4)  # a draw where the threshold falls inside the tail (for some it keeps it all)
    s = stats_of(np.r_[rng.uniform(0, 1, 9_500), rng.uniform(1, 100, 500)])  # 5 % of the values in a far tail
    kl = ranges.compute(s, "kl")
    assert 0.001 < ranges.clipped_share(s, *kl) < 0.01  # the entropy threshold gives up part of the tail
    lo, hi, fell = ranges.guarded(s, "kl", 99.99, max_clipped=0.001)
    assert fell and (lo, hi) == ranges.compute(s, "minmax")
    assert ranges.guarded(s, "kl", 99.99, max_clipped=0.01) == (*kl, False)  # within the default: kept
    assert ranges.guarded(s, "kl", 99.99, max_clipped=None) == (*kl, False)
    # a percentile clips the share it names (85: 15 % of the values) and is not guarded for that
    assert ranges.guarded(s, "percentile", 85.0, max_clipped=0.01)[2] is False
    assert ranges.guarded(s, "minmax", 85.0, 0.0)[2] is False  # minmax clips nothing: never guarded

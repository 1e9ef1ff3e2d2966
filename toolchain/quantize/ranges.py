"""Range methods: from a tensor's statistics to the ``[lo, hi]`` the quantizer maps onto the int8 grid.

| method        | range                                                                                     |
|---------------|-------------------------------------------------------------------------------------------|
| `minmax`      | the absolute min/max over all calibration samples (what the converter does by itself)     |
| `mean_minmax` | the min and max of each batch of 16 samples, averaged                                     |
| `percentile`  | the `percentile` and `100 - percentile` quantiles of all values                           |
| `kl`          | the clipping threshold whose quantized histogram is closest in KL divergence (TensorRT),  |
|               | never below a spike of mass (a ReLU6's saturated 6, a sigmoid's 1: a wall, not a tail)    |
| `mse`         | the clipping range with the least expected squared quantization error                     |

``guarded`` falls back to ``minmax`` for a tensor whose ``kl``, ``percentile`` or ``mse`` range would clip more
than a set share of its calibration values (an entropy threshold on a distribution it was not made for).

``symmetric`` widens the result to ``[-a * 128/127, a]`` with ``a = max(|lo|, |hi|)``: the converter's
nudging then gives zero point 0 and scale ``a / 127``.
"""

from __future__ import annotations

import numpy as np

from toolchain.quantize.stats import BINS, TensorStats

METHODS = ("minmax", "mean_minmax", "percentile", "kl", "mse")
LEVELS = 256  # int8
#: a histogram bin holding this share of a tensor's values is a spike (a saturation wall), not a tail: KL keeps it
#: (a smooth distribution over 2,048 bins puts under 0.1 % in any bin)
SPIKE = 0.005
CLIPPING_METHODS = ("percentile", "kl", "mse")


def guarded(s: TensorStats, method: str, percentile: float, max_clipped: float | None) -> tuple[float, float, bool]:
    """``compute``'s range, or minmax's when the method's range clips more than ``max_clipped`` of the values
    (None: no guard; a percentile may clip the share it names, both tails: 99 clips 2 %); the flag says it fell
    back."""
    lo, hi = compute(s, method, percentile)
    if max_clipped is not None and method == "percentile":
        max_clipped = max(max_clipped, 2 * (1 - percentile / 100) * 1.05)
    if max_clipped is not None and method in CLIPPING_METHODS and clipped_share(s, lo, hi) > max_clipped:
        lo, hi = compute(s, "minmax")
        return lo, hi, True
    return lo, hi, False


def compute(s: TensorStats, method: str, percentile: float = 99.99) -> tuple[float, float]:
    if method == "minmax":
        lo, hi = s.min, s.max
    elif method == "mean_minmax":
        lo, hi = float(np.mean(s.batch_min)), float(np.mean(s.batch_max))
    elif method == "percentile":
        lo, hi = _quantile(s, 1 - percentile / 100), _quantile(s, percentile / 100)
    elif method == "kl":
        t = _kl_threshold(s)
        lo, hi = max(s.min, -t), min(s.max, t)
    elif method == "mse":
        lo, hi = _mse_range(s)
    else:
        raise ValueError(method)
    lo, hi = min(lo, 0.0), max(hi, 0.0)  # zero is always on the grid
    if hi - lo <= 0:
        lo, hi = s.min if s.min < 0 else 0.0, s.max if s.max > 0 else 0.0
    return float(lo), float(hi)


def symmetric(lo: float, hi: float) -> tuple[float, float]:
    a = max(abs(lo), abs(hi))
    return -a * 128 / 127, a


def clipped_share(s: TensorStats, lo: float, hi: float) -> float:
    """The share of calibration values outside ``[lo, hi]`` (0 when the range holds min and max; otherwise from
    the histogram, a bin cut by the range counted in proportion)."""
    total = s.hist.sum()
    if not total or (lo <= s.min and hi >= s.max):
        return 0.0
    lo, hi = (-np.inf if lo <= s.min else lo), (np.inf if hi >= s.max else hi)  # a side that holds all values
    e = s.edges
    inside = np.clip(np.minimum(e[1:], hi) - np.maximum(e[:-1], lo), 0, None) / (e[1:] - e[:-1])
    return float(np.sum(s.hist * (1 - inside)) / total)


def utilisation(s: TensorStats, lo: float, hi: float) -> float:
    """The share of the grid ``[lo, hi]`` the calibration values span (a ReLU output in a symmetric range: ~0.5)."""
    span = min(hi, s.max) - max(lo, s.min)
    return float(max(span, 0.0) / (hi - lo)) if hi > lo else 0.0


def _quantile(s: TensorStats, q: float) -> float:
    cdf = np.cumsum(s.hist) / max(s.hist.sum(), 1)
    edges = s.edges
    k = int(np.searchsorted(cdf, q))
    if k >= BINS:
        return float(edges[-1])
    below = cdf[k - 1] if k else 0.0
    frac = (q - below) / max(cdf[k] - below, 1e-12)
    return float(edges[k] + frac * (edges[k + 1] - edges[k]))


def _kl_threshold(s: TensorStats, stride: int = 8) -> float:
    """Entropy calibration (TensorRT; MXNet's and pytorch-quantization's open implementations) on the histogram
    of |x|: the threshold T minimising KL(P || Q), P the histogram up to T with the tail added to its last bin, Q
    the histogram up to T merged into the grid's levels and spread back over P's non-empty bins; both smoothed by
    1e-4. The first bin takes its neighbour's count, as pytorch-quantization does."""
    half = BINS // 2
    folded = s.hist[half:].astype(np.float64) + s.hist[:half][::-1]
    folded[0] = folded[1]  # a ReLU's zeros would pull the threshold down (as NVIDIA's pytorch-quantization does)
    width = s.absmax / half if s.absmax else 1.0
    levels = LEVELS if s.min >= 0 else LEVELS // 2  # non-negative tensors use the whole grid on one side
    best, best_kl = half, np.inf
    for i in range(levels, half + 1, stride):
        p = folded[:i].copy()
        p[-1] += folded[i:].sum()
        level = np.arange(i) * levels // i  # bin -> grid level
        used = p > 0
        sums = np.bincount(level, weights=folded[:i], minlength=levels)
        counts = np.bincount(level, weights=used, minlength=levels)
        q = np.where(used, sums[level] / np.maximum(counts[level], 1), 0.0)
        if not q.any():
            continue
        p, q = _smooth(p), _smooth(q)
        pn, qn = p / p.sum(), q / q.sum()
        kl = float(np.sum(pn * np.log(pn / qn)))
        if kl < best_kl:
            best, best_kl = i, kl
    spikes = np.flatnonzero(folded >= SPIKE * max(folded.sum(), 1))
    if spikes.size:  # a saturation wall: the divergence over P with the tail in its last bin cannot see it
        best = max(best, int(spikes[-1]) + 1)
    return float(best * width)


def _smooth(h: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Give empty bins ``eps``, taken evenly from the others (so the divergence stays finite)."""
    zero = h == 0
    nonzero = int((~zero).sum())
    return h + eps * zero - (eps * zero.sum() / nonzero) * ~zero if nonzero else h


def _mse_range(s: TensorStats, candidates: int = 100) -> tuple[float, float]:
    """Shrink ``[min, max]`` by one factor; keep the factor with the least squared error on the histogram."""
    centres = (s.edges[:-1] + s.edges[1:]) / 2
    counts = s.hist.astype(np.float64)
    keep = counts > 0
    x, w = centres[keep], counts[keep]
    lo0, hi0 = min(s.min, 0.0), max(s.max, 0.0)
    best, best_err = (lo0, hi0), np.inf
    for f in np.linspace(1.0, 0.02, candidates):
        lo, hi = lo0 * f, hi0 * f
        scale = (hi - lo) / (LEVELS - 1)
        if scale <= 0:
            continue
        zero = np.round(-lo / scale)
        q = (np.clip(np.round(x / scale) + zero, 0, LEVELS - 1) - zero) * scale
        err = float(np.sum(w * (x - q) ** 2))
        if err < best_err:
            best, best_err = (lo, hi), err
    return best

"""Calibration data against training data, per model input, before anything is calibrated.

A calibration sample is *outlying* when any of its values lies beyond the training data's 0.01 %-99.99 % range by
more than half that range (a 50x too-bright frame from a glitching sensor; not the slightly wider extremes a split of
the same data has). When outlying samples exist and they widen the input's range (the span the int8 input scale is
set from) by more than ``WIDER`` times the training data's, the input is reported: its ranges, the samples
responsible (the first indices and how many) and the effect on the input's scale.
"""

from __future__ import annotations

import numpy as np

QUANTILES = (0.0001, 0.9999)
MARGIN = 0.5  # beyond the training range by this share of it: outlying
WIDER = 1.5  # the calibration range this many times the training one: the input's scale is set by the outliers
SHOWN = 5  # sample indices named


def training_range(x: np.ndarray, cap: int = 2_000_000) -> tuple[float, float]:
    """The 0.01 %-99.99 % range of ``x``'s values."""
    flat = x.reshape(-1)
    if flat.size > cap:  # the quantiles of a strided subset: enough for a 0.01 % tail
        flat = flat[:: flat.size // cap + 1]
    lo, hi = np.quantile(flat.astype(np.float64), QUANTILES)
    return float(lo), float(hi)


def drift(train: list[np.ndarray], calib: list[np.ndarray], names: list[str]) -> list[dict]:
    """One report per input whose calibration range is set by outlying samples (empty: the data agree)."""
    found = []
    for name, t, c in zip(names, train, calib, strict=True):
        if not len(t) or not len(c) or not np.issubdtype(c.dtype, np.floating):
            continue  # nothing to compare against, or integer tokens (a language model's)
        lo, hi = training_range(t)
        span = max(hi - lo, 1e-12)
        per = c.reshape(len(c), -1)
        smin, smax = per.min(axis=1), per.max(axis=1)
        out = np.flatnonzero((smax > hi + MARGIN * span) | (smin < lo - MARGIN * span))
        c_lo, c_hi = float(min(smin.min(), 0.0 if lo >= 0 else smin.min())), float(smax.max())
        ratio = (max(c_hi, hi) - min(c_lo, lo)) / span
        if out.size and ratio > WIDER:
            found.append(
                {
                    "input": name,
                    "training_range": [lo, hi],
                    "calibration_range": [float(smin.min()), c_hi],
                    "outlying_samples": int(out.size),
                    "outlying_share": float(out.size / len(c)),
                    "first_samples": [int(i) for i in out[:SHOWN]],
                    "scale_ratio": float(ratio),
                    "_outlying": out,  # all of them (not recorded): to drop them
                }
            )
    return found


def describe(d: dict) -> str:
    """One line: which input, how many samples, what they do to its int8 scale."""
    first = ", ".join(map(str, d["first_samples"])) + (
        ", ..." if d["outlying_samples"] > len(d["first_samples"]) else ""
    )
    return (
        f"input {d['input']!r}: {d['outlying_samples']} calibration samples ({100 * d['outlying_share']:.1f} %; "
        f"indices {first}) lie far outside the training data's range [{d['training_range'][0]:.4g}, "
        f"{d['training_range'][1]:.4g}] (calibration: [{d['calibration_range'][0]:.4g}, "
        f"{d['calibration_range'][1]:.4g}]); they would set the input's int8 scale {d['scale_ratio']:.1f}x the "
        "training data's"
    )

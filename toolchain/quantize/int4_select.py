"""INT4 where it is insensitive: which candidate conv / dense ops get 4-bit weights, chosen by measurement.

Each candidate alone with 4-bit weights (every other op int8, the same activation ranges) gives its bytes saved
and the SNR of the model's output against the all-int8 artifact's, on the calibration split. Then, least
sensitive first, each is added to the 4-bit set while the top-1 on the calibration split stays within
``max_drop`` points of all-int8's; one that breaks the budget keeps 8-bit weights and the next is tried. Every
decision is reported with its measured cost. Two conditions keep a layer: the calibration top-1 (a coarse signal:
one sample is 0.5 points of 180, and a greedy pass over dozens of layers can fit it) and the SNR of the whole
model's output against all-int8's (``min_snr_db``: the noise the 4-bit weights add, summed over the layers kept;
continuous, so it does not fit a few samples). Runs in LiteRT (the phone's runtime; tflite-micro's 4-bit kernels
agree with it to 30 dB, ``int4_ops.yaml``): the target's own check measures the artifact chosen.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)


def select(
    build: Callable[[dict[str, str]], bytes],
    run: Callable[[bytes], np.ndarray],
    score: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[float, float]],
    candidates: dict[str, str],
    y: np.ndarray | None,
    max_drop: float,
    min_snr_db: float = 0.0,
) -> tuple[dict[str, str], dict]:
    """``build({node: granularity})`` -> artifact, ``run(artifact)`` -> its first output on the calibration split,
    ``score(reference, outputs, y)`` -> (top-1, SNR dB); returns the chosen {node: granularity} and the report. ``y``:
    the calibration labels; None (a calibration set without labels): the all-int8 artifact's own top-1 stands in,
    so the drop is the share of samples whose top-1 the 4-bit weights change."""
    base = build({})
    ref = run(base)
    labels = "labels" if y is not None else "the all-int8 artifact's top-1"
    y = y if y is not None else np.argmax(ref, axis=-1)
    base_top1 = score(ref, ref, y)[0]
    rows = []
    for i, (node, granularity) in enumerate(candidates.items(), 1):
        blob = build({node: granularity})
        snr = score(ref, run(blob), y)[1]
        rows.append({"op": node, "saved_bytes": len(base) - len(blob), "snr_db": snr})
        log.info(
            "int4 select: %d/%d %s alone: %.1f dB, %+d bytes", i, len(candidates), node, snr, len(blob) - len(base)
        )
    rows.sort(key=lambda r: -r["snr_db"] if math.isfinite(r["snr_db"]) else math.inf)  # NaN: most sensitive
    chosen: dict[str, str] = {}
    size, top, snr = len(base), base_top1, math.inf
    for r in rows:
        trial = chosen | {r["op"]: candidates[r["op"]]}
        blob = build(trial)
        out = run(blob)
        t1, snr_with = score(ref, out, y)
        drop = 100 * (base_top1 - t1)
        r |= {"top1_with": t1, "snr_with_db": snr_with, "chosen": bool(drop <= max_drop and snr_with >= min_snr_db)}
        if r["chosen"]:  # NaN: not chosen
            chosen, size, top, snr = trial, len(blob), t1, snr_with
    log.info(
        "int4 select: %d of %d ops with 4-bit weights, %d -> %d bytes, calibration top-1 %.2f -> %.2f %%",
        len(chosen),
        len(candidates),
        len(base),
        size,
        100 * base_top1,
        100 * top,
    )
    report = {
        "max_drop": max_drop,
        "min_snr_db": min_snr_db,
        "snr_db": snr if math.isfinite(snr) else None,
        "samples": len(y),
        "against": labels,
        "int8_top1": base_top1,
        "top1": top,
        "int8_bytes": len(base),
        "bytes": size,
        "candidates": rows,
    }
    return chosen, report

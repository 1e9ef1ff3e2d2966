"""int8 for a decoder language model exported with prefill and decode signatures (``models.decoder``).

The toolchain's own calibration traces one graph; a two-signature model is calibrated by ai-edge-quantizer's
calibrator over both signatures at once, ``prefill`` on calibration windows, ``decode`` on the steps of the same
windows run in float (the cache each step reads is the one float prefill and decode wrote), with the toolchain's
``minmax`` rule: each tensor's range is the absolute min/max over every sample. (The calibrator's own default is a
moving average of each sample's min/max, 0.95 per step: it keeps the last ~20 samples' range, and decode steps at
the other positions clip. Measured on ``recipes/charlm.yaml``: next-token agreement 0.76 with it.) The KV-cache tensors
then get one range across both signatures and both directions (``align_quant_stats``): the int8 cache prefill
writes is the one decode reads, and decode's output cache is its input's, byte for byte, with no requantization
between steps.
"""

from __future__ import annotations

import logging

import numpy as np

from toolchain.errors import ConversionError
from toolchain.models.decoder import cache_of, signatures

log = logging.getLogger(__name__)


def calibration_samples(float_blob: bytes, windows: np.ndarray) -> dict[str, list[dict]]:
    """{signature: [inputs]}: each window whole for prefill; its second half step by step for decode, after a
    prefill of its first half."""
    from ai_edge_litert.interpreter import Interpreter

    prefill, decode = signatures(Interpreter(model_content=float_blob))
    names = list(cache_of(decode))
    context = windows.shape[1]
    half = context // 2
    pre, dec = [], []
    for w in windows.astype(np.int32):
        pre.append({"tokens": w[None]})
        out = prefill(tokens=np.r_[w[:half], np.zeros(context - half, np.int32)][None])
        cache = {n: out[n] for n in names}
        for p in range(half, context):
            step = {"token": w[p : p + 1][None], "pos": np.array([p], np.int32), **cache}
            dec.append(step)
            out = decode(**step)
            cache = {n: out[n] for n in names}
    return {"prefill": pre, "decode": dec}


def _absolute(qsv: dict, new: dict) -> dict:
    """The range over every sample so far: min of the minima, max of the maxima."""
    if not qsv:
        return new
    return {"min": np.minimum(qsv["min"], new["min"]), "max": np.maximum(qsv["max"], new["max"])}


def quantize_decoder(float_blob: bytes, windows: np.ndarray, int16_ops: tuple[str, ...] = ()) -> tuple[bytes, dict]:
    """The int8 artifact (int8 weights, activations and cache; int32 tokens) and what the report says of it;
    ``int16_ops``: op types given 16-bit activations (8-bit weights)."""
    from ai_edge_quantizer import calibrator, qtyping, quantizer, recipe
    from ai_edge_quantizer.utils.calibration_utils import CalibrationQsvAlignmentUtils

    samples = calibration_samples(float_blob, windows)
    names = sorted({n for step in samples["decode"][:1] for n in step} - {"token", "pos"})  # the cache tensors
    q = quantizer.Quantizer(float_blob, recipe.static_wi8_ai8())
    for op in int16_ops:
        q.add_static_config(".*", getattr(qtyping.TFLOperationName, op), 16, 8)
    try:
        calib = calibrator.Calibrator(float_blob, num_threads=1, qsv_update_func=_absolute)
        calib.calibrate(samples, q._recipe_manager)  # noqa: SLF001 (what Quantizer.calibrate does, with our rule)
        qsv = calib.get_model_qsvs()
        align = CalibrationQsvAlignmentUtils(float_blob)
        ranges = {n: align.align_quant_stats(qsv, {"prefill": [n], "decode": [n]}) for n in names}
        blob = bytes(q.quantize(qsv).quantized_model)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise ConversionError(f"decoder int8: ai-edge-quantizer refused the model: {exc}") from exc
    report = {
        "method": "minmax (absolute, both signatures; ai-edge-quantizer's calibrator)",
        "windows": len(windows),
        "decode_steps": len(samples["decode"]),
        "int16_ops": list(int16_ops),
        "cache_ranges": {n: [float(np.min(lo)), float(np.max(hi))] for n, (lo, hi) in ranges.items()},
    }
    return blob, report

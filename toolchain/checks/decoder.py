"""A decoder language model on LiteRT, the way an app runs it: ``prefill`` on a prompt, then ``decode`` token by
token, the KV cache handed from each call to the next (``models.decoder``). Its KV-cache bytes are read from the
artifact's cache tensors; ``max_context`` is the longest context whose cache fits the target's RAM."""

from __future__ import annotations

import time

import numpy as np

from toolchain.checks.litert import dequantize
from toolchain.errors import RuntimeValidationError
from toolchain.models.decoder import cache_inputs, cache_of, signatures


def kv_cache(blob: bytes) -> dict:
    """The cache the decode signature carries: per tensor its shape and bytes; the total; bytes per token of
    context (the cache's context axis is axis 2: (1, heads, context, head width))."""
    tensors = {
        n: {"shape": [int(s) for s in d["shape"]], "bytes": int(np.prod(d["shape"])) * np.dtype(d["dtype"]).itemsize}
        for n, d in sorted(cache_inputs(blob).items())
    }
    total = sum(t["bytes"] for t in tensors.values())
    context = next(iter(tensors.values()))["shape"][2]
    return {"tensors": tensors, "bytes": total, "context": context, "bytes_per_token": total // context}


def max_context(cache: dict, ram_bytes: float | None, model_bytes: int) -> int | None:
    """The longest context (tokens) whose cache fits the RAM beside the model's weights (None: no RAM budget).
    The model itself reads at most ``cache["context"]`` tokens (its positions): the report says both."""
    if ram_bytes is None:
        return None
    return max(0, int(ram_bytes - model_bytes) // cache["bytes_per_token"])


def run(blob: bytes, windows: np.ndarray, threads: int = 1) -> tuple[np.ndarray, dict]:
    """Logits (windows, context, vocab) for every position of each window: the first half from one prefill, the
    rest from decode steps; and the median time of a prefill and of a decode step (ms)."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        prefill, decode = signatures(Interpreter(model_content=blob, num_threads=threads))
    except (ValueError, RuntimeError) as exc:
        raise RuntimeValidationError(f"LiteRT cannot load the decoder: {exc}") from None
    names = sorted(cache_of(decode))
    po, do = prefill.get_output_details()["logits"], decode.get_output_details()["logits"]
    context = windows.shape[1]
    half = context // 2
    logits, t_pre, t_dec = [], [], []
    try:
        for w in windows.astype(np.int32):
            t0 = time.perf_counter()
            out = prefill(tokens=np.r_[w[:half], np.zeros(context - half, np.int32)][None])
            t_pre.append(time.perf_counter() - t0)
            rows = list(dequantize(out["logits"][0, :half], *po["quantization"]))
            cache = {n: out[n] for n in names}
            for p in range(half, context):
                t0 = time.perf_counter()
                out = decode(token=w[p : p + 1][None], pos=np.array([p], np.int32), **cache)
                t_dec.append(time.perf_counter() - t0)
                cache = {n: out[n] for n in names}
                rows.append(dequantize(out["logits"][0], *do["quantization"]))
            logits.append(np.stack(rows))
    except (ValueError, RuntimeError) as exc:
        raise RuntimeValidationError(f"LiteRT failed to run the decoder: {exc}") from None
    timing = {
        "prefill_ms": 1e3 * float(np.median(t_pre)),
        "decode_ms": 1e3 * float(np.median(t_dec)),
        "decode_p90_ms": 1e3 * float(np.percentile(t_dec, 90)),
    }
    return np.stack(logits), timing | {"decode_steps": len(t_dec), "prefill_tokens": half}

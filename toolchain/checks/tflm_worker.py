"""Runs the tflite-micro interpreter in its own process: it can abort or segfault.

    python -m toolchain.checks.tflm_worker probe    MODEL ARENA [N_INPUTS]
    python -m toolchain.checks.tflm_worker recorded MODEL ARENA     (allocation report on fd 2)
    python -m toolchain.checks.tflm_worker run      MODEL ARENA IN.npz OUT.npz N_OUTPUTS

``IN.npz`` holds ``in_0`` ... (one float array per model input, first axis the samples); ``OUT.npz`` gets
``out_0`` ... (dequantized).

Before each step it prints ``stage: <name>`` on stdout (flushed), so the parent knows where a crash happened.
Exit codes: 0 ok, 3 the interpreter refused (e.g. arena too small), negative: killed by a signal.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np


def _stage(name: str) -> None:
    print(f"stage: {name}", flush=True)


def _interpreter(model: bytes, arena: int):
    from tflite_micro.python.tflite_micro import runtime

    _stage("allocate")
    return runtime.Interpreter.from_bytes(model, arena_size=arena)


def _quantize(x: np.ndarray, details: dict) -> np.ndarray:
    dtype = details["dtype"]
    if not np.issubdtype(dtype, np.integer):
        return x.astype(dtype)
    q = details["quantization_parameters"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / q["scales"][0] + q["zero_points"][0]), info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, details: dict) -> np.ndarray:
    if not np.issubdtype(details["dtype"], np.integer):
        return y.astype(np.float32)
    q = details["quantization_parameters"]
    return (y.astype(np.float32) - q["zero_points"][0]) * q["scales"][0]


def main(argv: list[str]) -> int:
    cmd, model_path, arena = argv[0], argv[1], int(argv[2])
    model = Path(model_path).read_bytes()
    try:
        interp = _interpreter(model, arena)
        if cmd == "recorded":
            _stage("print_allocations")
            interp.print_allocations()
            return 0
        if cmd == "probe":
            _stage("invoke 0")
            for i in range(int(argv[3]) if len(argv) > 3 else 1):
                d = interp.get_input_details(i)
                interp.set_input(np.zeros(d["shape"], d["dtype"]), i)
            interp.invoke()
            return 0
        with np.load(argv[3]) as z:
            xs = [z[f"in_{i}"] for i in range(len(z.files))]
        n_out = int(argv[5])
        ins = [interp.get_input_details(i) for i in range(len(xs))]
        outs = [interp.get_output_details(k) for k in range(n_out)]
        results, times = [[] for _ in range(n_out)], []
        for j in range(len(xs[0])):
            _stage(f"invoke {j}")
            for i, x in enumerate(xs):
                interp.set_input(_quantize(x[j][None], ins[i]), i)
            t0 = time.perf_counter()
            interp.invoke()
            times.append(time.perf_counter() - t0)
            for k in range(n_out):
                results[k].append(_dequantize(interp.get_output(k), outs[k])[0])
        np.savez(argv[4], **{f"out_{k}": np.stack(r) for k, r in enumerate(results)})
        print(f"host_ms: {np.median(times) * 1e3:.4f}", flush=True)
        return 0
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", flush=True)
        return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

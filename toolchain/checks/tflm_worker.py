"""Runs the tflite-micro interpreter in its own process: it can abort or segfault.

    python -m toolchain.checks.tflm_worker probe    MODEL ARENA
    python -m toolchain.checks.tflm_worker recorded MODEL ARENA     (allocation report on fd 2)
    python -m toolchain.checks.tflm_worker run      MODEL ARENA IN.npy OUT.npy

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
        inp, out = interp.get_input_details(0), interp.get_output_details(0)
        if cmd == "probe":
            _stage("invoke 0")
            interp.set_input(np.zeros(inp["shape"], inp["dtype"]), 0)
            interp.invoke()
            return 0
        x = np.load(argv[3])
        outputs, times = [], []
        for i, sample in enumerate(x):
            _stage(f"invoke {i}")
            interp.set_input(_quantize(sample[None], inp), 0)
            t0 = time.perf_counter()
            interp.invoke()
            times.append(time.perf_counter() - t0)
            outputs.append(_dequantize(interp.get_output(0), out)[0])
        np.save(argv[4], np.stack(outputs))
        print(f"host_ms: {np.median(times) * 1e3:.4f}", flush=True)
        return 0
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", flush=True)
        return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

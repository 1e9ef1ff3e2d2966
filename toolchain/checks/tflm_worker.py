"""Runs the tflite-micro interpreter in its own process: it can abort or segfault.

    python -m toolchain.checks.tflm_worker probe    MODEL ARENA [N_INPUTS]
    python -m toolchain.checks.tflm_worker recorded MODEL ARENA     (allocation report on fd 2)
    python -m toolchain.checks.tflm_worker run      MODEL ARENA IN.npz OUT.npz N_OUTPUTS
    python -m toolchain.checks.tflm_worker serve    MODEL N_INPUTS   (arena probes: one per stdin line)

``serve`` imports tflite-micro and reads the model once, then answers each arena size on stdin with one JSON
line on stdout (``returncode``, ``stdout``, ``stderr`` of a ``probe``), each probe run in a forked child: a crash
still only kills that child, and no probe pays for a Python start and the imports.

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


PROBE_TIMEOUT_S = 600


def serve(model_path: str, n_inputs: int) -> int:
    import json
    import os
    import signal
    import tempfile

    from tflite_micro.python.tflite_micro import runtime  # noqa: F401 - imported once, before the forks

    model = Path(model_path).read_bytes()
    for line in sys.stdin:
        arena = int(line)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:  # the child: its own stdout/stderr, killed if it hangs
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                signal.alarm(PROBE_TIMEOUT_S)
                code = 3
                try:
                    code = _probe(model, arena, n_inputs)
                finally:
                    sys.stdout.flush()
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            reply = {"returncode": code, "stdout": out.read().decode(errors="replace")}
            reply["stderr"] = err.read().decode(errors="replace")[-20000:]
        print(json.dumps(reply), flush=True)
    return 0


def _probe(model: bytes, arena: int, n_inputs: int) -> int:
    try:
        interp = _interpreter(model, arena)
        _stage("invoke 0")
        for i in range(n_inputs):
            d = interp.get_input_details(i)
            interp.set_input(np.zeros(d["shape"], d["dtype"]), i)
        interp.invoke()
        return 0
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", flush=True)
        return 3


def main(argv: list[str]) -> int:
    if argv[0] == "serve":
        return serve(argv[1], int(argv[2]))
    cmd, model_path, arena = argv[0], argv[1], int(argv[2])
    model = Path(model_path).read_bytes()
    if cmd == "probe":
        return _probe(model, arena, int(argv[3]) if len(argv) > 3 else 1)
    try:
        interp = _interpreter(model, arena)
        if cmd == "recorded":
            _stage("print_allocations")
            interp.print_allocations()
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

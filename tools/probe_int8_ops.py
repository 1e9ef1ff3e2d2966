"""Which ops each runtime runs in int8, measured, written as data: the kernels a target's runtime lacks.

For every op kind a tiny model puts that one op between int8 layers and quantizes the whole model to int8 the
toolchain's way (its own calibration, I/O float32, batch 1). Then:

- litert, tflm: the artifact runs in the runtime (tflite-micro in a child process: it may abort) and its
  output stays within 20 dB SNR of the float model's; otherwise the runtime's own message is the reason;
- vela-ethos-u55 / vela-ethos-u85: Vela places the op on the NPU; otherwise Vela's reason (the op then runs on
  the Cortex-M beside the NPU, in tflite-micro).

Writes toolchain/checks/int8_ops.yaml; before a target's checks run, the build refuses an artifact with an op its
runtime is measured not to run (``checks.kernels``). Beside the 16-bit probe's ops it probes the ones transformers
bring (GELU, the LayerNorm chain's SQUARED_DIFFERENCE and RSQRT, EXP, DIV, ...).

    python -m tools.probe_int8_ops            # ~2 minutes on 2 cores
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from tools.probe_int16_ops import VELA_CONFIGS, build, first_line, litert_run, snr_db, write_table
from tools.probe_int16_ops import probes as probes16

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "toolchain" / "checks" / "int8_ops.yaml"


def probes():
    import keras
    import tensorflow as tf

    L = keras.layers

    def fn(f):
        return lambda t: L.Lambda(f, name="x")(t)

    extra = {
        "SQUARED_DIFFERENCE": ((16,), fn(lambda t: tf.math.squared_difference(t, tf.reduce_mean(t, -1, True)))),
        "RSQRT": ((16,), fn(lambda t: tf.math.rsqrt(tf.abs(t) + 1.0))),
        "EXP": ((16,), fn(lambda t: tf.exp(-tf.abs(t)))),
        "DIV": ((16,), fn(lambda t: t / (tf.abs(t) + 1.0))),
        "SQRT": ((16,), fn(lambda t: tf.sqrt(tf.abs(t)))),
        "LOG": ((16,), fn(lambda t: tf.math.log(tf.abs(t) + 1.0))),
        "POW": ((16,), fn(lambda t: tf.pow(tf.abs(t) + 1.0, 1.5))),
        "SUM": ((8, 8, 4), fn(lambda t: tf.reduce_sum(t, axis=[1, 2]))),
        "REDUCE_MAX": ((8, 8, 4), fn(lambda t: tf.reduce_max(t, axis=[1, 2]))),
        "HARD_SWISH": ((8, 8, 4), lambda t: L.Activation("hard_swish", name="x")(t)),
        "RELU6": ((8, 8, 4), lambda t: L.ReLU(6.0, name="x")(t)),
    }
    return {**probes16(), **extra}


def main() -> int:
    from toolchain.checks import tflm
    from toolchain.checks.vela import compile as vela_compile
    from toolchain.config.target import Vela
    from toolchain.fsutil import capture_fds
    from toolchain.quantize.calibrate import quantize

    results: dict[str, dict] = {r: {"ok": [], "refused": {}} for r in ("litert", "tflm", *VELA_CONFIGS)}
    snr: dict[str, dict] = {"litert": {}, "tflm": {}}
    with tempfile.TemporaryDirectory(prefix="int8-") as tmp:
        for op, (shape, add) in probes().items():
            with capture_fds(Path(tmp) / "tf.log"):
                model, xs, graph, st, nodes, kinds = build(op, shape, add)
            if op not in kinds:
                print(f"{op}: the probe made {sorted(kinds)}, skipped", file=sys.stderr)
                continue
            with capture_fds(Path(tmp) / "q.log"):
                blob, _ = quantize(
                    graph,
                    st,
                    method="minmax",
                    percentile=99.99,
                    symmetric=False,
                    bias_correction=False,
                    io_type="float32",
                    per_channel=True,
                    batch=1,
                )
            path = Path(tmp) / f"{op}.tflite"
            path.write_bytes(blob)
            ref = np.asarray(model(xs[:8]))
            for runtime in ("litert", "tflm"):
                try:
                    y = litert_run(blob, xs[:8]) if runtime == "litert" else tflm.run(path, 1 << 18, xs[:8])[0][0]
                    db = snr_db(ref, y.reshape(ref.shape))
                    snr[runtime][op] = round(float(db), 1)
                    if db >= 20:
                        results[runtime]["ok"].append(op)
                    else:
                        results[runtime]["refused"][op] = f"runs, but output SNR {db:.1f} dB against float"
                except Exception as exc:  # noqa: BLE001 - the runtime's refusal is the finding
                    results[runtime]["refused"][op] = first_line(exc)
            for key, (acc, system, memory) in VELA_CONFIGS.items():
                try:
                    npu = vela_compile(
                        path,
                        Vela(accelerator_config=acc, system_config=system, memory_mode=memory),
                        Path(tmp) / key / op,
                    )
                    off = [f for f in npu["cpu_fallbacks"] if f["op"] == op]
                    if off:
                        results[key]["refused"][op] = f"on the CPU: {off[0]['reason']}"
                    else:
                        results[key]["ok"].append(op)
                except Exception as exc:  # noqa: BLE001
                    results[key]["refused"][op] = first_line(exc)
            print(
                f"{op}: " + ", ".join(f"{k} {'ok' if op in r['ok'] else 'no'}" for k, r in results.items()),
                file=sys.stderr,
            )
    write_table(
        OUT,
        "tools/probe_int8_ops.py",
        "int8 activations and weights",
        "one op between int8 layers, the whole model int8 (the toolchain's calibration, batch 1); runs and stays "
        ">= 20 dB SNR against float (litert, tflm); placed on the NPU (vela)",
        {"runtimes": results, "snr_db": snr},
    )
    print(OUT.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

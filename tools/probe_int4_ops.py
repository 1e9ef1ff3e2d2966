"""Which ops each runtime runs with 4-bit weights (8-bit activations), measured, written as data.

For every weighted op kind and weight granularity (per output channel, per tensor), a tiny model puts that one
op between int8 layers and gives it 4-bit weights through the toolchain's mixed-precision path (ai-edge-quantizer:
TensorType INT4, two weights per byte). Then:

- litert: the artifact runs and its output is within 10 dB SNR of the float model's (a mis-read nibble order or
  scale gives noise, near 0 dB; 4-bit weights alone cost some 10-25 dB);
- tflm: it runs in tflite-micro (in a child process: it may abort) and agrees with LiteRT's output on the same
  artifact to 30 dB SNR;
- vela-ethos-u55 / vela-ethos-u85: Vela places the op on the NPU; otherwise Vela's reason.

Writes toolchain/quantize/int4_ops.yaml, which the target profiles name (``numerics.int4_ops``).

    python -m tools.probe_int4_ops            # ~1 minute on 2 cores
"""

from __future__ import annotations

import os
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

import numpy as np

from tools.probe_int16_ops import VELA_CONFIGS, build, first_line, litert_run, snr_db, write_table

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "toolchain" / "quantize" / "int4_ops.yaml"


def probes():
    import keras

    L = keras.layers
    return {
        "CONV_2D": ((8, 8, 8), lambda t: L.Conv2D(8, 3, padding="same", name="x")(t)),
        "DEPTHWISE_CONV_2D": ((8, 8, 8), lambda t: L.DepthwiseConv2D(3, padding="same", name="x")(t)),
        "FULLY_CONNECTED": ((32,), lambda t: L.Dense(16, name="x")(t)),
        "TRANSPOSE_CONV": ((8, 8, 8), lambda t: L.Conv2DTranspose(8, 3, strides=2, padding="same", name="x")(t)),
    }


def main() -> int:
    from toolchain.checks import tflm
    from toolchain.checks.vela import compile as vela_compile
    from toolchain.config.target import Vela
    from toolchain.fsutil import capture_fds
    from toolchain.quantize import ranges
    from toolchain.quantize.graph import Graph
    from toolchain.quantize.mixed import quantize_mixed

    runtimes = ("litert", "tflm", *VELA_CONFIGS)
    # per runtime and op: the granularities that work (per channel preferred), and the reasons of those that do not
    works: dict[str, dict[str, list[str]]] = {r: {} for r in runtimes}
    reasons: dict[str, dict[str, list[str]]] = {r: {} for r in runtimes}
    quantizer: dict[str, str] = {}
    snr: dict[str, dict] = {"litert": {}, "tflm": {}}
    with tempfile.TemporaryDirectory(prefix="int4-") as tmp:
        for op, (shape, add) in probes().items():
            with capture_fds(Path(tmp) / "tf.log"):
                model, xs, graph, st, nodes, kinds = build(op, shape, add)
            if kinds != {op}:
                print(f"{op}: the probe made {sorted(kinds)}, skipped", file=sys.stderr)
                continue
            g = Graph(graph)
            rng = {g.name(i): ranges.compute(st[i], "minmax", 99.99) for i in g.slots()}
            ref = np.asarray(model(xs[:8]))
            for gran in ("channelwise", "tensorwise"):
                key = f"{op} {gran}"
                with capture_fds(Path(tmp) / "aeq.log"):
                    try:
                        blob = quantize_mixed(graph, rng, [], [], "float32", True, dict.fromkeys(nodes, gran))
                    except Exception as exc:  # noqa: BLE001 - the quantizer's refusal is the finding
                        blob, why = None, first_line(exc)
                        if "without 4-bit" in why:
                            why = f"gives {op} no 4-bit weights with int8 activations"
                if blob is None:
                    quantizer[key] = f"ai-edge-quantizer {version('ai-edge-quantizer')}: {why}"
                    print(f"{key}: {why}", file=sys.stderr)
                    continue
                path = Path(tmp) / f"{op}-{gran}.tflite"
                path.write_bytes(blob)
                y_lite = None
                try:
                    y_lite = litert_run(blob, xs[:8]).reshape(ref.shape)
                    db = snr_db(ref, y_lite)
                    snr["litert"][key] = round(float(db), 1)
                    ok = db >= 10
                    why = None if ok else f"runs, but output SNR {db:.1f} dB against float"
                except Exception as exc:  # noqa: BLE001 - the runtime's refusal is the finding
                    ok, why = False, first_line(exc)
                (works if ok else reasons)["litert"].setdefault(op, []).append(gran if ok else f"{gran}: {why}")
                try:
                    y = tflm.run(path, 1 << 18, xs[:8])[0][0].reshape(ref.shape)
                    db = snr_db(y_lite, y) if y_lite is not None else snr_db(ref, y)
                    snr["tflm"][key] = round(float(db), 1)
                    ok = db >= 30 if y_lite is not None else db >= 10
                    why = None if ok else f"runs, but output SNR {db:.1f} dB against LiteRT on the same artifact"
                except Exception as exc:  # noqa: BLE001
                    ok, why = False, first_line(exc)
                (works if ok else reasons)["tflm"].setdefault(op, []).append(gran if ok else f"{gran}: {why}")
                for vkey, (acc, system, memory) in VELA_CONFIGS.items():
                    try:
                        npu = vela_compile(
                            path,
                            Vela(accelerator_config=acc, system_config=system, memory_mode=memory),
                            Path(tmp) / vkey / f"{op}-{gran}",
                        )
                        off = [f for f in npu["cpu_fallbacks"] if f["op"] == op]
                        ok, why = not off, (f"on the CPU: {off[0]['reason']}" if off else None)
                    except Exception as exc:  # noqa: BLE001
                        ok, why = False, first_line(exc).replace("; its output is in vela.log", "")
                    (works if ok else reasons)[vkey].setdefault(op, []).append(gran if ok else f"{gran}: {why}")
                print(
                    f"{key}: " + ", ".join(f"{r} {'ok' if gran in works[r].get(op, []) else 'no'}" for r in runtimes),
                    file=sys.stderr,
                )
    results = {
        r: {
            "ok": {op: grans[0] for op, grans in works[r].items()},
            "refused": {op: "; ".join(rs) for op, rs in reasons[r].items() if op not in works[r]},
        }
        for r in runtimes
    }
    for r in runtimes:  # an op the quantizer cannot make is refused everywhere, with its reason
        for key, why in quantizer.items():
            op = key.split()[0]
            if op not in results[r]["ok"] and op not in results[r]["refused"]:
                results[r]["refused"][op] = why
    _write(results, quantizer, snr)
    print(OUT.read_text())
    return 0


def _write(results: dict, quantizer: dict, snr: dict) -> None:
    write_table(
        OUT,
        "tools/probe_int4_ops.py",
        "4-bit weights",
        "one op with 4-bit weights (INT4, packed) and int8 activations between int8 layers; litert: runs within 10 "
        "dB SNR of float; tflm: runs and agrees with LiteRT to 30 dB; vela: placed on the NPU. ok names the weight "
        "granularity to use (channelwise preferred)",
        {"quantizer_refused": quantizer, "runtimes": results, "snr_db": snr},
    )


if __name__ == "__main__":
    sys.exit(main())

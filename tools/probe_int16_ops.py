"""Which ops each runtime runs with 16-bit activations (8-bit weights), measured, written as data.

For every op kind a tiny model puts that one op between int8 layers and gives it 16-bit activations (the
toolchain's mixed-precision path: ai-edge-quantizer, QUANTIZE int8<->int16 around the op). Then:

- litert, tflm: the artifact runs in the runtime (tflite-micro in a child process: it may abort) and its
  output stays within 20 dB SNR of the float model's; otherwise the runtime's own message is the reason;
- vela-ethos-u55 / vela-ethos-u85: Vela places the op on the NPU; otherwise Vela's reason.

Writes toolchain/quantize/int16_ops.yaml, which the target profiles name (``numerics.int16_ops``).

    python -m tools.probe_int16_ops            # ~2 minutes on 2 cores
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "toolchain" / "quantize" / "int16_ops.yaml"
VELA_CONFIGS = {
    "vela-ethos-u55": ("ethos-u55-128", "Ethos_U55_High_End_Embedded", "Shared_Sram"),
    "vela-ethos-u85": ("ethos-u85-256", "Ethos_U85_SYS_DRAM_Mid", "Dedicated_Sram_384KB"),
}


def probes():
    """{TFLite op: (input shape, function of a Keras tensor adding the op as layer 'x')}."""
    import keras

    L = keras.layers
    return {
        "CONV_2D": ((8, 8, 4), lambda t: L.Conv2D(4, 3, padding="same", name="x")(t)),
        "DEPTHWISE_CONV_2D": ((8, 8, 4), lambda t: L.DepthwiseConv2D(3, padding="same", name="x")(t)),
        "TRANSPOSE_CONV": ((8, 8, 4), lambda t: L.Conv2DTranspose(4, 3, strides=2, padding="same", name="x")(t)),
        "FULLY_CONNECTED": ((16,), lambda t: L.Dense(8, name="x")(t)),
        "ADD": ((8, 8, 4), lambda t: L.Add(name="x")([t, L.Conv2D(4, 1, name="b")(t)])),
        "MUL": ((8, 8, 4), lambda t: L.Multiply(name="x")([t, L.Conv2D(4, 1, name="b")(t)])),
        "AVERAGE_POOL_2D": ((8, 8, 4), lambda t: L.AveragePooling2D(2, name="x")(t)),
        "MAX_POOL_2D": ((8, 8, 4), lambda t: L.MaxPooling2D(2, name="x")(t)),
        "MEAN": ((8, 8, 4), lambda t: L.GlobalAveragePooling2D(name="x")(t)),
        "SOFTMAX": ((16,), lambda t: L.Softmax(name="x")(t)),
        "LOGISTIC": ((16,), lambda t: L.Activation("sigmoid", name="x")(t)),
        "TANH": ((16,), lambda t: L.Activation("tanh", name="x")(t)),
        "HARD_SWISH": ((8, 8, 4), lambda t: L.Activation("hard_swish", name="x")(t)),
        "SUB": ((8, 8, 4), lambda t: L.Subtract(name="x")([t, L.Conv2D(4, 1, name="b")(t)])),
        "MAXIMUM": ((8, 8, 4), lambda t: L.Maximum(name="x")([t, L.Conv2D(4, 1, name="b")(t)])),
        "LEAKY_RELU": ((8, 8, 4), lambda t: L.LeakyReLU(0.1, name="x")(t)),
        "GELU": ((16,), lambda t: L.Activation("gelu", name="x")(t)),
        "STRIDED_SLICE": ((8, 8, 4), lambda t: L.Cropping2D(1, name="x")(t)),
        "TRANSPOSE": ((8, 8, 4), lambda t: L.Permute((2, 1, 3), name="x")(t)),
        "BATCH_MATMUL": ((8, 8), lambda t: L.Dot(axes=(2, 2), name="x")([t, L.Dense(8, name="b")(t)])),
        "RESIZE_BILINEAR": ((8, 8, 4), lambda t: L.Resizing(16, 16, name="x")(t)),
        "CONCATENATION": ((8, 8, 4), lambda t: L.Concatenate(name="x")([t, L.Conv2D(4, 1, name="b")(t)])),
        "PAD": ((8, 8, 4), lambda t: L.ZeroPadding2D(1, name="x")(t)),
        "RESIZE_NEAREST_NEIGHBOR": ((8, 8, 4), lambda t: L.Resizing(16, 16, "nearest", name="x")(t)),
    }


def build(op: str, shape, add):
    """(model, graph, stats, node names of layer x, ops of layer x) for one probe."""
    import keras

    from toolchain.quantize.calibrate import calibrate
    from toolchain.quantize.diagnose import layer_of
    from toolchain.quantize.graph import Graph
    from toolchain.tflite_model import TFLiteModel

    keras.utils.set_random_seed(0)
    inp = keras.Input(shape)
    pre = (keras.layers.Conv2D(4, 1, name="pre") if len(shape) == 3 else keras.layers.Dense(shape[-1], name="pre"))(inp)
    x = add(pre)
    out = keras.layers.Dense(4, name="post")(keras.layers.Flatten(name="flat")(x) if len(x.shape) > 2 else x)
    model = keras.Model(inp, out)
    xs = np.random.default_rng(0).normal(size=(32, *shape)).astype(np.float32)
    graph, st, _ = calibrate(model, [xs], False, 1)
    g = Graph(graph)
    names = {layer.name for layer in model.layers}
    nodes = [g.name(int(o.outputs[0])) for o in g.sg.operators if layer_of(g.name(int(o.outputs[0])), names) == "x"]
    kinds = {op.name for op in TFLiteModel(graph).ops if op.outputs and g.name(op.outputs[0]) in nodes}
    return model, xs, graph, st, nodes, kinds


def snr_db(ref: np.ndarray, y: np.ndarray) -> float:
    noise = float(np.mean((ref - y) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.mean(ref**2)) / noise)


def main() -> int:
    from toolchain.checks import tflm
    from toolchain.checks.vela import compile as vela_compile
    from toolchain.config.target import Vela
    from toolchain.fsutil import capture_fds
    from toolchain.quantize import ranges
    from toolchain.quantize.graph import Graph
    from toolchain.quantize.mixed import quantize_mixed

    results: dict[str, dict] = {r: {"ok": [], "refused": {}} for r in ("litert", "tflm", *VELA_CONFIGS)}
    snr: dict[str, dict] = {"litert": {}, "tflm": {}}
    quantizer: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="int16-") as tmp:
        for op, (shape, add) in probes().items():
            with capture_fds(Path(tmp) / "tf.log"):
                model, xs, graph, st, nodes, kinds = build(op, shape, add)
            if kinds != {op}:
                print(f"{op}: the probe made {sorted(kinds)}, skipped", file=sys.stderr)
                continue
            g = Graph(graph)
            rng = {g.name(i): ranges.compute(st[i], "minmax", 99.99) for i in g.slots()}
            with capture_fds(Path(tmp) / "aeq.log"):
                try:
                    blob = quantize_mixed(graph, rng, nodes, [], "float32", True)
                except Exception as exc:  # noqa: BLE001 - the quantizer's refusal is the finding
                    blob, why = None, first_line(exc)
                    if "without 16-bit" in why:
                        why = f"ai-edge-quantizer {version('ai-edge-quantizer')} gives it no 16-bit activations"
            if blob is None:
                quantizer[op] = why
                print(f"{op}: {why}", file=sys.stderr)
                continue
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
    _write(results, quantizer, snr)
    print(OUT.read_text())
    return 0


def litert_run(blob: bytes, xs: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=blob)
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    out = []
    for x in xs:
        it.set_tensor(i["index"], x[None])
        it.invoke()
        out.append(it.get_tensor(o["index"]))
    return np.concatenate(out)


def first_line(exc: Exception) -> str:
    lines = [s.strip() for s in str(exc).splitlines() if s.strip()]
    return lines[0][:200] if lines else type(exc).__name__


def _write(results: dict, quantizer: dict, snr: dict) -> None:
    write_table(
        OUT,
        "tools/probe_int16_ops.py",
        "16-bit activations",
        "one op with 16-bit activations between int8 layers; runs and stays >= 20 dB SNR against float (litert, "
        "tflm); placed on the NPU (vela)",
        {"quantizer_refused": quantizer, "runtimes": results, "snr_db": snr},
    )


def write_table(out: Path, by: str, what: str, how: str, body: dict) -> None:
    """A measured op table (int16_ops.yaml, int4_ops.yaml): how and with what it was measured, then ``body``."""
    import yaml

    versions = {p: version(p) for p in ("ai-edge-litert", "tflite-micro", "ethos-u-vela", "ai-edge-quantizer")}
    measured = {
        "by": by,
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()} {platform.system()}",
        "versions": versions,
        "how": how,
    }
    head = f"# Generated by {by}: which ops each runtime runs with {what}.\n"
    out.write_text(head + yaml.safe_dump({"measured": measured, **body}, sort_keys=False, width=110))


if __name__ == "__main__":
    sys.exit(main())

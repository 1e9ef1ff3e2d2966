"""A cold and a warm `toolchain build recipes/mobilenet.yaml` against a hand-written script doing the same work.

The hand-written script (``handwritten`` below, what an engineer writes with the same libraries and no
toolchain) produces and checks the same artifacts: the digits resized to 96x96x3, MobileNetV2 alpha 0.35 trained
12 epochs (Adam 0.002, batch 32, BatchNorm momentum 0.9), three int8 conversions with 100 calibration samples
(phone: float I/O; MCU/NPU: int8 I/O, batch 1; Edge TPU: uint8 I/O, batch 1), LiteRT top-1 of each on the 359
eval samples, tflite-micro's minimum arena by bisection (a process per probe) and its top-1, and Vela for the
Ethos-U55-128. The toolchain's builds run as ``python -m toolchain build`` into a fresh folder (cold: no cache)
and again into the same folder (warm: every stage cached); the hand-written script runs in its own process
(``--handwritten-only``). All three run one after another, so they see the same machine; the ratios are the result.

    python -m benchmarks.build_vs_handwritten [--work /tmp/bench-build] [--runs 1]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import common

NAME = "build_vs_handwritten"
#: what one run measures, in order: (key, how)
CASES = (("cold", "toolchain build into a fresh folder"), ("warm", "the same again"), ("hand", "the script below"))
RECIPE = common.REPO / "recipes" / "mobilenet.yaml"
#: toolchain stage -> the hand-written script's step doing the same work
STEPS = {"data": "data", "model": "train", "convert": "convert", "validate": "validate"}


def toolchain_build(out: Path, cold: bool) -> dict:
    if cold:
        shutil.rmtree(out, ignore_errors=True)
    built = common.toolchain_build(RECIPE, out, accept=())
    top1 = {r["target"]: r["metrics"]["top1"] for r in built.record["results"]}
    return {"wall": built.wall_s, "stages": built.record["timings_s"], "top1": top1}


def handwritten(work: Path) -> dict:
    """The same artifacts and checks without the toolchain; returns its wall time and per-step seconds."""
    t_start = time.perf_counter()
    steps: dict[str, float] = {}

    def step(name, t0):
        steps[name] = round(steps.get(name, 0) + time.perf_counter() - t0, 3)

    t0 = time.perf_counter()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32)[..., None] / 16.0
    x = tf.image.resize(x, (96, 96)).numpy().repeat(3, axis=-1)
    x = (x - 0.5) / 0.5
    y = digits.target
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    n_train, n_cal = int(0.7 * len(y)), int(0.1 * len(y))
    tr, cal, ev = order[:n_train], order[n_train : n_train + n_cal], order[n_train + n_cal :]
    step("data", t0)

    t0 = time.perf_counter()
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    model.compile(optimizer=keras.optimizers.Adam(0.002), loss="sparse_categorical_crossentropy")
    model.fit(x[tr], y[tr], batch_size=32, epochs=12, verbose=0)
    reference = model.predict(x[ev], verbose=0).argmax(1)
    step("train", t0)

    def convert(io, batch):
        if batch:
            inp = keras.Input((96, 96, 3), batch_size=1)
            m = keras.Model(inp, model(inp))
        else:
            m = model
        c = tf.lite.TFLiteConverter.from_keras_model(m)
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = lambda: ([x[i : i + 1]] for i in cal[:100])
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io != "float32":
            c.inference_input_type = c.inference_output_type = getattr(tf, io)
        return c.convert()

    t0 = time.perf_counter()
    artifacts = {"phone": convert("float32", False), "mcu": convert("int8", True), "edgetpu": convert("uint8", True)}
    paths = {}
    for name, blob in artifacts.items():
        paths[name] = work / f"{name}.tflite"
        paths[name].write_bytes(blob)
    step("convert", t0)

    def litert_top1(blob):
        it = Interpreter(model_content=blob)
        it.allocate_tensors()
        i, o = it.get_input_details()[0], it.get_output_details()[0]
        scale, zero = i["quantization"]
        preds = []
        for k in ev:
            v = x[k : k + 1]
            if i["dtype"] != np.float32:
                info = np.iinfo(i["dtype"])
                v = np.clip(np.round(v / scale + zero), info.min, info.max).astype(i["dtype"])
            it.set_tensor(i["index"], v)
            it.invoke()
            preds.append(it.get_tensor(o["index"])[0].argmax())
        return float(np.mean(np.array(preds) == y[ev])), float(np.mean(np.array(preds) == reference))

    t0 = time.perf_counter()
    top1 = {name: litert_top1(blob)[0] for name, blob in artifacts.items()}

    # tflite-micro: minimum arena by bisection, each probe in a fresh process (it may crash), then top-1
    probe = (
        "import sys, numpy as np; from tflite_micro.python.tflite_micro import runtime\n"
        "m = runtime.Interpreter.from_bytes(open(sys.argv[1], 'rb').read(), arena_size=int(sys.argv[2]))\n"
        "d = m.get_input_details(0); m.set_input(np.zeros(d['shape'], d['dtype']), 0); m.invoke()\n"
    )

    def ok(arena):
        return (
            subprocess.run([sys.executable, "-c", probe, str(paths["mcu"]), str(arena)], capture_output=True).returncode
            == 0
        )

    hi = 1 << 14
    while not ok(hi):
        hi *= 2
    lo = 0
    while hi - lo > 16:
        mid = (lo + hi) // 2
        hi, lo = (mid, lo) if ok(mid) else (hi, mid)
    run = (
        "import sys, numpy as np; from tflite_micro.python.tflite_micro import runtime\n"
        "m = runtime.Interpreter.from_bytes(open(sys.argv[1], 'rb').read(), arena_size=int(sys.argv[2]))\n"
        "xs = np.load(sys.argv[3]); d = m.get_input_details(0); q = d['quantization_parameters']\n"
        "out = []\n"
        "for v in xs:\n"
        "    v = np.round(v[None] / q['scales'][0] + q['zero_points'][0])\n"
        "    m.set_input(np.clip(v, -128, 127).astype(np.int8), 0)\n"
        "    m.invoke(); out.append(m.get_output(0)[0].argmax())\n"
        "np.save(sys.argv[4], np.array(out))\n"
    )
    np.save(work / "x.npy", x[ev])
    subprocess.run(
        [sys.executable, "-c", run, str(paths["mcu"]), str(int(hi * 1.1)), str(work / "x.npy"), str(work / "y.npy")],
        check=True,
    )
    top1["tflm"] = float(np.mean(np.load(work / "y.npy") == y[ev]))

    # Vela for the Ethos-U55-128 (same system config as the toolchain's profile)
    import ethosu

    ini = Path(list(ethosu.__path__)[0]) / "config_files" / "Arm" / "vela.ini"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from ethosu.vela.vela import main; sys.exit(main())",
            str(paths["mcu"]),
            "--accelerator-config",
            "ethos-u55-128",
            "--config",
            str(ini),
            "--system-config",
            "Ethos_U55_High_End_Embedded",
            "--memory-mode",
            "Shared_Sram",
            "--output-dir",
            str(work / "vela"),
        ],
        check=True,
        capture_output=True,
    )
    step("validate", t0)
    return {"wall": time.perf_counter() - t_start, "stages": steps, "top1": top1, "arena": hi}


def run_handwritten(work: Path) -> dict:
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        cmd = [sys.executable, "-m", f"benchmarks.{NAME}", "--handwritten-only", tmp]
        proc = subprocess.run(cmd, cwd=common.REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            raise common.BenchmarkError(f"the hand-written script failed:\n{proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(f"benchmarks.{NAME}", __doc__)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench-build"))
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--handwritten-only", type=Path, metavar="FOLDER", help="run the hand-written script alone")
    args = ap.parse_args(argv)
    if args.handwritten_only:
        print(json.dumps(handwritten(args.handwritten_only)))
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    out = args.work / "toolchain"
    measure = {
        "cold": lambda: toolchain_build(out, cold=True),
        "warm": lambda: toolchain_build(out, cold=False),
        "hand": lambda: run_handwritten(args.work),
    }
    runs = common.interleave({key: measure[key] for key, _ in CASES}, args.runs)
    rows = [{key: runs[key][i] for key, _ in CASES} for i in range(args.runs)]
    trained = {
        "toolchain": [r["cold"]["stages"]["model"] for r in rows],
        "hand": [r["hand"]["stages"]["train"] for r in rows],
    }
    data = {
        "runs": rows,
        "training_range_s": {k: [round(min(v)), round(max(v))] for k, v in trained.items()},
        "top1": {
            "toolchain": [
                min(min(r["cold"]["top1"].values()) for r in rows),
                max(max(r["cold"]["top1"].values()) for r in rows),
            ],
            "hand": statistics.median(r["hand"]["top1"]["phone"] for r in rows),
        },
        "arena_probes": None,
    }
    common.write_result(NAME, data, args.results, argv)
    print(values({"data": data})["table"])
    return 0


def values(result: dict) -> dict[str, str]:
    d = result["data"]
    rows = d["runs"]
    ratios = [(r["cold"]["wall"] / r["hand"]["wall"], r["warm"]["wall"] / r["hand"]["wall"]) for r in rows]
    tab = common.table(
        ["run", "toolchain cold (s)", "warm (s)", "hand-written (s)", "cold / hand", "warm / hand"],
        [
            [
                i + 1,
                f"{r['cold']['wall']:.1f}",
                f"{r['warm']['wall']:.2f}",
                f"{r['hand']['wall']:.1f}",
                f"{c:.2f}",
                f"{w:.4f}",
            ]
            for i, (r, (c, w)) in enumerate(zip(rows, ratios, strict=True))
        ],
    )
    first = rows[0]
    names = {"data": "data", "model": "training", "convert": "conversion", "validate": "validation"}
    steps = ", ".join(
        f"{names[ours]} {first['cold']['stages'][ours]:.1f} / {first['hand']['stages'][theirs]:.1f} s"
        for ours, theirs in STEPS.items()
    )
    worst_cold, worst_warm = max(c for c, _ in ratios), max(w for _, w in ratios)
    met = sum(c <= 1.0 and w <= 0.05 for c, w in ratios)
    n = len(rows)
    acceptance = (
        f"met in all {n} runs" if met == n else f"met in {met} of {n} runs"
    ) + f"** (worst {worst_cold:.2f}x and {worst_warm:.4f}x)"
    t, h = d["training_range_s"]["toolchain"], d["training_range_s"]["hand"]
    a = d.get("arena_probes")
    arena = (
        f"Arena probes alone (the mobilenet cortex-m7 artifact, {a['probes']} probes, same bisection): "
        f"{a['forks_s']:.1f} s in forks of one worker against {a['process_per_probe_s']:.1f} s with a new process "
        "per probe."
        if a
        else ""
    )
    lo, hi = d["top1"]["toolchain"]
    return {
        "table": tab,
        "steps": steps,
        "acceptance": acceptance,
        "training": f"{t[0]}–{t[1]} s where `model.fit` takes {h[0]}–{h[1]} s",
        "top1_hand": f"{d['top1']['hand']:.3f}",
        "top1_toolchain": f"{lo:.3f}–{hi:.3f}",
        "arena": arena,
        "runs": str(n),
    }


def metrics(result: dict) -> dict[str, float]:
    rows = result["data"]["runs"]
    return {
        "cold_over_hand_worst": round(max(r["cold"]["wall"] / r["hand"]["wall"] for r in rows), 2),
        "warm_over_hand_worst": round(max(r["warm"]["wall"] / r["hand"]["wall"] for r in rows), 4),
    }


if __name__ == "__main__":
    sys.exit(main())

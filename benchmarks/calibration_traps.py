"""Calibration traps: a calibration set with a few glitched (50x too bright) images, and KL on ReLU6 outputs.

    python -m benchmarks.calibration_traps [--out /tmp/traps]

A MobileNet (v1) alpha 0.25 at 32x32 trained in the recipe on the digits (80 % train, 20 % eval), calibrated on a
separate ``data.calibration`` set: 200 other digits at 32x32 (pixels in [0, 1], normalized by the recipe like the
training data), of which 6 (3 %) are 50x too bright, as field data with sensor glitches is. One folder, so the
trained model is one cache entry; per plan a build for cortex-m7 (tflite-micro) and phone-cpu (LiteRT): minmax on
the clean set (the same 200 without the glitches), then on the glitched set minmax, percentile 99.99, mse, kl with
the clipping guard (the default), kl without it, minmax with ``data.calibration.drop_outliers``, minmax with
``quantize.input_range: training``, and ``mode: auto`` with a 1.0-point budget. Every number is read from the
builds' ``build.json``: top-1 on each target's runtime, the input's int8 scale, the tensors the guard kept at
minmax, the drift report. Writes benchmarks/results/calibration_traps.json.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import yaml

from benchmarks import common
from toolchain.errors import GateFailure

NAME = "calibration_traps"
TARGETS = ["cortex-m7", "phone-cpu"]
#: plan -> (calibration file, quantize fields, calibration fields, acceptance)
CASES = {
    "minmax, clean set": ("clean.npz", {}, {}, {}),
    "minmax": ("glitched.npz", {}, {}, {}),
    "percentile 99.99": ("glitched.npz", {"calibration": "percentile"}, {}, {}),
    "mse": ("glitched.npz", {"calibration": "mse"}, {}, {}),
    "kl (guarded)": ("glitched.npz", {"calibration": "kl"}, {}, {}),
    "kl, no guard": ("glitched.npz", {"calibration": "kl", "max_clipped": None}, {}, {}),
    "minmax, drop_outliers": ("glitched.npz", {}, {"drop_outliers": True}, {}),
    "minmax, input_range: training": ("glitched.npz", {"input_range": "training"}, {}, {}),
    "mode: auto, 1.0 point": ("glitched.npz", {"mode": "auto"}, {}, {"max_accuracy_drop": 1.0}),
}
BRIGHT = 50.0
GLITCHED = 6  # of 200


def recipe(name: str, calibration: str, quantize: dict, cal: dict, acceptance: dict) -> dict:
    return {
        "schema_version": 1,
        "name": name,
        "model": {"application": "MobileNet", "alpha": 0.25, "input_shape": [32, 32, 3], "classes": 10},
        "data": {
            "builtin": "digits",
            "normalization": {"mean": 0.5, "std": 0.5},
            "split": {"train": 0.8, "calibration": 0.0001, "eval": 0.1999, "seed": 0},
            "calibration": {"npz": calibration, **cal},
        },
        "train": {"epochs": 15, "batch_size": 32, "learning_rate": 0.002, "seed": 0},
        "quantize": {"mode": "int8", "calibration_samples": 200, **quantize},
        "targets": TARGETS,
        "acceptance": {"max_accuracy_drop": 100, **acceptance},
    }


def calibration_sets(folder: Path) -> list[int]:
    """clean.npz and glitched.npz (200 digits at 32x32x3, pixels in [0, 1]); the glitched samples' indices."""
    from sklearn.datasets import load_digits

    from toolchain.config.recipe import DataSpec
    from toolchain.data.datasets import load_dataset

    spec = DataSpec(
        builtin="digits",
        normalization={"mean": 0.0, "std": 1.0},
        split={"train": 0.7, "calibration": 0.15, "eval": 0.15},
    )
    d = load_dataset(spec, (32, 32, 3))
    x = d.xs_calib[0][:200]
    assert len(x) == 200 and len(load_digits().images) == 1797
    np.savez(folder / "clean.npz", x=x)
    bright = np.sort(np.random.default_rng(0).choice(200, GLITCHED, replace=False))
    g = x.copy()
    g[bright] *= BRIGHT
    np.savez(folder / "glitched.npz", x=g)
    return bright.tolist()


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(f"benchmarks.{NAME}", __doc__)
    ap.add_argument("--out", type=Path, default=Path("/tmp/traps"))
    args = ap.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    bright = calibration_sets(args.out)
    rows = []
    for i, (plan, (cal_file, quantize, cal, acceptance)) in enumerate(CASES.items()):
        path = args.out / f"traps-{i}.yaml"
        path.write_text(yaml.safe_dump(recipe(f"traps-{i}", cal_file, quantize, cal, acceptance), sort_keys=False))
        built = common.toolchain_build(path, args.out / "build", accept=(GateFailure,))
        for r in built.record["results"]:
            q = r["quantization"] or {}
            rows.append(
                {
                    "plan": plan,
                    "target": r["target"],
                    "mode": r["mode"],
                    "reference_top1": r["metrics"]["reference_top1"],
                    "top1": r["metrics"]["top1"],
                    "passed": r["passed"],
                    "input_scale": (q.get("inputs") or [{}])[0].get("scale"),
                    "guarded": len(q.get("guarded", [])),
                    "drift": q.get("calibration_drift", []),
                    "samples": q.get("samples"),
                    "chosen": next((p["plan"] for p in (r.get("plan_search") or []) if p["passed"]), None),
                    "rungs": len(r.get("plan_search") or []),
                }
            )
    data = {"eval_samples": built.record["eval_samples"], "bright": bright, "rows": rows}
    common.write_result(NAME, data, args.results, argv)
    print(values({"data": data})["table"])
    return 0


def values(result: dict) -> dict[str, str]:
    d = result["data"]
    rows = [
        [
            r["plan"],
            r["target"],
            f"{100 * r['reference_top1']:.2f}",
            f"{100 * r['top1']:.2f}",
            f"{100 * (r['reference_top1'] - r['top1']):.2f}",
            f"{r['input_scale']:.4g}" if r["input_scale"] else "-",
            str(r["guarded"]),
            (r["chosen"] or "none passed") + f" ({r['rungs']} rungs)" if r["rungs"] else "",
        ]
        for r in d["rows"]
    ]
    header = ["plan", "target", "float top-1 %", "int8 top-1 %", "drop", "input scale", "guarded", "auto chose"]
    drift = next((r["drift"][0] for r in d["rows"] if r["drift"]), None)
    return {
        "table": common.table(header, rows),
        "eval_samples": str(d["eval_samples"]),
        "bright": ", ".join(map(str, d["bright"])),
        "drift": "none"
        if drift is None
        else (
            f"input `{drift['input']}`: {drift['outlying_samples']} samples, first {drift['first_samples']}, "
            f"the input's scale {drift['scale_ratio']:.1f}x the training data's"
        ),
        "sample": f"{100 / d['eval_samples']:.2f}",
    }


def metrics(result: dict) -> dict[str, float]:
    return {
        f"{r['plan'].replace(' ', '_').replace(',', '').replace(':', '')}.{r['target']}.drop_points": round(
            100 * (r["reference_top1"] - r["top1"]), 2
        )
        for r in result["data"]["rows"]
    }


if __name__ == "__main__":
    sys.exit(main())

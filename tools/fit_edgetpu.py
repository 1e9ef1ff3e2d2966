"""Fit the Edge TPU latency estimate to Coral's published benchmark table, and report its error.

The architectures of the table that Keras applications can build (tools/edgetpu_models.py: random weights,
int8, uint8 I/O; the shapes decide the time) are placed by the toolchain's Coral rules; the estimate is

    ms = invoke + I/O bytes / USB + MACs on the TPU / (2 TMAC/s · u) + TPU ops · t_op
         + output elements of non-MAC TPU ops · e + parameter bytes beyond the 8 MB cache / USB + CPU MACs / CPU

(the check's formula, toolchain/checks/edgetpu.py). u (utilisation of the 4 TOPS peak), t_op (fixed time per TPU
op), the USB rate and the invoke overhead are fitted on log error (scipy least_squares). The four MACs kinds share
u: the table's models cannot separate them (depthwise is 3-7 % of the MobileNets' MACs). A published figure that
would need parameters to stream faster than USB 3.0 signals (625 MB/s) cannot come from the same model as ours
and is left out of the fit, with the reason. Reported: the fit's error per model and the leave-one-model-out
error. --write puts the values and the error band into targets/edgetpu.yaml.

    python -m tools.edgetpu_models --work build/edgetpu-bench
    python -m tools.fit_edgetpu --work build/edgetpu-bench [--write]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "tools" / "data" / "coral_published.csv"
USB3_MB_PER_S = 625  # 5 Gbit/s signalling: no parameter stream is faster


def rows(work: Path) -> list[dict]:
    from toolchain.checks.edgetpu import features
    from toolchain.config import load_target
    from toolchain.tflite_model import TFLiteModel

    spec = load_target("edgetpu").edgetpu
    out = []
    with open(PUBLISHED, newline="") as f:
        for r in csv.DictReader(f):
            path = work / f"{r['keras_model']}.tflite"
            if r["keras_model"] and path.exists():
                f_ = features(TFLiteModel.from_file(path), spec)
                need = f_["streamed_bytes"] / 1e3 / float(r["usb_accelerator_ms"])  # MB/s if streaming were all
                why = (
                    f"its {f_['streamed_bytes'] / 1e6:.1f} MB beyond the cache would stream at {need:.0f} MB/s, over "
                    f"USB 3.0's {USB3_MB_PER_S} MB/s: Coral's model must differ from this one"
                    if need > USB3_MB_PER_S
                    else None
                )
                out.append(r | {"features": f_, "ms": float(r["usb_accelerator_ms"]), "excluded": why})
    return out


def predict(theta, f, cpu_gmacs: float) -> float:
    u, t_op, usb, invoke, per_m = theta
    return (
        invoke
        + per_m * f["other_elements"] / 1e6
        + f["io_bytes"] / (usb * 1e3)
        + sum(f["macs"].values()) / (2e9 * u)
        + t_op * f["tpu_ops"]
        + f["streamed_bytes"] / (usb * 1e3)
        + f["cpu_macs"] / (cpu_gmacs * 1e6)
    )


def fit(data: list[dict], cpu_gmacs: float) -> np.ndarray:
    from scipy.optimize import least_squares

    def residuals(theta):
        return [np.log(predict(theta, r["features"], cpu_gmacs) / r["ms"]) for r in data]

    lo, hi = [0.01, 0.0, 50.0, 0.0, 0.0], [1.0, 1.0, USB3_MB_PER_S, 5.0, 100.0]
    return least_squares(residuals, [0.2, 0.02, 320.0, 0.3, 0.1], bounds=(lo, hi)).x


def main() -> int:
    from toolchain.checks.edgetpu import check
    from toolchain.config import load_target
    from toolchain.tflite_model import TFLiteModel

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("build/edgetpu-bench"))
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    spec = load_target("edgetpu").edgetpu
    data = rows(args.work)
    used = [r for r in data if not r["excluded"]]
    if len(used) < 3:
        print(f"{len(used)} published models built: run tools/edgetpu_models.py first", file=sys.stderr)
        return 2
    theta = fit(used, spec.cpu_gmacs)
    for r in data:
        r["fit_ms"] = predict(theta, r["features"], spec.cpu_gmacs)
        r["before_ms"] = check(TFLiteModel.from_file(args.work / f"{r['keras_model']}.tflite"), spec)["estimate_ms"][
            "total"
        ]
        others = [x for x in used if x is not r]
        r["loo_ms"] = predict(fit(others, spec.cpu_gmacs), r["features"], spec.cpu_gmacs) if not r["excluded"] else None
    fit_err = [r["fit_ms"] / r["ms"] - 1 for r in used]
    loo_err = [r["loo_ms"] / r["ms"] - 1 for r in used]
    result = {
        "date": datetime.date.today().isoformat(),
        "utilization": float(theta[0]),
        "op_overhead_ms": float(theta[1]),
        "usb_mb_per_s": float(theta[2]),
        "invoke_overhead_ms": float(theta[3]),
        "element_ms_per_m": float(theta[4]),
        "rows": [
            {
                "model": r["model"],
                "keras_model": r["keras_model"],
                "published_ms": r["ms"],
                "before_ms": r["before_ms"],
                "fit_ms": r["fit_ms"],
                "loo_ms": r["loo_ms"],
                "excluded": r["excluded"],
                "source": r["source"],
            }
            for r in data
        ],
        "fit_median_abs_pct": 100 * float(np.median(np.abs(fit_err))),
        "fit_max_abs_pct": 100 * float(np.max(np.abs(fit_err))),
        "loo_median_abs_pct": 100 * float(np.median(np.abs(loo_err))),
        "loo_max_abs_pct": 100 * float(np.max(np.abs(loo_err))),
        "measurements": len(used),
    }
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.write:
        write_profile(ROOT / "targets" / "edgetpu.yaml", result)
    return 0


def table(r: dict) -> str:
    lines = [
        f"Edge TPU (USB Accelerator), {r['measurements']} published latencies fitted: utilisation "
        f"{r['utilization']:.3f}, {r['op_overhead_ms'] * 1e3:.1f} µs per TPU op, USB {r['usb_mb_per_s']:.0f} MB/s, "
        f"invoke {r['invoke_overhead_ms']:.2f} ms, {r['element_ms_per_m']:.3f} ms per million elements of non-MAC ops",
        "",
        "| model | Coral USB ms | previous estimate | fitted | fit error | leave-one-model-out |",
        "|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        p = x["published_ms"]
        loo = (
            f"{x['loo_ms']:.1f} ({100 * (x['loo_ms'] / p - 1):+.0f} %)" if x["loo_ms"] else "excluded: " + x["excluded"]
        )
        lines.append(
            f"| {x['model']} | {p:g} | {x['before_ms']:.2f} ({100 * (x['before_ms'] / p - 1):+.0f} %) | "
            f"{x['fit_ms']:.2f} | {100 * (x['fit_ms'] / p - 1):+.0f} % | {loo} |"
        )
    lines += [
        "",
        f"fit median |error| {r['fit_median_abs_pct']:.1f} % (max {r['fit_max_abs_pct']:.1f} %); leave-one-model-out "
        f"median {r['loo_median_abs_pct']:.1f} % (max {r['loo_max_abs_pct']:.1f} %)",
    ]
    return "\n".join(lines)


def write_profile(path: Path, r: dict) -> None:
    keys = ("utilization", "invoke_overhead_ms", "usb_mb_per_s", "utilization_by_kind", "op_overhead_ms")
    keys += ("element_ms_per_m",)
    keys += ("error_pct", "max_error_pct", "measurements")
    text = re.sub(r"\n  (" + "|".join(keys) + r"):.*", "", path.read_text())
    u = r["utilization"]
    block = (
        f"\n  # fitted by tools/fit_edgetpu.py ({r['date']}) to {r['measurements']} latencies of Coral's table"
        f"\n  utilization: {u:.4g}"
        f"\n  utilization_by_kind: {{conv: {u:.4g}, depthwise: {u:.4g}, fully_connected: {u:.4g}}}"
        f"\n  op_overhead_ms: {r['op_overhead_ms']:.4g}"
        f"\n  element_ms_per_m: {r['element_ms_per_m']:.4g}"
        f"\n  usb_mb_per_s: {r['usb_mb_per_s']:.4g}"
        f"\n  invoke_overhead_ms: {r['invoke_overhead_ms']:.3f}"
        f"\n  error_pct: {r['loo_median_abs_pct']:.1f}   # leave-one-model-out median |error| (the fit's own: "
        f"{r['fit_median_abs_pct']:.1f})"
        f"\n  max_error_pct: {r['loo_max_abs_pct']:.1f}"
        f"\n  measurements: {r['measurements']}"
    )
    text = re.sub(r"\n  # fitted by (?:scripts|tools)/fit_edgetpu.py.*", "", text)
    text = re.sub(r"(\nedgetpu:\n(?:  .*\n?)*)", lambda m: m.group(1).rstrip("\n") + block + "\n", text, count=1)
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())

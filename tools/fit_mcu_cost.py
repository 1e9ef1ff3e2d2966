"""Fit the per-op MCU cost model (toolchain/checks/mcu_cost.py) to published device measurements.

cycles(model) = Σ over ops of (a_kind·MACs + b·elements moved + c), with a per MAC kind (conv, depthwise,
fully connected), b and c shared by every kind (four models cannot separate more). Measurements: the MLPerf Tiny
reference models in ../shared/anchors/mlperf-tiny/ with published latencies (its published.csv, plus
tools/data/mcu_published.csv if present), each latency turned into cycles at the system's clock.

A fit minimises the relative error, with a ridge pulling the three per-MAC rates toward each other and the
element and op terms toward zero (strength fixed beforehand, --ridge; the held-out error of every other strength
is printed too, so the choice can be seen not to be tuned on the answer). Reported: the fit residual on every
measurement and the leave-one-model-out error (all measurements of one model held out, the rest fitted, the
held-out predicted).
With --write, the coefficients and error band go into the profiles of the family (targets/<name>.yaml, mcu.cost).

    python -m tools.fit_mcu_cost [--family m4-m33] [--write]
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
ANCHORS = ROOT.parent / "shared" / "anchors" / "mlperf-tiny"
EXTRA = ROOT / "tools" / "data" / "mcu_published.csv"
MAC_KINDS = ("conv", "depthwise", "fully_connected")
LAMBDAS = (0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)
#: core -> family whose coefficients it shares (CMSIS-NN DSP-extension kernels on M4 and M33)
FAMILIES = {"Cortex-M33": "m4-m33", "Cortex-M4": "m4-m33", "Cortex-M7": "m7", "Cortex-M55": "m55"}
PROFILES = {"m4-m33": ["cortex-m4"], "m7": ["cortex-m7"]}


def measurements(family: str) -> list[dict]:
    rows = []
    for path in (ANCHORS / "published.csv", EXTRA):
        if path.exists():
            with open(path, newline="") as f:
                rows += list(csv.DictReader(f))
    out, seen = [], set()
    for r in rows:
        core = next((c for c in FAMILIES if r["core"].startswith(c)), None)
        key = (r["benchmark"], r["system"])
        if core is None or FAMILIES[core] != family or key in seen:
            continue
        seen.add(key)
        out.append(r | {"cycles": float(r["latency_ms"]) * float(r["clock_mhz"]) * 1e3})
    return out


def design(rows: list[dict]) -> np.ndarray:
    """One row per measurement: MACs per MAC kind, elements moved, op count."""
    from toolchain.checks.mcu_cost import features
    from toolchain.tflite_model import TFLiteModel

    cache: dict[str, dict] = {}
    x = []
    for r in rows:
        if r["model_file"] not in cache:
            cache[r["model_file"]] = features(TFLiteModel.from_file(ANCHORS / r["model_file"]))
        f = cache[r["model_file"]]
        x.append(
            [f[k]["macs"] for k in MAC_KINDS]
            + [sum(v["elements"] for v in f.values()), sum(v["ops"] for v in f.values())]
        )
    return np.array(x)


def fit(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """Non-negative coefficients minimising Σ((x·θ − y)/y)² + lam·(Σ_{k<l}((a_k − a_l)/ā)² + Σ(share of the
    cycles the element and op terms explain)²): strong lam leaves one cycles/MAC figure."""
    from scipy.optimize import lsq_linear

    a = x / y[:, None]
    b = np.ones(len(y))
    macs = min(3, x.shape[1])
    scale = np.median(y / x[:, :macs].sum(1))  # a typical cycles/MAC, to make the ridge unitless
    pen = []
    for i in range(macs):
        for j in range(i + 1, macs):
            row = np.zeros(x.shape[1])
            row[i], row[j] = 1 / scale, -1 / scale
            pen.append(np.sqrt(lam) * row)
    for k in range(macs, x.shape[1]):  # element and op terms: pulled toward 0, in share of the cycles they explain
        row = np.zeros(x.shape[1])
        row[k] = np.median(x[:, k] / y)
        pen.append(np.sqrt(lam) * row)
    if pen:
        a, b = np.vstack([a, *pen]), np.concatenate([b, np.zeros(len(pen))])
    # columns scaled for conditioning: MACs ~1e6, elements ~1e5, ops ~10
    col = np.abs(a).max(0)
    col[col == 0] = 1
    res = lsq_linear(a / col, b, bounds=(0, np.inf))
    return res.x / col


def loo(x, y, groups, lam_of) -> np.ndarray:
    """Relative error of each measurement predicted with its model's measurements held out."""
    err = np.zeros(len(y))
    for g in sorted(set(groups)):
        test = np.array([h == g for h in groups])
        lam = lam_of(x[~test], y[~test], [h for h, t in zip(groups, test, strict=True) if not t])
        theta = fit(x[~test], y[~test], lam)
        err[test] = x[test] @ theta / y[test] - 1
    return err


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="m4-m33", choices=sorted(set(FAMILIES.values())))
    ap.add_argument("--write", action="store_true", help="write the coefficients into the family's profiles")
    ap.add_argument("--json", type=Path, help="also write the numbers as JSON here")
    ap.add_argument(
        "--ridge",
        type=float,
        default=1.0,
        help="ridge strength, fixed before looking at the held-out errors (default 1: a rate differing from the "
        "others by its own size costs as much as a 100 %% miss on one measurement); every strength's "
        "leave-one-model-out error is printed as well",
    )
    args = ap.parse_args()
    rows = measurements(args.family)
    if len({r["benchmark"] for r in rows}) < 3:
        print(f"{args.family}: {len(rows)} measurements: too few models to fit and cross-validate", file=sys.stderr)
        return 2
    x, y = design(rows), np.array([r["cycles"] for r in rows])
    groups = [r["benchmark"] for r in rows]
    lam = args.ridge
    theta = fit(x, y, lam)
    resid = x @ theta / y - 1
    held = loo(x, y, groups, lambda *_: lam)
    sensitivity = {}
    for other in LAMBDAS:
        e = np.abs(loo(x, y, groups, lambda *_, v=other: v))
        sensitivity[other] = (100 * float(np.median(e)), 100 * float(np.max(e)))
    per_mac = y / x[:, :3].sum(1)
    naive = loo(x[:, :3].sum(1, keepdims=True), y, groups, lambda *_: 0.0)  # one cycles/MAC figure
    result = {
        "family": args.family,
        "date": datetime.date.today().isoformat(),
        "lambda": lam,
        "coefficients": dict(
            zip([f"{k}.mac" for k in MAC_KINDS] + ["element", "op"], [float(v) for v in theta], strict=True)
        ),
        "rows": [
            {
                "benchmark": r["benchmark"],
                "system": r["system"],
                "clock_mhz": float(r["clock_mhz"]),
                "measured_ms": float(r["latency_ms"]),
                "fit_ms": float(x[i] @ theta / float(r["clock_mhz"]) / 1e3),
                "fit_error_pct": 100 * float(resid[i]),
                "loo_error_pct": 100 * float(held[i]),
                "per_mac_loo_error_pct": 100 * float(naive[i]),
                "cycles_per_mac": float(per_mac[i]),
                "source": r["source"],
            }
            for i, r in enumerate(rows)
        ],
        "fit_median_abs_pct": 100 * float(np.median(np.abs(resid))),
        "loo_median_abs_pct": 100 * float(np.median(np.abs(held))),
        "loo_max_abs_pct": 100 * float(np.max(np.abs(held))),
        "per_mac_loo_median_abs_pct": 100 * float(np.median(np.abs(naive))),
        "per_mac_loo_max_abs_pct": 100 * float(np.max(np.abs(naive))),
        "ridge_sensitivity": {str(k): {"median": v[0], "max": v[1]} for k, v in sensitivity.items()},
        "measurements": len(rows),
        "models": len(set(groups)),
    }
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.write:
        for name in PROFILES.get(args.family, []):
            write_profile(ROOT / "targets" / f"{name}.yaml", result)
            print(f"wrote mcu.cost into targets/{name}.yaml", file=sys.stderr)
    return 0


def table(r: dict) -> str:
    lines = [
        f"family {r['family']}: {r['measurements']} published measurements of {r['models']} models, "
        f"ridge {r['lambda']}",
        "coefficients: " + ", ".join(f"{k} {v:.4g}" for k, v in r["coefficients"].items()),
        "",
        "| benchmark | system | MHz | measured ms | fit ms | fit error | leave-one-model-out error | "
        "one cycles/MAC figure, LOMO error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        lines.append(
            f"| {x['benchmark']} | {x['system']} | {x['clock_mhz']:g} | {x['measured_ms']:.3f} | {x['fit_ms']:.3f} | "
            f"{x['fit_error_pct']:+.1f} % | {x['loo_error_pct']:+.1f} % | {x['per_mac_loo_error_pct']:+.1f} % |"
        )
    lines += [
        "",
        "leave-one-model-out |error| by ridge strength: "
        + ", ".join(f"{k}: {v['median']:.1f}/{v['max']:.1f} %" for k, v in r["ridge_sensitivity"].items())
        + " (median/max)",
        "",
        f"fit residual median |error| {r['fit_median_abs_pct']:.1f} %; leave-one-model-out median |error| "
        f"{r['loo_median_abs_pct']:.1f} %, max {r['loo_max_abs_pct']:.1f} % (one cycles/MAC figure: median "
        f"{r['per_mac_loo_median_abs_pct']:.1f} %, max {r['per_mac_loo_max_abs_pct']:.1f} %)",
    ]
    return "\n".join(lines)


def write_profile(path: Path, r: dict) -> None:
    """Replace the profile's ``cost:`` block under ``mcu:`` with the fitted one."""
    c = {k: (v if v >= 1e-3 else 0.0) for k, v in r["coefficients"].items()}  # below 1e-3 cycles: zero
    systems = sorted({x["system"] for x in r["rows"]})
    block = [
        "  cost:   # written by tools/fit_mcu_cost.py: cycles = Σ ops (mac·MACs + element·elements moved + op)",
        "    kernels: CMSIS-NN (TFLite Micro)",
        f"    family: {r['family']}",
        f"    fitted: '{r['date']}'",
        f"    measurements: {r['measurements']}   # published latencies of {r['models']} MLPerf Tiny models "
        f"({', '.join(systems)})",
        f"    error_pct: {r['loo_median_abs_pct']:.1f}   # leave-one-model-out median |error|",
        f"    max_error_pct: {r['loo_max_abs_pct']:.1f}",
        "    kinds:",
    ]
    shared = f"element: {c['element']:.4g}, op: {c['op']:.4g}"
    for kind in ("conv", "depthwise", "fully_connected"):
        block.append(f"      {kind}: {{mac: {c[kind + '.mac']:.4g}, {shared}}}")
    for kind in ("pooling", "elementwise", "softmax", "copy"):
        block.append(f"      {kind}: {{mac: 0, {shared}}}")
    text = path.read_text()
    text = re.sub(r"\n  cost:.*?(?=\n\S|\n  \w+:(?! *\{)|\Z)", "", text, flags=re.S)
    text = re.sub(r"(\nmcu:\n(?:  .*\n)*)", lambda m: m.group(1) + "\n".join(block) + "\n", text, count=1)
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())

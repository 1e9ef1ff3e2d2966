"""The MCU latency estimate (toolchain/checks/mcu_cost.py) against published MLPerf Tiny measurements.

    python -m benchmarks.mcu_cost [--family m4-m33]

Runs the fit of ``python -m tools.fit_mcu_cost`` (pure arithmetic over the models' shapes in
../shared/anchors/mlperf-tiny/, no timing on this machine) without writing the profiles, and records its residual
and leave-one-model-out errors in benchmarks/results/mcu_cost.json. ``python -m tools.fit_mcu_cost --write`` is
what puts the coefficients into targets/*.yaml.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import common

NAME = "mcu_cost"
#: MLPerf Tiny benchmark -> the model it names
CASES = {"kws": "DS-CNN", "vww": "MobileNetV1 0.25", "ic": "ResNet-8", "ad": "FC autoencoder"}


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(f"benchmarks.{NAME}", __doc__)
    ap.add_argument("--family", default="m4-m33")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "fit.json"
        cmd = [sys.executable, "-m", "tools.fit_mcu_cost", "--family", args.family, "--json", str(out)]
        proc = subprocess.run(cmd, cwd=common.REPO, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise common.BenchmarkError(f"tools.fit_mcu_cost failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        data = json.loads(out.read_text())
    path = common.result_path(NAME, args.results)
    if path.exists():  # the estimate before the fit: a fixed figure, kept from the first result
        data["previous"] = common.load_result(NAME, args.results)["data"].get("previous")
    common.write_result(NAME, data, args.results, argv)
    print(values({"data": data})["table"])
    return 0


def _pct(x: float) -> str:
    return f"{x:+.1f} %".replace("-", "−")


def values(result: dict) -> dict[str, str]:
    d = result["data"]
    prev = d.get("previous") or {"ms": {}}
    rows = []
    for r in d["rows"]:
        before = prev["ms"].get(r["benchmark"])
        err = prev.get("error_pct", {}).get(r["benchmark"])  # as printed from the unrounded estimate
        err = 100 * (before / r["measured_ms"] - 1) if err is None and before is not None else err
        was = "-" if before is None else f"{before:.2f} ms ({_pct(err)})"
        rows.append(
            [
                f"{r['benchmark']} ({CASES.get(r['benchmark'], '?')})",
                f"{r['measured_ms']:.3f}",
                f"{r['fit_ms']:.3f}",
                _pct(r["fit_error_pct"]),
                _pct(r["loo_error_pct"]),
                _pct(r["per_mac_loo_error_pct"]),
                was,
            ]
        )
    header = ["benchmark", "measured ms", "fit ms", "fit error", "leave-one-model-out error"]
    header += ["one fitted cycles/MAC, LOMO", f"previous estimate ({prev.get('cycles_per_mac', '?')} cycles/MAC)"]
    c = d["coefficients"]
    coefficients = (
        f"conv {c['conv.mac']:.4g}, depthwise {c['depthwise.mac']:.4g}, fully connected "
        f"{c['fully_connected.mac']:.4g} cycles/MAC, {c['element']:.4g} cycles per element moved, "
        f"{c['op'] if c['op'] >= 1e-3 else 0:.4g} per op"
    )
    sens = ", ".join(f"{float(k):g}: {v['median']:.1f}/{v['max']:.1f} %" for k, v in d["ridge_sensitivity"].items())
    return {
        "table": common.table(header, rows),
        "date": d["date"],
        "coefficients": coefficients,
        "loo_median": f"{d['loo_median_abs_pct']:.1f} %",
        "loo_max": f"{d['loo_max_abs_pct']:.1f} %",
        "fit_median": f"{d['fit_median_abs_pct']:.1f} %",
        "per_mac": f"median {d['per_mac_loo_median_abs_pct']:.1f} %, max {d['per_mac_loo_max_abs_pct']:.1f} %",
        "sensitivity": sens,
        "ridge": f"{d['lambda']:g}",
    }


def metrics(result: dict) -> dict[str, float]:
    d = result["data"]
    return {k: round(d[k], 1) for k in ("loo_median_abs_pct", "loo_max_abs_pct", "fit_median_abs_pct")}


if __name__ == "__main__":
    sys.exit(main())

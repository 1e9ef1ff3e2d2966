"""The Edge TPU latency estimate (toolchain/checks/edgetpu.py) against Coral's published benchmark table.

    python -m tools.edgetpu_models --work /tmp/etpu      # the table's architectures, 6-65 s each to convert
    python -m benchmarks.edgetpu_cost --work /tmp/etpu

Runs the fit of ``python -m tools.fit_edgetpu`` without writing the profile and records its error per model and
held out in benchmarks/results/edgetpu_cost.json. ``python -m tools.fit_edgetpu --work ... --write`` is what puts
the values into targets/edgetpu.yaml.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import common
from tools import fit_edgetpu

NAME = "edgetpu_cost"
#: the acceptance: these models of the table within this share of Coral's figure
CASES = {"models": ["MobileNet v1", "MobileNet v2"], "within": 0.25}


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(f"benchmarks.{NAME}", __doc__)
    ap.add_argument("--work", type=Path, default=Path("build/edgetpu-bench"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "fit.json"
        cmd = [sys.executable, "-m", "tools.fit_edgetpu", "--work", str(args.work), "--json", str(out)]
        proc = subprocess.run(cmd, cwd=common.REPO, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise common.BenchmarkError(f"tools.fit_edgetpu failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        data = json.loads(out.read_text())
    for r in data["rows"]:
        p = r["published_ms"]
        r["before_error_pct"] = round(100 * (r["before_ms"] / p - 1))
        r["fit_error_pct"] = round(100 * (r["fit_ms"] / p - 1))
        r["loo_error_pct"] = round(100 * (r["loo_ms"] / p - 1)) if r["loo_ms"] else None
    common.write_result(NAME, data, args.results, argv)
    print(fit_edgetpu.table(data))
    return 0


def _err(row: dict) -> float:
    return row["fit_error_pct"] / 100


def _table(d: dict) -> str:
    rows = []
    for x in d["rows"]:
        loo = f"{x['loo_ms']:.1f} ({x['loo_error_pct']:+d} %)" if x["loo_ms"] else "excluded: " + x["excluded"]
        rows.append(
            [x["model"], f"{x['published_ms']:g}", f"{x['before_ms']:.2f} ({x['before_error_pct']:+d} %)"]
            + [f"{x['fit_ms']:.2f}", f"{x['fit_error_pct']:+d} %", loo]
        )
    header = ["model", "Coral USB ms", "previous estimate", "fitted", "fit error", "leave-one-model-out"]
    return (
        common.table(header, rows)
        + f"\n\nfit median |error| {d['fit_median_abs_pct']:.1f} % (max {d['fit_max_abs_pct']:.1f} %); "
        + f"leave-one-model-out median {d['loo_median_abs_pct']:.1f} % (max {d['loo_max_abs_pct']:.1f} %)"
    )


def values(result: dict) -> dict[str, str]:
    d = result["data"]
    rows = {r["model"]: r for r in d["rows"]}
    accepted = [rows[m] for m in CASES["models"]]
    met = all(abs(_err(r)) <= CASES["within"] for r in accepted)
    return {
        "date": d["date"],
        "fitted": (
            f"utilisation {d['utilization']:.3f}, {d['op_overhead_ms'] * 1e3:.1f} µs per TPU op, USB "
            f"{d['usb_mb_per_s']:.0f} MB/s, invoke {d['invoke_overhead_ms']:.2f} ms, {d['element_ms_per_m']:.3f} ms "
            "per million elements of non-MAC ops"
        ),
        "table": _table(d),
        "acceptance": ("met, " if met else "NOT met, ")
        + " and ".join(f"{r['fit_error_pct']:+d} %".replace("-", "−") for r in accepted),
        "loo_median": f"{d['loo_median_abs_pct']:.1f}",
        "loo_max": f"{d['loo_max_abs_pct']:.1f}",
    }


def metrics(result: dict) -> dict[str, float]:
    d = result["data"]
    out = {k: round(d[k], 1) for k in ("fit_median_abs_pct", "loo_median_abs_pct", "loo_max_abs_pct")}
    for r in d["rows"]:
        if r["model"] in CASES["models"]:
            out[f"{r['model']}.abs_fit_error_pct"] = abs(r["fit_error_pct"])
    return out


if __name__ == "__main__":
    sys.exit(main())

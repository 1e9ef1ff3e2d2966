"""``recipes/sensor-anomaly.yaml`` (task: anomaly) built cold for its four targets: ROC AUC and SNR per target.

    python -m tools.make_sensor_anomaly          # the data and the untrained model (seeded)
    python -m benchmarks.sensor_anomaly [--out /tmp/sa]

One cold ``python -m toolchain build`` (fresh folder); every number is read from its ``build.json``. Writes
benchmarks/results/sensor_anomaly.json.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from benchmarks import common

NAME = "sensor_anomaly"
CASES = {"recipe": "recipes/sensor-anomaly.yaml"}


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(f"benchmarks.{NAME}", __doc__)
    ap.add_argument("--out", type=Path, default=Path("/tmp/sa"))
    args = ap.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    built = common.toolchain_build(common.REPO / CASES["recipe"], args.out)
    rec = built.record
    data = {
        "recipe": CASES["recipe"],
        "cold_s": round(built.wall_s),
        "eval_samples": rec["eval_samples"],
        "rows": [
            {
                "target": r["target"],
                "runtime": r["runtime"],
                "reference_auc": r["metrics"]["reference_auc"],
                "auc": r["metrics"]["auc"],
                "snr_db": r["metrics"].get("snr_db"),
                "cosine": r["metrics"].get("cosine"),
                "latency": (r.get("latency") or {}).get("source"),
                "passed": r["passed"],
            }
            for r in rec["results"]
        ],
    }
    common.write_result(NAME, data, args.results, argv)
    print(values({"data": data})["table"])
    return 0


def values(result: dict) -> dict[str, str]:
    d = result["data"]
    rows = [
        [r["target"], r["runtime"], f"{r['reference_auc']:.4f}", f"{r['auc']:.4f}", f"{r['snr_db']:.1f}"]
        + [f"{r['cosine']:.4f}", r["latency"]]
        for r in d["rows"]
    ]
    header = ["target", "runtime", "float ROC AUC", "int8 ROC AUC", "SNR dB", "cosine", "latency"]
    passed = sum(r["passed"] for r in d["rows"])
    return {
        "table": common.table(header, rows),
        "cold_s": str(d["cold_s"]),
        "eval_samples": str(d["eval_samples"]),
        "passed": "All four pass" if passed == len(d["rows"]) == 4 else f"{passed} of {len(d['rows'])} pass",
    }


def metrics(result: dict) -> dict[str, float]:
    return {f"{r['target']}.auc": round(r["auc"], 4) for r in result["data"]["rows"]}


if __name__ == "__main__":
    sys.exit(main())

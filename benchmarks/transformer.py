"""``recipes/transformer.yaml``: a 2-block Transformer encoder on the digits, int8 on a phone, a Cortex-M7 and two
Ethos-U NPUs, built cold.

    python -m benchmarks.transformer [--out /tmp/tr]

One cold ``python -m toolchain build`` (fresh folder); every number is read from its ``build.json``: per target the
float and int8 top-1, the agreement, the ops Vela keeps on the NPU, the artifact's size; and the float top-1 of the
model before and after the GELU rewrite. Writes benchmarks/results/transformer.json.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks import common

NAME = "transformer"
CASES = {"recipe": "recipes/transformer.yaml"}


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(f"benchmarks.{NAME}", __doc__)
    ap.add_argument("--out", type=Path, default=Path("/tmp/tr"))
    args = ap.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    built = common.toolchain_build(common.REPO / CASES["recipe"], args.out)
    rec = built.record
    diag = subprocess.run(
        [
            sys.executable,
            "-m",
            "toolchain",
            "diagnose",
            CASES["recipe"],
            "--build-dir",
            str(args.out),
            "--format",
            "json",
        ],
        cwd=common.REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    from toolchain.report.diagnosis import sensitive

    roles = [
        {"role": r["role"], "ops": r["ops"], "rank": r["rank"], "layer": r["worst"]["layer"], "op": r["worst"]["op"]}
        | {"snr_db": r["worst"]["isolated"]["snr_db"]}
        for r in sensitive(json.loads(diag.stdout))
    ]
    from toolchain.record import parse_record
    from toolchain.report.compare import placement

    where = placement(parse_record(rec).results)
    (rewrite,) = [s for s in rec["compression"] if s["step"] == "rewrite"]
    data = {
        "recipe": CASES["recipe"],
        "cold_s": round(built.wall_s),
        "eval_samples": rec["eval_samples"],
        "rewrite": {
            "gelu": rewrite["gelu"],
            "layers": rewrite["rewritten"],
            "float_top1_gelu": rewrite["top1_before"],
            "float_top1_rewritten": rewrite["float_top1_rewritten"],
            "params": rewrite["params"],
        },
        "sensitive": {"target": "phone-cpu", "roles": roles},
        "placement": where,
        "rows": [
            {
                "target": r["target"],
                "runtime": r["runtime"],
                "reference_top1": r["metrics"]["reference_top1"],
                "top1": r["metrics"]["top1"],
                "agreement": r["metrics"]["top1_agreement"],
                "npu_ops": [r["accelerator"]["ops_on"], r["accelerator"]["ops_total"]] if r["accelerator"] else None,
                "size_bytes": r["size_bytes"],
                "ops": sum(r["ops"].values()),
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
        [
            r["target"],
            r["runtime"],
            f"{100 * r['reference_top1']:.2f}",
            f"{100 * r['top1']:.2f}",
            f"{100 * (r['reference_top1'] - r['top1']):+.2f}",
            f"{r['agreement']:.4f}",
            f"{r['npu_ops'][0]} of {r['npu_ops'][1]}" if r["npu_ops"] else "-",
            f"{r['size_bytes'] / 1024:.1f}",
            str(r["ops"]),
        ]
        for r in d["rows"]
    ]
    header = ["target", "runtime", "float top-1 %", "int8 top-1 %", "drop", "agreement", "Vela: on NPU", "KB", "ops"]
    w = d["rewrite"]
    sens = common.table(
        ["kind", "ops", "worst layer", "rank among all layers", "isolated SNR dB"],
        [
            [
                r["role"],
                str(r["ops"]),
                f"{r['layer'] or 'the output'} ({r['op']})",
                str(r["rank"]),
                f"{r['snr_db']:.1f}",
            ]
            for r in d["sensitive"]["roles"]
        ],
    )
    from toolchain.report.compare import placement_cell, placement_reasons

    where = d["placement"]
    placed = common.table(
        ["op", *where["targets"]],
        [[x["op"], *[placement_cell(x["targets"][t]) for t in where["targets"]]] for x in where["rows"]],
    )
    reasons = "\n".join(f"- {r}" for r in placement_reasons(where)) or "None: Vela placed every op on the NPU."
    return {
        "placement": placed,
        "cpu_reasons": reasons,
        "sensitive": sens,
        "table": common.table(header, rows),
        "cold_s": str(d["cold_s"]),
        "eval_samples": str(d["eval_samples"]),
        "params": f"{w['params']:,}",
        "gelu_top1": f"{100 * w['float_top1_gelu']:.2f}",
        "rewritten_top1": f"{100 * w['float_top1_rewritten']:.2f}",
        "rewritten": ", ".join(w["layers"]),
        "passed": f"{sum(r['passed'] for r in d['rows'])} of {len(d['rows'])}",
    }


def metrics(result: dict) -> dict[str, float]:
    return {
        f"{r['target']}.drop_points": round(100 * (r["reference_top1"] - r["top1"]), 2) for r in result["data"]["rows"]
    }


if __name__ == "__main__":
    sys.exit(main())

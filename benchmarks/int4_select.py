"""INT4 where it is insensitive: 4-bit weights on the layers the measurement picks, against all-int8 and all-4-bit.

    python -m benchmarks.int4_select [--out /tmp/i4]

A 2-block ``application: Transformer`` encoder on the digits, wide enough that its weights are most of the
artifact (dim 128, 4 heads, GELU feed-forward of 256 rewritten to x*sigmoid(1.702x), 0.27 M parameters), trained
in the recipe; three plans built in one folder (the trained model is one cache entry) for phone-cpu (LiteRT,
per-channel 4-bit) and cortex-m7 (tflite-micro, per-tensor 4-bit dense): every op int8; ``int4_layers: ['*']``
(every conv / dense op the runtime runs with 4-bit weights); ``int4_select: {max_drop: 0.5}`` (least sensitive
first, while the calibration top-1 stays within 0.5 points of all-int8). Every number is read from the builds'
``build.json``. The same three plans on ``recipes/mobilenet.yaml``'s MobileNetV2 (its 17 depthwise convs keep
8-bit weights: the quantizer gives them none). Writes benchmarks/results/int4_select.json.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import yaml

from benchmarks import common
from toolchain.errors import CompatibilityError, GateFailure

NAME = "int4_select"
CASES = {"all int8": "", "int4 every layer": ", int4_layers: ['*']", "int4 selected": ", int4_select: {max_drop: 0.5}"}
TARGETS = ["phone-cpu", "cortex-m7"]
RECIPE = """schema_version: 1
name: {name}
model:
  application: Transformer
  input_shape: [8, 8, 1]
  classes: 10
  transformer: {{dim: 128, heads: 4, blocks: 2, ffn: 256, activation: gelu}}
data:
  builtin: digits
  split: {{train: 0.7, calibration: 0.1, eval: 0.2, seed: 0}}
train: {{epochs: 30, batch_size: 32, learning_rate: 0.001, seed: 0}}
compress: [{{step: rewrite, gelu: sigmoid}}]
quantize: {{mode: int8{int4}}}
targets: [{targets}]
acceptance: {{max_accuracy_drop: 100}}
"""


def mobilenet(name: str, int4: str) -> str:
    """``recipes/mobilenet.yaml`` with the plan's 4-bit option, for the two targets, no gate."""
    r = yaml.safe_load((common.REPO / "recipes/mobilenet.yaml").read_text())
    r["name"], r["targets"], r["acceptance"] = name, TARGETS, {"max_accuracy_drop": 100}
    r["quantize"] |= yaml.safe_load("{" + int4.lstrip(", ") + "}") if int4 else {}
    return yaml.safe_dump(r, sort_keys=False)


MODELS = {
    "encoder": lambda name, int4: RECIPE.format(name=name, int4=int4, targets=", ".join(TARGETS)),
    "MobileNetV2": mobilenet,
}


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(f"benchmarks.{NAME}", __doc__)
    ap.add_argument("--out", type=Path, default=Path("/tmp/i4"))
    args = ap.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    rows, selection = [], {}
    for model, text in MODELS.items():
        for i, (case, int4) in enumerate(CASES.items()):
            name = f"{model.lower()}-{i}"
            recipe = args.out / f"{name}.yaml"
            recipe.write_text(text(name, int4))
            # a target that fails its gates or its memory budget is a result (exit 11 or 9; the record is written)
            built = common.toolchain_build(recipe, args.out / "build", accept=(GateFailure, CompatibilityError))
            rec = built.record
            for r in rec["results"]:
                q = r["quantization"]
                rows.append(
                    {
                        "model": model,
                        "case": case,
                        "target": r["target"],
                        "reference_top1": r["metrics"]["reference_top1"],
                        "top1": r["metrics"]["top1"],
                        "agreement": r["metrics"]["top1_agreement"],
                        "size_bytes": r["size_bytes"],
                        "int4_ops": len(q["int4_ops"]),
                        "litert_top1": r["sections"]["litert"]["metrics"]["top1"],
                        "passed": r["passed"],
                        "failures": [f["message"] for f in r["failures"]],
                        "arena_bytes": (r["memory"] or {}).get("arena_bytes"),
                        "wall_s": round(built.wall_s),
                    }
                )
                if q.get("int4_selection"):
                    selection[f"{model}.{r['target']}"] = q["int4_selection"]
    data = {"eval_samples": rec["eval_samples"], "rows": rows, "selection": selection}
    common.write_result(NAME, data, args.results, argv)
    print(values({"data": data})["table"])
    return 0


def values(result: dict) -> dict[str, str]:
    d = result["data"]
    base = {(r["model"], r["target"]): r["size_bytes"] for r in d["rows"] if r["case"] == "all int8"}
    rows = [
        [
            r["model"],
            r["case"],
            r["target"],
            str(r["int4_ops"]),
            f"{r['size_bytes'] / 1024:.1f}",
            f"{100 * (r['size_bytes'] / base[r['model'], r['target']] - 1):+.1f}",
            f"{100 * r['reference_top1']:.2f}",
            f"{100 * r['top1']:.2f}",
            f"{100 * (r['reference_top1'] - r['top1']):.2f}",
            f"{r['agreement']:.4f}",
            f"{100 * r['litert_top1']:.2f}",
            f"{r['arena_bytes'] / 1024:.0f}" if r["arena_bytes"] else "-",
            "pass" if r["passed"] else "FAIL",
        ]
        for r in d["rows"]
    ]
    header = ["model", "plan", "target", "4-bit ops", "KB", "vs int8 %", "float top-1 %", "top-1 %", "drop", "agree"]
    header += ["LiteRT top-1 %", "arena KB", "gates"]
    out = {"table": common.table(header, rows), "eval_samples": str(d["eval_samples"])}
    for model, key in (("encoder", "encoder"), ("MobileNetV2", "mobilenet")):
        sel = d["selection"].get(f"{model}.phone-cpu", {"candidates": []})
        out[f"choices_{key}"] = common.table(
            ["op output", "bytes saved alone", "output SNR alone dB", "calibration top-1 with it %", "4-bit"],
            [
                [
                    c["op"].split(";")[0][:56],
                    f"{c['saved_bytes']:,}",
                    f"{c['snr_db']:.1f}",
                    f"{100 * c['top1_with']:.2f}",
                    "yes" if c["chosen"] else "no",
                ]
                for c in sel["candidates"]
            ],
        )
        out[f"kept_{key}"] = f"{sum(c['chosen'] for c in sel['candidates'])} of {len(sel['candidates'])}"
    return out


def metrics(result: dict) -> dict[str, float]:
    rows = result["data"]["rows"]
    base = {(r["model"], r["target"]): r["size_bytes"] for r in rows if r["case"] == "all int8"}
    out = {}
    for r in rows:
        key = f"{r['model']}.{r['case'].replace(' ', '_')}.{r['target']}"
        out[f"{key}.drop_points"] = round(100 * (r["reference_top1"] - r["top1"]), 2)
        out[f"{key}.size_vs_int8_pct"] = round(100 * (r["size_bytes"] / base[r["model"], r["target"]] - 1), 1)
    return out


if __name__ == "__main__":
    sys.exit(main())

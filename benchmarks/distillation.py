"""Which distillation helps a pruned MobileNetV2: none, response, response + feature, response + each relation
(RKD distance, RKD angle, FSP), online (two students) and self (deep supervision), three seeds each.

    python -m benchmarks.distillation [--out /tmp/distill-bench] [--seeds 0 1 2]

The student is the one of recipes/compression/mobilenet-l1-features.yaml: MobileNetV2 α 0.35 at 96x96 trained 12
epochs on the digits, 70 % of its unconstrained filters pruned by L1 norm, fine-tuned 6 epochs at 0.002; only the
fine-tuning's distillation and its seed change. Each case is a ``toolchain build`` for phone-cpu (the float
model trained once, shared through the build cache): the student's float top-1 after fine-tuning (the compress
step's ``top1_after``) and the int8 artifact's top-1 on LiteRT, on the 359 eval samples; the median of the seeds
and their spread (max - min). Writes benchmarks/results/distillation.json.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import yaml

from benchmarks import common

NAME = "distillation"
BASE = common.REPO / "recipes" / "compression" / "mobilenet-l1-features.yaml"
RESPONSE = {"temperature": 4, "alpha": 0.5}
FEATURES = [
    {"teacher": "out_relu", "student": "out_relu"},
    {"teacher": "block_13_expand_relu", "student": "block_13_expand_relu"},
]
CASES = {
    "none": None,
    "response": RESPONSE,
    "response + feature": {**RESPONSE, "features": FEATURES, "feature_weight": 1.0},
    "response + RKD distance": {**RESPONSE, "relations": [{"kind": "rkd_distance", "student": ["out_relu"]}]},
    "response + RKD angle": {
        **RESPONSE,
        "relations": [{"kind": "rkd_angle", "student": ["out_relu"], "weight": 2.0}],
    },
    "response + FSP": {
        **RESPONSE,
        "relations": [{"kind": "fsp", "student": ["block_14_expand_relu", "block_14_depthwise_relu"]}],
    },
    "online (2 students)": {"mode": "online", "students": 2, "temperature": 4, "alpha": 0.5},
    "self (deep supervision)": {
        "mode": "self",
        "heads": ["block_6_expand_relu", "block_13_expand_relu"],
        "temperature": 4,
        "alpha": 0.5,
    },
}


def recipe(case: str, distill: dict | None, seed: int, out: Path) -> Path:
    tree = yaml.safe_load(BASE.read_text())
    slug = case.split(" (")[0].replace(" + ", "-").replace(" ", "-").lower()
    tree["name"] = f"distill-{slug}-s{seed}"
    step = dict(tree["compress"][0])
    step.pop("distill", None)
    step["seed"] = seed
    if distill is not None:
        step["distill"] = distill
    tree["compress"] = [step]
    tree["targets"] = ["phone-cpu"]
    tree["acceptance"] = {"max_accuracy_drop": 100}  # a result either way
    path = out / "recipes" / f"{tree['name']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(f"benchmarks.{NAME}", __doc__)
    ap.add_argument("--out", type=Path, default=Path("/tmp/distill-bench"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args(argv)
    rows = []
    for seed in args.seeds:  # seed by seed: a partial run still has every case
        for case, distill in CASES.items():
            rec = common.toolchain_build(recipe(case, distill, seed, args.out), args.out / "build").record
            (step,) = rec["compression"]
            r = rec["results"][0]
            h = step.get("history", {})
            rows.append(
                {
                    "case": case,
                    "seed": seed,
                    "float_top1": step["top1_after"],
                    "int8_top1": r["metrics"]["top1"],
                    "reference_top1": r["metrics"]["reference_top1"],
                    "seconds": step["seconds"],
                    "terms": {k: [h[k][0], h[k][-1]] for k in h if k.startswith("loss_") or k == "feature_loss"},
                }
            )
    common.write_result(
        NAME, {"eval_samples": rec["eval_samples"], "seeds": args.seeds, "rows": rows}, args.results, argv
    )
    return 0


def summary(result: dict) -> dict[str, dict]:
    """Per case: median and spread of float and int8 top-1 (percent), and the seconds."""
    out = {}
    for case in CASES:
        rows = [r for r in result["data"]["rows"] if r["case"] == case]
        if not rows:
            continue
        f = [100 * r["float_top1"] for r in rows]
        q = [100 * r["int8_top1"] for r in rows]
        out[case] = {
            "float": statistics.median(f),
            "float_spread": max(f) - min(f),
            "int8": statistics.median(q),
            "int8_spread": max(q) - min(q),
            "seeds": len(rows),
            "seconds": statistics.median(r["seconds"] for r in rows),
            "terms": rows[0]["terms"],
        }
    return out


def values(result: dict) -> dict[str, str]:
    s = summary(result)
    base = s["none"]
    sample = 100 / result["data"]["eval_samples"]
    rows = []
    for case, v in s.items():
        df, dq = v["float"] - base["float"], v["int8"] - base["int8"]
        rows.append(
            [
                case,
                f"{v['float']:.2f} (±{v['float_spread'] / 2:.2f})",
                f"{df:+.2f}" if case != "none" else "",
                f"{v['int8']:.2f} (±{v['int8_spread'] / 2:.2f})",
                f"{dq:+.2f}" if case != "none" else "",
                f"{v['seconds']:.0f}",
            ]
        )
    verdicts = []
    for case, v in s.items():
        if case == "none":
            continue
        df = v["float"] - base["float"]
        noise = max(v["float_spread"], base["float_spread"], sample)
        word = "helps" if df > noise else ("hurts" if df < -noise else "is within the seeds' spread (no effect shown)")
        verdicts.append(f"- {case}: {df:+.2f} points of float top-1 against no distillation: {word}")
    terms = []
    for case, v in s.items():
        for k, (first, last) in v["terms"].items():
            if (k.startswith("loss_") and k != "loss_total") or k == "feature_loss":
                terms.append([case, k.removeprefix("loss_"), f"{first:.4g}", f"{last:.4g}"])
    return {
        "table": common.table(
            ["case", "float top-1 % (median ± half spread)", "vs none", "int8 top-1 %", "vs none", "fine-tune s"], rows
        ),
        "verdicts": "\n".join(verdicts),
        "seeds": ", ".join(map(str, result["data"]["seeds"])),
        "sample": f"{sample:.2f}",
        "terms": common.table(["case", "term", "epoch 1", "last epoch"], terms),
    }


def metrics(result: dict) -> dict[str, float]:
    s = summary(result)
    return {f"{case.split(' (')[0].replace(' ', '')}.float_top1_pct": round(v["float"], 2) for case, v in s.items()}


if __name__ == "__main__":
    sys.exit(main())

"""SmoothQuant on a Transformer whose feed-forward inputs have planted outlier channels.

    python -m benchmarks.smoothquant [--out /tmp/sq]

A pre-norm ``application: Transformer`` (2 blocks, dim 32, 4 heads, ReLU feed-forward of 64) is trained here on
1,200 digits; then in both blocks the LayerNorm before the feed-forward gets 3 of its 32 channels scaled 100x
(gamma and beta) and the feed-forward's first Dense the same rows divided by 100: the float function is the same,
the activation the Dense reads has 3 outlier channels, as large-model activations do. The other 597 digits are
the recipe's data (30 % calibration, 70 % eval). Three cold builds for phone-cpu and cortex-m7: the model without
outliers (minmax), with outliers (minmax), with outliers and ``quantize.smooth: {alpha: 0.5}``. Writes
benchmarks/results/smoothquant.json.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

from benchmarks import common

NAME = "smoothquant"
CASES = {
    "plain": {"outliers": False, "smooth": None},
    "outliers": {"outliers": True, "smooth": None},
    "outliers + smooth": {"outliers": True, "smooth": 0.5},
}
TARGETS = ["phone-cpu", "cortex-m7"]
RECIPE = """schema_version: 1
name: {name}
model: {{file: {file}, classes: 10}}
data: {{npz: data.npz, split: {{train: 0.0, calibration: 0.3, eval: 0.7, seed: 0}}}}
quantize: {{mode: int8{smooth}}}
targets: [{targets}]
acceptance: {{max_accuracy_drop: 100}}
"""


def models(folder: Path) -> None:
    """plain.keras, outliers.keras and data.npz in ``folder``."""
    from sklearn.datasets import load_digits

    from toolchain.config.recipe import ModelSpec, TransformerSpec
    from toolchain.models.compat import keras
    from toolchain.models.transformer import build_transformer

    k = keras()
    k.utils.set_random_seed(0)
    d = load_digits()
    x = ((d.images.astype(np.float32) / 16.0 - 0.5) / 0.5)[..., None]
    order = np.random.default_rng(0).permutation(len(x))
    train, rest = order[:1200], order[1200:]
    spec = ModelSpec(
        application="Transformer",
        input_shape=(8, 8, 1),
        transformer=TransformerSpec(norm="pre", activation="relu"),
    )
    model = build_transformer(spec)
    model.compile(k.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x[train], d.target[train], epochs=30, batch_size=32, verbose=0)
    model.save(folder / "plain.keras")
    scale = np.r_[[100.0] * 3, [1.0] * 29].astype(np.float32)
    for b in range(2):
        ln, up = model.get_layer(f"norm_{b}b"), model.get_layer(f"ffn_{b}_up")
        g, beta = ln.get_weights()
        ln.set_weights([g * scale, beta * scale])
        w, bias = up.get_weights()
        up.set_weights([w / scale[:, None], bias])
    model.save(folder / "outliers.keras")
    np.savez(folder / "data.npz", x=x[rest], y=d.target[rest])


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(f"benchmarks.{NAME}", __doc__)
    ap.add_argument("--out", type=Path, default=Path("/tmp/sq"))
    args = ap.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    models(args.out)
    rows = []
    for i, (case, c) in enumerate(CASES.items()):
        name = f"sq{i}"
        smooth = f", smooth: {{alpha: {c['smooth']}}}" if c["smooth"] else ""
        recipe = args.out / f"{name}.yaml"
        file = "outliers.keras" if c["outliers"] else "plain.keras"
        recipe.write_text(RECIPE.format(name=name, file=file, smooth=smooth, targets=", ".join(TARGETS)))
        rec = common.toolchain_build(recipe, args.out / "build").record
        for r in rec["results"]:
            sm = (r["quantization"] or {}).get("smoothing")
            rows.append(
                {
                    "case": case,
                    "target": r["target"],
                    "reference_top1": r["metrics"]["reference_top1"],
                    "top1": r["metrics"]["top1"],
                    "agreement": r["metrics"]["top1_agreement"],
                    "smoothing": sm["layers"] if sm else None,
                }
            )
    common.write_result(NAME, {"eval_samples": rec["eval_samples"], "rows": rows}, args.results, argv)
    print(values({"data": {"eval_samples": rec["eval_samples"], "rows": rows}})["table"])
    return 0


def values(result: dict) -> dict[str, str]:
    d = result["data"]
    rows = [
        [
            r["case"],
            r["target"],
            f"{100 * r['reference_top1']:.2f}",
            f"{100 * r['top1']:.2f}",
            f"{100 * (r['reference_top1'] - r['top1']):.2f}",
            f"{r['agreement']:.4f}",
        ]
        for r in d["rows"]
    ]
    header = ["case", "target", "float top-1 %", "int8 top-1 %", "drop (points)", "agreement"]
    sm = next((r["smoothing"] for r in d["rows"] if r["smoothing"]), [])  # the same layers on every target
    layers = common.table(
        ["layer", "into", "channel range before", "after"],
        [
            [s["layer"], ", ".join(s["into"]), f"{s['channel_range_before']:.1f}x", f"{s['channel_range_after']:.1f}x"]
            for s in sm
        ],
    )
    drops = {
        (r["case"], r["target"]): 100 * (r["reference_top1"] - r["top1"]) for r in d["rows"] if r["case"] == "outliers"
    }
    cost = ", ".join(f"{v:.1f} points on {t}" for (_, t), v in drops.items())
    premise = "holds" if min(drops.values()) >= 5 else f"does not hold here: they cost {cost}"
    return {
        "table": common.table(header, rows),
        "layers": layers,
        "eval_samples": str(d["eval_samples"]),
        "premise": premise,
        "sample": f"{100 / d['eval_samples']:.2f}",
    }


def metrics(result: dict) -> dict[str, float]:
    return {
        f"{r['case'].replace(' ', '')}.{r['target']}.drop_points": round(100 * (r["reference_top1"] - r["top1"]), 2)
        for r in result["data"]["rows"]
    }


if __name__ == "__main__":
    sys.exit(main())

"""Calibration methods, symmetric activations, equalization and bias correction, measured with real builds.

    python -m benchmarks.calibration [--out /tmp/bench-calibration] [--part hot|bright|collapse|auto|all]

**hot**, **bright**: the MobileNetV2 digits recipe (recipes/mobilenet.yaml: trained here, 12 epochs) calibrated
on 200 digits of which 2 % carry an outlier (``--intensity``, default 100x; at 20x, bright images cost min/max
only 0.4-0.6 point): one hot pixel (hot), or the whole image that much brighter (bright); given as a calibration
file (``data.calibration``); one build per calibration method and for symmetric activations,
targets phone-cpu (LiteRT) and cortex-m7 (tflite-micro). The trained model, the data and the traced graph are
cached and shared by every build: only the ranges change.

**collapse**: a small ReLU CNN (conv 16 -> conv 32 -> 1x1 conv 32 -> mean -> dense, logits out) trained on
digits here, whose channels are then rescaled by factors spread over 100x (0.1 ... 10, compensated in the next
layer: the float function is unchanged, checked to 1e-4); builds per-channel and per-tensor, without and with
equalization and bias correction.

Every number is read from the builds' ``build.json`` (top-1 of the eval split on each target's runtime, the
float reference's top-1). Writes the parts it ran into benchmarks/results/calibration.json (the other parts are
kept); ``python -m benchmarks.render`` makes docs/benchmark-calibration.md from it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import common

NAME = "calibration"
DETAIL = "benchmark-calibration.md"
PARTS = ("collapse", "hot", "bright", "auto")
#: the summary of docs/benchmarks.md: per scenario, the reference variant and the variants the best is chosen from
SUMMARY = {
    "hot": {
        "label": "hot pixels (2 % of 200 calibration images with one pixel at {x}; {n} eval)",
        "baseline": "minmax",
        "best_of": ["mean_minmax", "percentile 99.99", "percentile 99.9", "kl", "mse"],
    },
    "bright": {
        "label": "bright images (2 % of them {x} as bright)",
        "baseline": "minmax",
        "best_of": ["mean_minmax", "percentile 99.99", "percentile 99.9", "kl", "mse"],
    },
    "collapse": {
        "label": "per-tensor collapse (ReLU CNN, channels rescaled over 100x; {n} eval)",
        "baseline": "per-tensor",
        "best_of": [
            "per-tensor, bias correction",
            "per-tensor, equalize",
            "per-tensor, equalize + bias correction",
            "per-channel",
        ],
    },
}
#: per part: variant -> the recipe's quantize settings (the hot and bright parts share OUTLIER_VARIANTS)
OUTLIER_VARIANTS = {
    "minmax": "calibration: minmax",
    "mean_minmax": "calibration: mean_minmax",
    "percentile 99.99": "calibration: percentile, percentile: 99.99",
    "percentile 99.9": "calibration: percentile, percentile: 99.9",
    "kl": "calibration: kl",
    "mse": "calibration: mse",
    "minmax, symmetric": "calibration: minmax, activations: symmetric",
}
COLLAPSE_VARIANTS = {
    "per-channel": "per_channel: true",
    "per-channel, equalize": "per_channel: true, equalize: true",
    "per-tensor": "per_channel: false",
    "per-tensor, bias correction": "per_channel: false, bias_correction: true",
    "per-tensor, equalize": "per_channel: false, equalize: true",
    "per-tensor, equalize + bias correction": "per_channel: false, equalize: true, bias_correction: true",
    "per-tensor, equalize, symmetric": "per_channel: false, equalize: true, activations: symmetric",
}

OUTLIER_RECIPE = """\
schema_version: 1
name: {name}
model: {{application: MobileNetV2, alpha: 0.35, input_shape: [96, 96, 3], classes: 10, weights: none}}
data:
  builtin: digits
  normalization: {{mean: 0.5, std: 0.5}}
  split: {{train: 0.7, calibration: 0.1, eval: 0.2, seed: 0}}
  resize: true
  calibration: {{npz: {calibration}}}
train: {{epochs: 12, batch_size: 32, learning_rate: 0.002, seed: 0, batchnorm_momentum: 0.9}}
quantize: {{mode: int8, calibration_samples: 200, {quantize}}}
targets: [phone-cpu, cortex-m7]
acceptance: {{max_accuracy_drop: 100}}
"""

COLLAPSE_RECIPE = """\
schema_version: 1
name: {name}
model: {{file: {model}}}
data:
  builtin: digits
  normalization: {{mean: 0.5, std: 0.5}}
  split: {{train: 0.7, calibration: 0.1, eval: 0.2, seed: 0}}
quantize: {{mode: int8, calibration_samples: 100, {quantize}}}
targets: [phone-cpu, cortex-m7]
acceptance: {{max_accuracy_drop: 100}}
"""


def build(recipe: Path, out: Path) -> dict:
    """A gate failing is a result here (the record is written): the auto part's budget is part of the test."""
    return common.toolchain_build(recipe, out).record


def rows_of(record: dict, variant: str) -> list[dict]:
    return [row_of(record, r, variant) for r in record["results"]]


def row_of(record: dict, r: dict, variant: str) -> dict:
    q = r.get("quantization") or {}
    return {
        "variant": variant,
        "eval_samples": record["eval_samples"],
        "target": r["target"],
        "runtime": r["runtime"],
        "float_top1": r["metrics"]["reference_top1"],
        "top1": r["metrics"]["top1"],
        "drop_points": round(100 * (r["metrics"]["reference_top1"] - r["metrics"]["top1"]), 2),
        "clipped_tensors": q.get("clipped_tensors"),
        "clipped_share_max": q.get("clipped_share_max"),
        "utilisation_mean": q.get("utilisation_mean"),
        "input_scale": r["io"]["input"]["scale"],
        "input_zero_point": r["io"]["input"]["zero_point"],
        "size_bytes": r["size_bytes"],
    }


def outliers(out: Path, intensity: float, kind: str) -> list[dict]:
    """``bright``: 2 % of the calibration images are ``intensity`` times as bright (about 1 % of all input
    values become extreme); ``hot``: 2 % of the images get one hot pixel at ``intensity`` (a sensor glitch: about
    0.03 % of the input values after resizing)."""
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(0)
    images = load_digits().images.astype(np.float32) / 16.0
    x = images[rng.choice(len(images), 200, replace=False)][..., None]
    extreme = rng.choice(len(x), 4, replace=False)  # 2 %
    if kind == "bright":
        x[extreme] *= intensity
    else:
        x[extreme, rng.integers(0, 8, 4), rng.integers(0, 8, 4), 0] = intensity
    out.mkdir(parents=True, exist_ok=True)
    calibration = out / f"calibration-{kind}.npz"
    np.savez(calibration, x=x)
    rows = []
    for variant, quantize in OUTLIER_VARIANTS.items():
        name = f"{kind}-" + variant.replace(" ", "").replace(",", "-").replace(".", "")
        recipe = out / f"{name}.yaml"
        recipe.write_text(OUTLIER_RECIPE.format(name=name, calibration=calibration, quantize=quantize))
        rows += rows_of(build(recipe, out / "build"), variant)
    return rows


def auto(out: Path, intensity: float) -> list[dict]:
    """quantize.mode auto with a 1.0-point budget on the hot-pixel calibration set, three targets."""
    outliers_data = out / "calibration-hot.npz"
    if not outliers_data.exists():
        outliers(out, intensity, "hot")
    recipe = out / "auto-hot.yaml"
    text = OUTLIER_RECIPE.format(name="auto-hot", calibration=outliers_data, quantize="calibration: minmax")
    text = text.replace("mode: int8,", "mode: auto,").replace(
        "[phone-cpu, cortex-m7]", "[phone-cpu, cortex-m7, edgetpu]"
    )
    recipe.write_text(text.replace("max_accuracy_drop: 100", "max_accuracy_drop: 1.0"))
    record = build(recipe, out / "build")
    rows = []
    for r in record["results"]:
        for p in r["plan_search"]:  # the record keeps the kept rung's details; the others have their numbers
            kept = p is r["plan_search"][-1]
            rows.append(
                row_of(record, r, f"{r['target']}: {p['plan']}")
                | {
                    "top1": r["metrics"]["reference_top1"] - p["drop"],
                    "drop_points": round(100 * p["drop"], 2),
                    "clipped_tensors": None,
                    "clipped_share_max": None,
                    "utilisation_mean": None,
                    "input_scale": r["io"]["input"]["scale"] if kept else 0.0,
                    "input_zero_point": r["io"]["input"]["zero_point"] if kept else 0,
                    "size_bytes": p["size_bytes"],
                    "passed": p["passed"],
                }
            )
    return rows


def collapse_model(out: Path) -> Path:
    """Train the ReLU CNN on the recipe's own train split, rescale its channels, save it (tf_keras)."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from toolchain.config import load_recipe
    from toolchain.data.datasets import load_dataset
    from toolchain.models.compat import keras
    from toolchain.models.source import keras_inputs

    k = keras()
    k.utils.set_random_seed(0)
    path = out / "relu-cnn-rescaled.keras"
    probe = out / "probe.yaml"
    out.mkdir(parents=True, exist_ok=True)
    model = k.Sequential(
        [
            k.Input((8, 8, 1)),
            k.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            k.layers.Conv2D(32, 3, activation="relu", name="conv2"),
            k.layers.Conv2D(32, 1, activation="relu", name="conv3"),
            k.layers.GlobalAveragePooling2D(name="pool"),
            k.layers.Dense(10, name="logits"),
        ]
    )
    probe.write_text(COLLAPSE_RECIPE.format(name="probe", model=path, quantize="calibration: minmax"))
    recipe = load_recipe(probe)
    data = load_dataset(recipe.data, keras_inputs(model), 10, "classification")
    model.compile(k.optimizers.Adam(3e-3), k.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    model.fit(data.x_train, data.y_train, epochs=30, batch_size=32, verbose=0)
    before = model.predict(data.x_eval, verbose=0)
    rng = np.random.default_rng(1)
    for first, second in (("conv1", "conv2"), ("conv2", "conv3")):
        (w1, b1), (w2, b2) = model.get_layer(first).get_weights(), model.get_layer(second).get_weights()
        s = rng.permutation(np.logspace(-1, 1, w1.shape[-1])).astype(np.float32)  # 0.1 ... 10: 100x
        model.get_layer(first).set_weights([w1 * s, b1 * s])
        model.get_layer(second).set_weights([w2 / s[None, None, :, None], b2])
    after = model.predict(data.x_eval, verbose=0)
    diff = float(np.abs(after - before).max())
    print(f"  rescaled: float outputs change by at most {diff:.2e} (logits up to {np.abs(before).max():.1f})")
    if diff > 1e-4 * max(1.0, float(np.abs(before).max())):
        raise common.BenchmarkError("the rescaling changed the function")
    model.save(path)
    probe.unlink()
    return path


def collapse(out: Path) -> list[dict]:
    model = collapse_model(out)
    rows = []
    for variant, quantize in COLLAPSE_VARIANTS.items():
        name = "collapse-" + variant.replace(" ", "").replace(",", "-").replace("+", "")
        recipe = out / f"{name}.yaml"
        recipe.write_text(COLLAPSE_RECIPE.format(name=name, model=model, quantize=quantize))
        rows += rows_of(build(recipe, out / "build"), variant)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| variant | target (runtime) | float top-1 | int8 top-1 | drop (points) | tensors clipped | "
        "max clipped share | mean grid use | input scale / zp |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        clipped = "-" if r["clipped_tensors"] is None else f"{r['clipped_tensors']}"
        share = "-" if r["clipped_share_max"] is None else f"{100 * r['clipped_share_max']:.3f} %"
        use = "-" if r["utilisation_mean"] is None else f"{r['utilisation_mean']:.2f}"
        lines.append(
            f"| {r['variant']} | {r['target']} ({r['runtime']}) | {r['float_top1']:.4f} | {r['top1']:.4f} | "
            f"{r['drop_points']:+.2f} | {clipped} | {share} | {use} | "
            f"{r['input_scale']:.4g} / {r['input_zero_point']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(f"benchmarks.{NAME}", __doc__)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-calibration"))
    ap.add_argument("--part", choices=[*PARTS, "all"], default="all")
    ap.add_argument(
        "--intensity", type=float, default=100.0, help="outliers: how much brighter the 2 %% extreme samples are"
    )
    args = ap.parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    path = common.result_path(NAME, args.results)
    parts = common.load_result(NAME, args.results)["data"]["parts"] if path.exists() else {}
    for part in PARTS:
        if args.part not in (part, "all"):
            continue
        if part == "collapse":
            rows = collapse(args.out.resolve())
        elif part == "auto":
            rows = auto(args.out.resolve(), args.intensity)
        else:
            rows = outliers(args.out.resolve(), args.intensity, part)
        parts[part] = {"started": started, "intensity": args.intensity, "cores": os.cpu_count(), "rows": rows}
    data = {"parts": {p: parts[p] for p in PARTS if p in parts}}
    common.write_result(NAME, data, args.results, argv)
    print(detail({"data": data}))
    return 0


def detail(result: dict) -> str:
    """docs/benchmark-calibration.md: every part's table."""
    md = [
        "# Calibration benchmark",
        "",
        "Generated by `python -m benchmarks.render` from benchmarks/results/calibration.json "
        "(`python -m benchmarks.calibration [--part collapse|hot|bright|auto]` measures a part again). Top-1 on each "
        "recipe's eval split, on each target's runtime (phone-cpu: LiteRT; cortex-m7: tflite-micro); drop = float "
        "top-1 minus int8 top-1, in points.",
    ]
    model = "MobileNetV2 0.35 96x96 on digits, calibration set of 200 images"
    for part, data in result["data"]["parts"].items():
        rows = data["rows"]
        x = f"{data.get('intensity', 100.0):g}x"
        title = {
            "hot": f"Outliers, hot pixels: {model}, 2 % of them with one pixel at {x}",
            "bright": f"Outliers, bright images: {model}, 2 % of them {x} as bright",
            "collapse": "Per-tensor collapse: ReLU CNN with channels rescaled over 100x",
            "auto": f"quantize.mode auto, 1.0-point budget, on the hot-pixel calibration set ({x}): every rung tried",
        }[part]
        when = f"measured {data['started']}, {data['cores']} cores"
        head = f"`--part {part}`, {when}, {rows[0].get('eval_samples', '?')} eval samples"
        md += ["", f"## {title}", "", head, "", table(rows)]
    return "\n".join(md) + "\n"


def _drops(rows: list[dict], variant: str) -> list[float]:
    return [r["drop_points"] for r in rows if r["variant"] == variant]


def _pair(drops: list[float], fmt: str = ".1f") -> str:
    return " / ".join(format(d, fmt).replace("-", "−") for d in drops)


def values(result: dict) -> dict[str, str]:
    parts = result["data"]["parts"]
    rows = []
    for part, case in SUMMARY.items():
        data = parts[part]
        r = data["rows"]
        label = case["label"].format(x=f"{data['intensity']:g}x", n=r[0]["eval_samples"])
        best = min(case["best_of"], key=lambda v: max(abs(d) for d in _drops(r, v)))
        worst = max(abs(d) for d in _drops(r, best))
        shown = (
            f"**{_pair(_drops(r, best), '+.2f' if part == 'collapse' else '.2f')}**"
            if worst <= 1.0
            else (f"{_pair(_drops(r, best))} (none within 1 point)")
        )
        others = "; ".join(f"{v} {_pair(_drops(r, v), '.2f')}" for v in case["best_of"] if v != best)
        rows.append([label, _pair(_drops(r, case["baseline"])), f"{best}: {shown}", others])
    auto_rows = parts["auto"]["rows"]
    targets = list(dict.fromkeys(x["target"] for x in auto_rows))
    plans = list(dict.fromkeys(x["variant"].split(": ", 1)[1] for x in auto_rows))
    rungs = [
        f"{plan} ({_pair([x['drop_points'] for x in auto_rows if x['variant'].endswith(': ' + plan)], '.2f')})"
        for plan in plans
    ]
    return {
        "summary": common.table(["scenario", "minmax", "best method", "others"], rows),
        "auto_targets": ", ".join(targets),
        "auto_rungs": ", ".join(rungs[:-1]) + " and stopped at " + rungs[-1],
        "intensity": f"{parts['hot']['intensity']:g}x",
    }


def metrics(result: dict) -> dict[str, float]:
    """Drop in points (``part.variant.target``) of each summary scenario's reference and best variants, and of the
    rung ``quantize.mode: auto`` stopped at per target."""
    parts = result["data"]["parts"]
    out = {}
    for part, case in SUMMARY.items():
        rows = parts[part]["rows"]
        best = min(case["best_of"], key=lambda v: max(abs(d) for d in _drops(rows, v)))
        out |= {
            f"{part}.{r['variant']}.{r['target']}": r["drop_points"]
            for r in rows
            if r["variant"] in (case["baseline"], best)
        }
    last = {}
    for r in parts["auto"]["rows"]:
        last[r["target"]] = r
    out |= {f"auto.kept.{t}": r["drop_points"] for t, r in last.items()}
    return out


if __name__ == "__main__":
    sys.exit(main())

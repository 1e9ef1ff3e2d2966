"""Low-rank factorization, weight clustering, feature distillation and 4-bit weights on the digits data.

Builds, sharing the trained float models through the build cache:
  - low-rank, for MobileNetV2 (recipes/mobilenet.yaml vs recipes/compression/mobilenet-lowrank.yaml, same four
    targets) and for a plain CNN with wider layers (written to OUT/cnn32.keras, recipes to OUT/*.yaml): MACs of
    the factorized layers before/after, float and int8 top-1 against the unfactorized model fine-tuned the same
    way (a `finetune` step: the control), each target's latency figure (measured on the host for phone-cpu,
    estimated for the others), and the int8 artifacts timed on the host with LiteRT side by side;
  - recipes/compression/mobilenet-cluster16.yaml: distinct values per kernel after stripping, distinct int8
    values per output channel in the artifact, raw and gzip'd size against the unclustered artifact (int8, and
    the same two models converted to float32);
  - recipes/compression/mobilenet-l1-features.yaml and the same recipe without its feature pairs: the feature
    term over the fine-tuning epochs and both students' top-1;
  - recipes/mobilenet.yaml with `quantize.int4_layers: ['*']` for phone-cpu and cortex-m7: size and top-1.
Every build is a ``python -m toolchain build`` process of a recipe written to OUT/recipes/. Writes
benchmarks/results/lowrank_cluster.json (``python -m benchmarks.render`` makes docs/benchmark-lowrank-cluster.md).

    python -m benchmarks.lowrank_cluster [--out build] [--rounds 15] [--invokes 40]
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import numpy as np

from benchmarks import common
from benchmarks.compression import latencies
from toolchain.config import load_recipe

NAME = "lowrank_cluster"
DETAIL = "benchmark-lowrank-cluster.md"
ROOT = common.REPO
COMPRESSION = ROOT / "recipes" / "compression"


def _build(recipe, targets=None, out=None) -> dict:
    """``recipe`` (a recipe model) written to OUT/recipes/ and built there; a failed gate is a result here."""
    print(f"building {recipe.name}", file=sys.stderr)
    path = common.write_recipe(recipe, out / "recipes" / f"{recipe.name}.yaml")
    return common.toolchain_build(path, out, targets=targets or (), accept=common.RECORD_WRITTEN).record


def _float32(recipe):
    return recipe.model_copy(
        update={"name": f"{recipe.name}-float32", "quantize": recipe.quantize.model_copy(update={"mode": "float32"})}
    )


def int8_values_per_channel(path: Path) -> dict[str, int]:
    """Largest count of distinct int8 values in one output channel, per int8 weight tensor of a conv or dense op."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    out = {}
    for d in it.get_tensor_details():
        if d["dtype"] != np.int8 or len(d["shape"]) not in (2, 4) or not d["quantization_parameters"]["scales"].size:
            continue
        try:
            w = it.get_tensor(d["index"])
        except ValueError:
            continue
        axis = d["quantization_parameters"]["quantized_dimension"]
        if d["quantization_parameters"]["scales"].size == 1:
            continue  # per-tensor: activations, not weights
        per = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
        out[d["name"]] = max(int(np.unique(row).size) for row in per)
    return out


CNN = """\
schema_version: 1
name: {name}
model:
  file: {file}
  classes: 10
data:
  builtin: digits
  normalization: {{mean: 0.5, std: 0.5}}
  split: {{train: 0.7, calibration: 0.1, eval: 0.2, seed: 0}}
train: {{epochs: 15, batch_size: 32, learning_rate: 0.002, seed: 0}}
{compress}
quantize: {{mode: int8, calibration_samples: 100}}
targets: [phone-cpu, cortex-m7]
acceptance: {{max_accuracy_drop: 1.5}}
"""


def cnn_file(out: Path) -> Path:
    """A plain CNN with wider convs and a large dense layer (32x32x1 digits): what low-rank factorization is for."""
    from toolchain.models.compat import keras

    path = out / "cnn32.keras"
    if path.exists():
        return path
    k = keras()
    L = k.layers
    k.utils.set_random_seed(0)
    model = k.Sequential(
        [
            k.Input((32, 32, 1)),
            L.Conv2D(32, 3, padding="same", activation="relu", name="conv1"),
            L.MaxPooling2D(name="pool1"),
            L.Conv2D(64, 3, padding="same", activation="relu", name="conv2"),
            L.MaxPooling2D(name="pool2"),
            L.Conv2D(128, 3, padding="same", activation="relu", name="conv3"),
            L.MaxPooling2D(name="pool3"),
            L.Flatten(name="flatten"),
            L.Dense(256, activation="relu", name="fc1"),
            L.Dense(10, activation="softmax", name="fc2"),
        ]
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


def _recipe_text(out: Path, text: str, name: str):
    path = out / f"{name}.yaml"
    path.write_text(text)
    return load_recipe(path)


def _step_variant(recipe, name: str, steps):
    return recipe.model_copy(update={"name": name, "compress": steps})


def _control(recipe, name: str):
    """The same fine-tuning as the recipe's one step, without the compression: the fair comparison."""
    from toolchain.config.recipe import FineTuneStep

    s = recipe.compress[0]
    step = FineTuneStep(
        step="finetune", epochs=s.epochs, learning_rate=s.learning_rate, batch_size=s.batch_size, distill=s.distill
    )
    return _step_variant(recipe, name, [step])


def lowrank_part(out: Path, args) -> dict:
    """MobileNetV2 and the plain CNN, each without compression, factorized, and fine-tuned without factorization."""
    part = {}
    mobilenet = load_recipe(ROOT / "recipes" / "mobilenet.yaml")
    lowrank = load_recipe(COMPRESSION / "mobilenet-lowrank.yaml")
    cnn = cnn_file(out)
    cnn_base = _recipe_text(out, CNN.format(name="cnn32", file=cnn, compress=""), "cnn32")
    cnn_lowrank = _recipe_text(
        out,
        CNN.format(
            name="cnn32-lowrank",
            file=cnn,
            compress="compress:\n  - {step: low_rank, macs_removed: 0.5, epochs: 8, learning_rate: 0.001, "
            "distill: {temperature: 4, alpha: 0.5}}",
        ),
        "cnn32-lowrank",
    )
    for key, base, factorized in (("mobilenet", mobilenet, lowrank), ("cnn32", cnn_base, cnn_lowrank)):
        targets = list(factorized.targets)
        recs = {
            "base": _build(base, targets, out),
            "lowrank": _build(factorized, None, out),
            "control": _build(_control(factorized, f"{factorized.name}-control"), ["phone-cpu"], out),
        }
        lat = latencies(
            {n: Path(res(recs[n])["artifact"]) for n in ("base", "lowrank", "control")},
            args.threads,
            args.rounds,
            args.invokes,
        )
        part[key] = {"records": recs, "host_latency": lat, "targets": targets}
    return part


def res(rec, t="phone-cpu"):
    return next(r for r in rec["results"] if r["target"] == t)


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(f"benchmarks.{NAME}", __doc__)
    ap.add_argument("--out", type=Path, default=ROOT / "build")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--invokes", type=int, default=40)
    args = ap.parse_args(argv)

    lowrank = lowrank_part(args.out, args)
    mobilenet = load_recipe(ROOT / "recipes" / "mobilenet.yaml")
    base = lowrank["mobilenet"]["records"]["base"]
    cluster_recipe = load_recipe(COMPRESSION / "mobilenet-cluster16.yaml")
    cluster = _build(cluster_recipe, None, args.out)
    base_f32 = _build(_float32(mobilenet), ["phone-cpu"], args.out)
    cluster_f32 = _build(_float32(cluster_recipe), None, args.out)
    feat_recipe = load_recipe(COMPRESSION / "mobilenet-l1-features.yaml")
    step = feat_recipe.compress[0]
    plain_step = step.model_copy(update={"distill": step.distill.model_copy(update={"features": []})})
    with_features = _build(feat_recipe, None, args.out)
    without_features = _build(_step_variant(feat_recipe, "mobilenet-l1-nofeatures", [plain_step]), None, args.out)
    int4_recipe = mobilenet.model_copy(
        update={"name": "mobilenet-int4", "quantize": mobilenet.quantize.model_copy(update={"int4_layers": ["*"]})}
    )
    int4 = _build(int4_recipe, ["phone-cpu", "cortex-m7"], args.out)

    cl = cluster["compression"][0]
    channel_values = int8_values_per_channel(Path(res(cluster)["artifact"]))
    fw, fo = with_features["compression"][0], without_features["compression"][0]
    pts = lambda a: a * 100  # noqa: E731
    checks = []
    summary = {}
    for key, part in lowrank.items():
        recs, lat = part["records"], part["host_latency"]
        lr, ctl = recs["lowrank"]["compression"][0], recs["control"]["compression"][0]
        summary[key] = {"step": {k: v for k, v in lr.items() if k != "history"}, "control_top1": ctl["top1_after"]}
        checks += [
            (
                f"{key} low-rank: >= 30 % fewer MACs in the factorized layers",
                f"{pts(lr['factorized_macs_removed']):.1f} % ({lr['factorized_macs_before']:,} -> "
                f"{lr['factorized_macs_after']:,}; whole model {lr['macs_before']:,} -> {lr['macs_after']:,})",
                lr["factorized_macs_removed"] >= 0.30,
            ),
            (
                f"{key} low-rank: float top-1 within 1.5 points of the unfactorized model fine-tuned the same way",
                f"{pts(lr['top1_after']):.2f} vs {pts(ctl['top1_after']):.2f} (before any fine-tuning "
                f"{pts(lr['top1_before']):.2f})",
                lr["top1_after"] >= ctl["top1_after"] - 0.015,
            ),
            (
                f"(info) {key} low-rank: host latency, int8 on LiteRT, side by side",
                f"{lat['base']['median_ms']:.3f} -> {lat['lowrank']['median_ms']:.3f} ms "
                f"({lat['base']['median_ms'] / lat['lowrank']['median_ms']:.2f}x faster; ops "
                f"{sum(res(recs['base'])['ops'].values())} -> {sum(res(recs['lowrank'])['ops'].values())})",
                None,
            ),
        ]
    checks += [
        (
            "clustering 16: every clustered kernel has <= 16 distinct values after stripping",
            f"{len(cl['clustered_layers'])} kernels, max {cl['max_unique_values']}",
            cl["max_unique_values"] <= 16 and len(cl["clustered_layers"]) > 0,
        ),
        (
            "(info) clustering 16: int8 artifact, gzip'd size against unclustered",
            f"{res(base)['size_gzip_bytes'] / 1024:.1f} -> {res(cluster)['size_gzip_bytes'] / 1024:.1f} KB "
            f"({res(base)['size_gzip_bytes'] / res(cluster)['size_gzip_bytes']:.2f}x; raw "
            f"{res(base)['size_bytes'] / 1024:.1f} -> {res(cluster)['size_bytes'] / 1024:.1f} KB)",
            None,
        ),
        (
            "(info) clustering 16: float32 artifact, gzip'd size against unclustered",
            f"{res(base_f32)['size_gzip_bytes'] / 1024:.1f} -> {res(cluster_f32)['size_gzip_bytes'] / 1024:.1f} KB "
            f"({res(base_f32)['size_gzip_bytes'] / res(cluster_f32)['size_gzip_bytes']:.2f}x)",
            None,
        ),
        (
            "feature distillation: the feature term decreases over the fine-tuning",
            " -> ".join(f"{v:.4f}" for v in fw["history"]["feature_loss"]),
            fw["history"]["feature_loss"][-1] < fw["history"]["feature_loss"][0],
        ),
        (
            "(info) feature distillation: student top-1 with / without the feature term (float; int8)",
            f"{pts(fw['top1_after']):.2f} / {pts(fo['top1_after']):.2f}; "
            f"{pts(res(with_features)['metrics']['top1']):.2f} / {pts(res(without_features)['metrics']['top1']):.2f}",
            None,
        ),
    ]
    for t in ("phone-cpu", "cortex-m7"):
        a, b = res(base, t), res(int4, t)
        checks.append(
            (
                f"(info) 4-bit weights on {t}: size and int8 top-1 against all int8",
                f"{a['size_bytes'] / 1024:.1f} -> {b['size_bytes'] / 1024:.1f} KB, top-1 "
                f"{pts(a['metrics']['top1']):.2f} -> {pts(b['metrics']['top1']):.2f} "
                f"({len(b['quantization']['int4_ops'])} ops 4-bit)",
                None,
            )
        )
    result = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "python": platform.python_version(),
        },
        "tool_versions": base["tool_versions"],
        "eval_samples": base["eval_samples"],
        "float_top1": res(base)["metrics"]["reference_top1"],
        "threads": args.threads,
        "rounds": args.rounds,
        "invokes_per_round": args.invokes,
        "checks": [{"check": c, "measured": m, "passed": ok if ok is None else bool(ok)} for c, m, ok in checks],
        "lowrank": summary,
        "lowrank_targets": {
            key: {
                t: {name: _target_row(part["records"][name], t) for name in ("base", "lowrank")}
                for t in part["targets"]
            }
            for key, part in lowrank.items()
        },
        "host_latency": {key: part["host_latency"] for key, part in lowrank.items()},
        "cluster": {k: v for k, v in cl.items() if k != "history"},
        "cluster_int8_values_per_channel_max": max(channel_values.values(), default=None),
        "sizes": {
            name: {"size_bytes": r["size_bytes"], "size_gzip_bytes": r["size_gzip_bytes"], "top1": r["metrics"]["top1"]}
            for name, r in (
                ("int8", res(base)),
                ("int8 clustered", res(cluster)),
                ("float32", res(base_f32)),
                ("float32 clustered", res(cluster_f32)),
            )
        },
        "int4": {
            t: {
                "int8": {"size_bytes": res(base, t)["size_bytes"], "top1": res(base, t)["metrics"]["top1"]},
                "int4": {
                    "size_bytes": res(int4, t)["size_bytes"],
                    "top1": res(int4, t)["metrics"]["top1"],
                    "ops": len(res(int4, t)["quantization"]["int4_ops"]),
                    "passed": res(int4, t)["passed"],
                },
            }
            for t in ("phone-cpu", "cortex-m7")
        },
        "features": {
            "with": {
                "top1_float": fw["top1_after"],
                "top1_int8": res(with_features)["metrics"]["top1"],
                **fw["history"],
            },
            "without": {
                "top1_float": fo["top1_after"],
                "top1_int8": res(without_features)["metrics"]["top1"],
                **fo["history"],
            },
            "step": step.model_dump(mode="json"),
        },
    }
    common.write_result(NAME, json.loads(json.dumps(result, default=float)), args.results, argv)
    print(render(result))
    return 0 if all(ok for _, _, ok in checks if ok is not None) else 1


def _target_row(rec: dict, t: str) -> dict:
    r = res(rec, t)
    lat = r.get("latency") or {}
    return {
        "ms": lat.get("ms"),
        "kind": lat.get("kind"),
        "source": lat.get("source"),
        "top1": (r.get("metrics") or {}).get("top1"),
        "ops": sum(r["ops"].values()),
    }


def render(r: dict) -> str:
    lines = [
        "# Low-rank factorization, weight clustering, feature distillation, 4-bit weights (digits)",
        "",
        f"Generated by `python -m benchmarks.render` from benchmarks/results/lowrank_cluster.json (measured by "
        f"`python -m benchmarks.lowrank_cluster`) on {r['machine']['platform']} "
        f"({r['machine']['processor']}), Python {r['machine']['python']}, TensorFlow "
        f"{r['tool_versions']['tensorflow']}, tfmot {r['tool_versions'].get('tensorflow-model-optimization')}. "
        f"MobileNetV2 alpha 0.35 at 96x96 (float top-1 {r['float_top1'] * 100:.2f} % on {r['eval_samples']} eval "
        "samples) and a plain CNN at 32x32x1 (three 3x3 convs of 32/64/128 filters, a 2048x256 dense layer). Host "
        f"latency: LiteRT, {r['threads']} thread(s), median of {r['rounds']} interleaved rounds x "
        f"{r['invokes_per_round']} invokes.",
        "",
        "## Checks",
        "",
        "| check | measured | result |",
        "|---|---|---|",
    ]
    lines += [
        f"| {c['check']} | {c['measured']} | {'-' if c['passed'] is None else 'pass' if c['passed'] else 'FAIL'} |"
        for c in r["checks"]
    ]
    for key, part in r["lowrank"].items():
        lr = part["step"]
        rule = f"energy {lr['energy']}" if lr.get("macs_removed") is None else f"macs_removed {lr['macs_removed']}"
        lines += [
            "",
            f"## Low-rank ({key}): per layer",
            "",
            f"Rule: {rule}, {lr['epochs']} distilled fine-tuning epochs. Top-1 right after factorization "
            f"{lr['top1_after_factorization'] * 100:.2f} %, after fine-tuning {lr['top1_after'] * 100:.2f} %; the "
            f"unfactorized model fine-tuned the same way: {part['control_top1'] * 100:.2f} %. Left alone: "
            f"{', '.join(f'{k} ({v})' for k, v in lr['skipped'].items()) or 'none'}.",
            "",
            "| layer | kind | rank | energy kept | MACs before | MACs after | params before | params after |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {x['layer']} | {x['kind']} | {x['rank']} | {x['energy_kept']:.3f} | {x['macs_before']:,} | "
            f"{x['macs_after']:,} | {x['params_before']:,} | {x['params_after']:,} |"
            for x in lr["layers"]
        ]
        lines += [
            "",
            f"## Low-rank ({key}): each target's latency figure",
            "",
            "| target | before ms | after ms | kind | ops before | ops after | int8 top-1 before % | after % |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for t, v in r["lowrank_targets"][key].items():
            b, a = v["base"], v["lowrank"]
            fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
            top = lambda x: "-" if x is None else f"{x * 100:.2f}"  # noqa: E731
            lines.append(
                f"| {t} | {fmt(b['ms'])} | {fmt(a['ms'])} | {b['kind']} ({b['source']}) | {b['ops']} | {a['ops']} | "
                f"{top(b['top1'])} | {top(a['top1'])} |"
            )
    c = r["cluster"]
    lines += [
        "",
        "## Clustering: sizes",
        "",
        "| artifact | size KB | gzip KB | top-1 % |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {s['size_bytes'] / 1024:.1f} | {s['size_gzip_bytes'] / 1024:.1f} | {s['top1'] * 100:.2f} |"
        for name, s in r["sizes"].items()
    ]
    lines += [
        "",
        f"{len(c['clustered_layers'])} kernels clustered; most distinct values in one kernel after stripping: "
        f"{c['max_unique_values']}. Left alone (tfmot registers DepthwiseConv2D with no clusterable weights): "
        f"{len([n for n, v in c['unique_values'].items() if v > c['clusters']])} kernels. In the int8 artifact the "
        "BatchNorm folded into each conv scales every output channel by its own factor and per-channel "
        "quantization gives each channel its own grid, so the 16 shared "
        f"values survive per channel (most distinct int8 values in one channel: "
        f"{r['cluster_int8_values_per_channel_max']}), not per tensor. The interpreter does the same dense work.",
        "",
        "## Feature distillation",
        "",
    ]
    f = r["features"]
    lines += [
        "| student | float top-1 % | int8 top-1 % | feature term per epoch |",
        "|---|---|---|---|",
        f"| with the feature term | {f['with']['top1_float'] * 100:.2f} | {f['with']['top1_int8'] * 100:.2f} | "
        + " -> ".join(f"{v:.4f}" for v in f["with"]["feature_loss"])
        + " |",
        f"| without | {f['without']['top1_float'] * 100:.2f} | {f['without']['top1_int8'] * 100:.2f} | - |",
        "",
        f"Adapters (student channels -> teacher channels): {f['with'].get('adapters')}.",
        "",
        "## 4-bit weights (MobileNetV2, `quantize.int4_layers: ['*']`)",
        "",
        "| target | int8 KB | with 4-bit weights KB | ops with 4-bit weights | int8 top-1 % | 4-bit top-1 % | passed |",
        "|---|---|---|---|---|---|---|",
    ]
    for t, v in r["int4"].items():
        lines.append(
            f"| {t} | {v['int8']['size_bytes'] / 1024:.1f} | {v['int4']['size_bytes'] / 1024:.1f} | {v['int4']['ops']} "
            f"| {v['int8']['top1'] * 100:.2f} | {v['int4']['top1'] * 100:.2f} | {v['int4']['passed']} |"
        )
    lines += [
        "",
        "Depthwise convolutions keep 8-bit weights (ai-edge-quantizer 0.10.0 gives them no 4-bit weights), and so do "
        "all ops on Ethos-U (Vela 5.2.0 crashes on INT4 tensors) and the Edge TPU: "
        "[toolchain/quantize/int4_ops.yaml](../toolchain/quantize/int4_ops.yaml).",
    ]
    return "\n".join(lines) + "\n"


def detail(result: dict) -> str:
    return render(result["data"])


def values(result: dict) -> dict[str, str]:
    d = result["data"]
    out = {}
    for key, part in d["lowrank"].items():
        lr, lat = part["step"], d["host_latency"][key]
        base, low = lat["base"]["median_ms"], lat["lowrank"]["median_ms"]
        ops = d["lowrank_targets"][key]["phone-cpu"]
        out[f"{key}_macs"] = f"−{lr['factorized_macs_removed'] * 100:.1f} %"
        out[f"{key}_layers"] = str(len(lr["layers"]))
        out[f"{key}_top1"] = f"{lr['top1_after'] * 100:.2f} %"
        out[f"{key}_control"] = f"{part['control_top1'] * 100:.2f} %"
        out[f"{key}_host"] = f"{base:.3f} → {low:.3f} ms (**{base / low:.2f}×**"
        out[f"{key}_ops"] = f"{ops['base']['ops']} → {ops['lowrank']['ops']} ops"
        out[f"{key}_epochs"] = str(lr["epochs"])
    c, s = d["cluster"], d["sizes"]

    def gz(a: str, b: str) -> str:
        x, y = s[a]["size_gzip_bytes"], s[b]["size_gzip_bytes"]
        return f"{x / 1024:.0f} → {y / 1024:.0f} KB ({x / y:.2f}×)"

    out["cluster_kernels"] = str(len(c["clustered_layers"]))
    out["cluster_max"] = str(c["max_unique_values"])
    out["cluster_left"] = str(len([n for n, v in c["unique_values"].items() if v > c["clusters"]]))
    out["cluster_channel_max"] = str(d["cluster_int8_values_per_channel_max"])
    out["cluster_int8"] = gz("int8", "int8 clustered")
    out["cluster_float32"] = gz("float32", "float32 clustered")
    f = d["features"]
    loss = f["with"]["feature_loss"]
    out["features"] = (
        f"feature term {loss[0]:.3f} → {loss[-1]:.3f}; top-1 with / without it: float "
        f"{f['with']['top1_float'] * 100:.2f} / {f['without']['top1_float'] * 100:.2f} %, int8 "
        f"{f['with']['top1_int8'] * 100:.2f} / {f['without']['top1_int8'] * 100:.2f} %"
    )
    out["features_epochs"] = str(f["step"]["epochs"])
    i4 = d["int4"]
    out["int4"] = (
        f"{i4['phone-cpu']['int4']['ops']} ops 4-bit (depthwise stay 8-bit): "
        f"{i4['phone-cpu']['int8']['size_bytes'] / 1024:.0f} → {i4['phone-cpu']['int4']['size_bytes'] / 1024:.0f} KB; "
        + "top-1 "
        + ", ".join(f"{t} {v['int8']['top1'] * 100:.2f} → {v['int4']['top1'] * 100:.2f} %" for t, v in i4.items())
    )
    return out


def metrics(result: dict) -> dict[str, float]:
    d = result["data"]
    out = {}
    for key, part in d["lowrank"].items():
        out[f"{key}.factorized_macs_removed_pct"] = round(100 * part["step"]["factorized_macs_removed"], 1)
        out[f"{key}.lowrank_top1_pct"] = round(100 * part["step"]["top1_after"], 2)
        lat = d["host_latency"][key]
        out[f"{key}.host_speedup"] = round(lat["base"]["median_ms"] / lat["lowrank"]["median_ms"], 2)
    for t, v in d["int4"].items():
        out[f"int4.{t}.top1_pct"] = round(100 * v["int4"]["top1"], 2)
    return out


if __name__ == "__main__":
    sys.exit(main())

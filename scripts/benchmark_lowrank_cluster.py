#!/usr/bin/env python
"""Low-rank factorization, weight clustering and feature distillation on digits MobileNetV2 (alpha 0.35, 96x96).

Builds, sharing the trained float model through the build cache:
  - recipes/mobilenet.yaml (no compression) and recipes/compression/mobilenet-lowrank.yaml, for the same four
    targets: MACs of the factorized layers before/after, float and int8 top-1, each target's latency figure
    (measured on the host for phone-cpu, estimated for the others), and both int8 artifacts timed on the host
    with LiteRT side by side (interleaved rounds);
  - recipes/compression/mobilenet-cluster16.yaml: distinct values per kernel after stripping, distinct int8
    values per output channel in the artifact, raw and gzip'd size against the unclustered artifact (int8, and
    the same two models converted to float32);
  - recipes/compression/mobilenet-l1-features.yaml and the same recipe without its feature pairs: the feature
    term over the fine-tuning epochs and both students' top-1.
Writes docs/benchmark-lowrank-cluster.md and .json.

    python scripts/benchmark_lowrank_cluster.py [--out build] [--rounds 15] [--invokes 40]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchmark_compression import latencies  # noqa: E402

from toolchain.config import load_recipe  # noqa: E402
from toolchain.fsutil import atomic_write, setup_logging  # noqa: E402
from toolchain.pipeline import build  # noqa: E402

COMPRESSION = ROOT / "recipes" / "compression"


def _build(recipe, targets=None, out=None) -> dict:
    print(f"building {recipe.name}", file=sys.stderr)
    return build(recipe, targets, out).model_dump(mode="json")


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "build")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--invokes", type=int, default=40)
    ap.add_argument("--docs", type=Path, default=ROOT / "docs")
    args = ap.parse_args()
    setup_logging()

    lowrank_recipe = load_recipe(COMPRESSION / "mobilenet-lowrank.yaml")
    targets = list(lowrank_recipe.targets)
    base = _build(load_recipe(ROOT / "recipes" / "mobilenet.yaml"), targets, args.out)
    lowrank = _build(lowrank_recipe, None, args.out)
    cluster_recipe = load_recipe(COMPRESSION / "mobilenet-cluster16.yaml")
    cluster = _build(cluster_recipe, None, args.out)
    base_f32 = _build(_float32(load_recipe(ROOT / "recipes" / "mobilenet.yaml")), ["phone-cpu"], args.out)
    cluster_f32 = _build(_float32(cluster_recipe), None, args.out)
    feat_recipe = load_recipe(COMPRESSION / "mobilenet-l1-features.yaml")
    step = feat_recipe.compress[0]
    plain_step = step.model_copy(update={"distill": step.distill.model_copy(update={"features": []})})
    plain_recipe = feat_recipe.model_copy(update={"name": "mobilenet-l1-nofeatures", "compress": [plain_step]})
    with_features = _build(feat_recipe, None, args.out)
    without_features = _build(plain_recipe, None, args.out)

    res = lambda rec, t="phone-cpu": next(r for r in rec["results"] if r["target"] == t)  # noqa: E731
    lat = latencies(
        {"base": Path(res(base)["artifact"]), "lowrank": Path(res(lowrank)["artifact"])},
        args.threads,
        args.rounds,
        args.invokes,
    )
    lr = lowrank["compression"][0]
    float_top1 = res(base)["metrics"]["reference_top1"]
    per_target = {
        t: {
            name: {
                "ms": res(rec, t)["latency"]["ms"] if res(rec, t).get("latency") else None,
                "kind": res(rec, t)["latency"]["kind"] if res(rec, t).get("latency") else None,
                "source": res(rec, t)["latency"]["source"] if res(rec, t).get("latency") else None,
                "top1": res(rec, t)["metrics"]["top1"] if res(rec, t).get("metrics") else None,
                "ops": sum(res(rec, t)["ops"].values()),
            }
            for name, rec in (("base", base), ("lowrank", lowrank))
        }
        for t in targets
    }
    cl = cluster["compression"][0]
    channel_values = int8_values_per_channel(Path(res(cluster)["artifact"]))
    fw, fo = with_features["compression"][0], without_features["compression"][0]
    pts = lambda a: a * 100  # noqa: E731
    checks = [
        (
            "low-rank: >= 30 % fewer MACs in the factorized layers",
            f"{pts(lr['factorized_macs_removed']):.1f} % ({lr['factorized_macs_before']:,} -> "
            f"{lr['factorized_macs_after']:,}; whole model {lr['macs_before']:,} -> {lr['macs_after']:,})",
            lr["factorized_macs_removed"] >= 0.30,
        ),
        (
            "low-rank: float top-1 after fine-tuning within 1.5 points of the unfactorized model",
            f"{pts(lr['top1_after']):.2f} vs {pts(lr['top1_before']):.2f}",
            lr["top1_after"] >= lr["top1_before"] - 0.015,
        ),
        (
            "(info) low-rank: int8 top-1 on phone-cpu",
            f"{pts(res(lowrank)['metrics']['top1']):.2f} vs {pts(res(base)['metrics']['top1']):.2f}",
            None,
        ),
        (
            "(info) low-rank: host latency, int8 on LiteRT, side by side",
            f"{lat['base']['median_ms']:.3f} -> {lat['lowrank']['median_ms']:.3f} ms "
            f"({lat['base']['median_ms'] / lat['lowrank']['median_ms']:.2f}x)",
            None,
        ),
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
    result = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "python": platform.python_version(),
        },
        "tool_versions": base["tool_versions"],
        "eval_samples": base["eval_samples"],
        "float_top1": float_top1,
        "threads": args.threads,
        "rounds": args.rounds,
        "invokes_per_round": args.invokes,
        "checks": [{"check": c, "measured": m, "passed": ok if ok is None else bool(ok)} for c, m, ok in checks],
        "lowrank": {k: v for k, v in lr.items() if k != "history"},
        "lowrank_targets": per_target,
        "host_latency": lat,
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
    args.docs.mkdir(exist_ok=True)
    atomic_write(args.docs / "benchmark-lowrank-cluster.json", json.dumps(result, indent=2, default=float) + "\n")
    atomic_write(args.docs / "benchmark-lowrank-cluster.md", render(result))
    print(render(result))
    return 0 if all(ok for _, _, ok in checks if ok is not None) else 1


def render(r: dict) -> str:
    lr = r["lowrank"]
    lines = [
        "# Low-rank factorization, weight clustering, feature distillation (digits, MobileNetV2 alpha 0.35, 96x96)",
        "",
        f"Generated by `python scripts/benchmark_lowrank_cluster.py` on {r['machine']['platform']} "
        f"({r['machine']['processor']}), Python {r['machine']['python']}, TensorFlow "
        f"{r['tool_versions']['tensorflow']}, tfmot {r['tool_versions'].get('tensorflow-model-optimization')}. "
        f"Top-1 on {r['eval_samples']} eval samples; float model top-1 {r['float_top1'] * 100:.2f} %. Host latency: "
        f"LiteRT, {r['threads']} thread(s), median of {r['rounds']} interleaved rounds x {r['invokes_per_round']} "
        "invokes.",
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
    lines += [
        "",
        "## Low-rank: per layer",
        "",
        f"Rule: {lr['macs_removed']:.0%} of each layer's MACs removed (`macs_removed`), {lr['epochs']} distilled "
        f"fine-tuning epochs. Top-1 right after factorization {lr['top1_after_factorization'] * 100:.2f} %, after "
        f"fine-tuning {lr['top1_after'] * 100:.2f} %. Left alone: {len(lr['skipped'])} layers.",
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
        "## Low-rank: each target's latency figure",
        "",
        "| target | before ms | after ms | kind | ops before | ops after | int8 top-1 before | after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t, v in r["lowrank_targets"].items():
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
        f"{c['max_unique_values']}. In the int8 artifact the BatchNorm folded into each conv scales every output "
        "channel by its own factor and per-channel quantization gives each channel its own grid, so the 16 shared "
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
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

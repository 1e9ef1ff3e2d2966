"""Quantization parameters optimized, not only measured: minmax vs mse vs eq (EasyQuant) vs admm vs adaround.

    python -m benchmarks.rounding [--out /tmp/bench-rounding] [--part collapse|int4|all]

**mobilenet**: recipes/mobilenet.yaml as it is (8-bit, its four targets) with each method: what each adds to a
cold build (the optimization's seconds, summed over the targets that quantize anew) and its top-1.
**collapse**: the per-tensor collapse case of the calibration benchmark (a small ReLU CNN whose channels are
rescaled over 100x, the float function unchanged; ``benchmarks.calibration.collapse_model``), per-tensor weights.
**int4**: recipes/mobilenet.yaml's MobileNetV2 with every conv / dense layer in 4-bit weights
(``quantize.int4_layers: ['*']``), and the same model all int8 (minmax) as the reference. Each variant is one
cold-cache-free ``toolchain build`` for phone-cpu (LiteRT) and cortex-m7 (tflite-micro), sharing the trained
model and the calibration through the build cache: only the ranges or the weights' rounding change. Reads each
artifact's top-1 on the eval split, the float reference's, and the optimization's own seconds and per-layer
output error from ``quantization.optimization``. Writes benchmarks/results/rounding.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from benchmarks import common

NAME = "rounding"
METHODS = {
    "minmax": {"calibration": "minmax"},
    "mse": {"calibration": "mse"},
    "eq": {"calibration": "eq"},
    "admm": {"calibration": "minmax", "rounding": "admm"},
    "adaround": {"calibration": "minmax", "rounding": "adaround"},
}
CASES = {
    "collapse": {"per_channel": False},
    "int4": {"per_channel": True, "int4_layers": ["*"]},
    "mobilenet": {},
}
TARGETS = ["phone-cpu", "cortex-m7"]


def _recipe(out: Path, name: str, base: dict, quantize: dict, targets=TARGETS) -> Path:
    tree = dict(base)
    tree["name"] = name
    tree["quantize"] = {**tree.get("quantize", {}), **quantize}
    tree["targets"] = list(targets)
    tree["acceptance"] = {"max_accuracy_drop": 100}  # a result either way
    path = out / "recipes" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def _rows(record: dict, case: str, method: str) -> list[dict]:
    rows = []
    for r in record["results"]:
        opt = (r.get("quantization") or {}).get("optimization") or {}
        layers = opt.get("layers", [])
        rows.append(
            {
                "case": case,
                "method": method,
                "target": r["target"],
                "float_top1": r["metrics"]["reference_top1"],
                "top1": r["metrics"]["top1"],
                "size_bytes": r["size_bytes"],
                "seconds": opt.get("seconds"),
                "layers": len(layers),
                "error_before": sum(x["error_before"] for x in layers) / len(layers) if layers else None,
                "error_after": sum(x["error_after"] for x in layers) / len(layers) if layers else None,
                "timings": record["timings_s"],
            }
        )
    return rows


def part(out: Path, case: str) -> list[dict]:
    if case == "collapse":
        from benchmarks.calibration import COLLAPSE_RECIPE, collapse_model

        model = collapse_model(out / "collapse")
        base = yaml.safe_load(COLLAPSE_RECIPE.format(name="x", model=model, quantize="calibration: minmax"))
    else:
        base = yaml.safe_load((common.REPO / "recipes" / "mobilenet.yaml").read_text())
    rows = []
    variants = dict(METHODS)
    targets = base["targets"] if case == "mobilenet" else TARGETS
    for method, quantize in variants.items():
        q = {**quantize, **CASES[case]}
        path = _recipe(out, f"{case}-{method}", base, q, targets)
        built = common.toolchain_build(path, out / "build")
        rows += [{**r, "wall_s": round(built.wall_s, 1)} for r in _rows(built.record, case, method)]
    if case == "int4":  # the reference: the same model all int8
        q = {"calibration": "minmax", "per_channel": True}
        rows += _rows(common.toolchain_build(_recipe(out, "int8", base, q), out / "build").record, "int8", "minmax")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(f"benchmarks.{NAME}", __doc__)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-rounding"))
    ap.add_argument("--part", choices=[*CASES, "all"], default="all")
    args = ap.parse_args(argv)
    path = common.result_path(NAME, args.results)
    data = common.load_result(NAME, args.results)["data"] if path.exists() else {"rows": []}
    for case in CASES:
        if args.part in (case, "all"):
            data["rows"] = [
                r for r in data["rows"] if r["case"] != case and not (case == "int4" and r["case"] == "int8")
            ]
            data["rows"] += part(args.out.resolve(), case)
    common.write_result(NAME, data, args.results, argv)
    return 0


def _order(target: str) -> int:
    order = ["phone-cpu", "cortex-m7", "ethos-u55-128", "edgetpu"]
    return order.index(target) if target in order else len(order)


def _top1(rows, case, method, target):
    return next((r for r in rows if (r["case"], r["method"], r["target"]) == (case, method, target)), None)


def values(result: dict) -> dict[str, str]:
    rows = result["data"]["rows"]
    tables = {}
    for case in CASES:
        lines = []
        targets = sorted({r["target"] for r in rows if r["case"] == case}, key=_order) or TARGETS
        for method in METHODS:
            cells = [method]
            for t in targets:
                r = _top1(rows, case, method, t)
                cells.append("-" if r is None else f"{100 * r['top1']:.2f}")
            r = _top1(rows, case, method, TARGETS[0])
            err = f"{r['error_before']:.3g} → {r['error_after']:.3g}" if r and r["error_before"] is not None else "-"
            secs = [x["seconds"] for x in rows if x["case"] == case and x["method"] == method and x["seconds"]]
            cells += [err, f"{sum(secs):.1f}" if secs else "-"]
            lines.append(cells)
        head = ["method", *(f"{t} top-1 %" for t in targets), "layer output error (mean, before → after)", "s added"]
        tables[case] = common.table(head, lines)
    ref = {t: _top1(rows, "int8", "minmax", t) for t in TARGETS}
    gaps = []
    for t in TARGETS:
        a = _top1(rows, "int4", "adaround", t)
        if a and ref[t]:
            gap = 100 * (ref[t]["top1"] - a["top1"])
            gaps.append(f"{t}: {gap:+.2f} points ({'within' if gap <= 1.0 else 'not within'} 1.0)")
    floats = {c: next((r["float_top1"] for r in rows if r["case"] == c), None) for c in CASES}
    return {
        "collapse": tables["collapse"],
        "int4": tables["int4"],
        "mobilenet": tables["mobilenet"],
        "int8_ref": ", ".join(f"{t} {100 * r['top1']:.2f} %" for t, r in ref.items() if r),
        "gap": "; ".join(gaps),
        "float_collapse": f"{100 * floats['collapse']:.2f}" if floats["collapse"] else "-",
        "float_int4": f"{100 * floats['int4']:.2f}" if floats["int4"] else "-",
    }


def metrics(result: dict) -> dict[str, float]:
    return {
        f"{r['case']}.{r['method']}.{r['target']}.top1_pct": round(100 * r["top1"], 2)
        for r in result["data"]["rows"]
        if r["method"] in ("minmax", "adaround")
    }


if __name__ == "__main__":
    sys.exit(main())

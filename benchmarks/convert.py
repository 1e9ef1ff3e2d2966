"""The convert stage of a cold build, this checkout against a baseline checkout, side by side in one run.

    git worktree add /tmp/baseline <commit>
    python -m benchmarks.convert --baseline-src /tmp/baseline [--recipe recipes/mobilenet.yaml] [--runs 2]

Each run is a cold ``python -m toolchain build RECIPE --out <fresh folder>`` (no cache: data, training, conversion
and checks all run) of each checkout in turn, so both see the same machine load. The convert stage's seconds come
from each build's ``build.json`` (``timings_s.convert``). Writes benchmarks/results/convert.json: per variant the
runs, the median ratio, and whether this checkout's cold builds gave byte-identical artifacts.
"""

from __future__ import annotations

import shutil
import statistics
import sys
from pathlib import Path

from benchmarks import common

NAME = "convert"
#: the variants, in the order each round builds them
CASES = ("baseline", "this checkout")


def cold_build(src: Path, recipe: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    record = common.toolchain_build(src / recipe, out, src=src, accept=()).record
    return {
        "convert": record["timings_s"]["convert"],
        "total": record["timings_s"]["total"],
        "sha256": {r["target"]: r["sha256"] for r in record["results"]},
        "top1": {r["target"]: r["metrics"]["top1"] for r in record["results"]},
    }


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(f"benchmarks.{NAME}", __doc__)
    ap.add_argument("--baseline-src", type=Path, required=True, help="another checkout (e.g. a git worktree of main)")
    ap.add_argument("--baseline-label", default="baseline", help="its name in the table, e.g. 'baseline (bd0d90c)'")
    ap.add_argument("--recipe", type=Path, default=Path("recipes/mobilenet.yaml"), help="relative to each checkout")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-convert"))
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args(argv)
    srcs = {"baseline": args.baseline_src.resolve(), "this checkout": common.REPO}
    runs = common.interleave(
        {
            name: (lambda name=name: cold_build(srcs[name], args.recipe, args.out / name.replace(" ", "-")))
            for name in CASES
        },
        args.runs,
    )
    ours = runs["this checkout"]
    data = {
        "recipe": str(args.recipe),
        "runs": args.runs,
        "variants": {
            (args.baseline_label if name == "baseline" else name): {
                "convert_s": [round(r["convert"], 1) for r in rs],
                "convert_median_s": round(statistics.median(r["convert"] for r in rs), 1),
                "total_median_s": round(statistics.median(r["total"] for r in rs), 1),
                "top1": rs[-1]["top1"],
            }
            for name, rs in runs.items()
        },
        "identical_artifacts": all(r["sha256"] == ours[0]["sha256"] for r in ours),
    }
    common.write_result(NAME, data, args.results, argv)
    print(values({"data": data})["table"])
    return 0


def ratio(data: dict) -> float:
    base, ours = data["variants"].values()
    return ours["convert_median_s"] / base["convert_median_s"]


def values(result: dict) -> dict[str, str]:
    d = result["data"]
    rows = [
        [
            name,
            f"{v['convert_median_s']:.1f}",
            ", ".join(f"{s:.1f}" for s in v["convert_s"]),
            f"{v['total_median_s']:.1f}",
            ", ".join(f"{t} {x:.4f}" for t, x in v["top1"].items()),
        ]
        for name, v in d["variants"].items()
    ]
    header = ["variant", "convert s (median)", "convert s (runs)", "build total s (median)", "top-1 per target"]
    return {
        "table": common.table(header, rows),
        "ratio": f"{ratio(d):.2f}x",
        "runs": str(d["runs"]),
        "identical": "identical" if d["identical_artifacts"] else "DIFFERENT",
    }


def metrics(result: dict) -> dict[str, float]:
    return {"convert_ratio": round(ratio(result["data"]), 2)}


if __name__ == "__main__":
    sys.exit(main())

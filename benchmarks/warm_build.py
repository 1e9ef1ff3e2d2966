"""Wall-clock time of a warm rebuild (unchanged inputs, everything cached) of a recipe, median of N runs.

    python -m benchmarks.warm_build [--recipe recipes/mobilenet.yaml] [--out /tmp/warm] [--runs 5]
        [--baseline-src /path/to/other/checkout --baseline-out /tmp/warm-baseline]

Each run is a fresh ``python -m toolchain build RECIPE --out OUT`` process (start-up and imports count, as they do
for a user). A first, untimed build fills the cache (cold: minutes). With ``--baseline-src`` the same is done for
another checkout of the toolchain (e.g. a ``git worktree`` of main) and the runs are interleaved, so both see the
same machine load. Writes benchmarks/results/warm_build.json.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from benchmarks import common

NAME = "warm_build"
#: the variants timed: name -> (checkout, build folder); the baseline only with --baseline-src
CASES = {"this checkout": ("{repo}", "{out}"), "baseline": ("{baseline_src}", "{baseline_out}")}


def summary(times: list[float]) -> dict:
    return {
        "runs_s": [round(t, 3) for t in times],
        "median_s": round(statistics.median(times), 2),
        "min_s": round(min(times), 2),
        "max_s": round(max(times), 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(f"benchmarks.{NAME}", __doc__)
    ap.add_argument("--recipe", type=Path, default=Path("recipes/mobilenet.yaml"), help="relative to each checkout")
    ap.add_argument("--out", type=Path, default=Path("/tmp/warm-build"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--baseline-src", type=Path, help="another checkout of the toolchain to time side by side")
    ap.add_argument("--baseline-out", type=Path, default=Path("/tmp/warm-build-baseline"))
    args = ap.parse_args(argv)
    where = {
        "repo": common.REPO,
        "out": args.out,
        "baseline_src": (args.baseline_src or Path()).resolve(),
        "baseline_out": args.baseline_out,
    }
    variants = {
        name: (Path(src.format(**where)), Path(out.format(**where)))
        for name, (src, out) in CASES.items()
        if name != "baseline" or args.baseline_src
    }
    for name, (src, out) in variants.items():
        print(f"{name}: first build (fills the cache; cold builds take minutes) ...", file=sys.stderr)
        common.toolchain_build(src / args.recipe, out, src=src, accept=())
    times = common.interleave(
        {
            name: (lambda src=src, out=out: common.toolchain_build(src / args.recipe, out, src=src, accept=()).wall_s)
            for name, (src, out) in variants.items()
        },
        args.runs,
    )
    data = {
        "recipe": str(args.recipe),
        "runs": args.runs,
        "variants": {name: summary(t) for name, t in times.items()},
        "followup": None,
    }
    common.write_result(NAME, data, args.results, argv)
    print(variants_table(data))
    return 0


def variants_table(data: dict) -> str:
    return common.table(
        ["variant", f"median s (of {data['runs']})", "min s", "max s"],
        [[n, f"{v['median_s']:.2f}", f"{v['min_s']:.2f}", f"{v['max_s']:.2f}"] for n, v in data["variants"].items()],
    )


def values(result: dict) -> dict[str, str]:
    d = result["data"]
    f = d.get("followup")
    followup = (
        f"{f['label']}: {f['median_s']:.2f} s median ({f['min_s']:.2f}–{f['max_s']:.2f}, {f['runs']} runs)."
        if f
        else ""
    )
    return {"recipe": d["recipe"], "table": variants_table(d), "followup": followup}


def metrics(result: dict) -> dict[str, float]:
    first = next(iter(result["data"]["variants"].values()))
    return {"median_s": first["median_s"]}


if __name__ == "__main__":
    sys.exit(main())

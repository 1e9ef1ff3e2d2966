"""Wall-clock time of a warm rebuild (unchanged inputs, everything cached) of a recipe, median of N runs.

    python scripts/benchmark_warm_build.py [--recipe recipes/mobilenet.yaml] [--out /tmp/warm] [--runs 5]
        [--baseline-src /path/to/other/checkout --baseline-out /tmp/warm-baseline]

Each run is a fresh ``python -m toolchain build RECIPE --out OUT`` process (start-up and imports count,
as they do for a user). A first, untimed build fills the cache (cold: minutes). With ``--baseline-src``
the same is done for another checkout of the toolchain (e.g. a ``git worktree`` of main) and the runs
are interleaved, so both see the same machine load; the result is printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build(src: Path, recipe: Path, out: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "toolchain", "build", str(recipe), "--out", str(out)],
        cwd=src,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"build in {src} failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", type=Path, default=Path("recipes/mobilenet.yaml"), help="relative to each checkout")
    p.add_argument("--out", type=Path, default=Path("/tmp/warm-build"))
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--baseline-src", type=Path, help="another checkout of the toolchain to time side by side")
    p.add_argument("--baseline-out", type=Path, default=Path("/tmp/warm-build-baseline"))
    args = p.parse_args()
    variants = {"this checkout": (REPO, args.out)}
    if args.baseline_src:
        variants["baseline"] = (args.baseline_src.resolve(), args.baseline_out)
    for name, (src, out) in variants.items():
        print(f"{name}: first build (fills the cache; cold builds take minutes) ...", file=sys.stderr)
        build(src, src / args.recipe, out)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(args.runs):
        for name, (src, out) in variants.items():
            times[name].append(build(src, src / args.recipe, out))
            print(f"run {i + 1}/{args.runs} {name}: {times[name][-1]:.2f} s", file=sys.stderr)
    print(f"| variant | median s (of {args.runs}) | min s | max s |\n|---|---|---|---|")
    for name, t in times.items():
        print(f"| {name} | {statistics.median(t):.2f} | {min(t):.2f} | {max(t):.2f} |")


if __name__ == "__main__":
    main()

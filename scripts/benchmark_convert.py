"""The convert stage of a cold build, this checkout against a baseline checkout, side by side in one run.

    git worktree add /tmp/baseline <commit>
    python scripts/benchmark_convert.py --baseline-src /tmp/baseline [--recipe recipes/mobilenet.yaml] [--runs 2]

Each run is a cold ``python -m toolchain build RECIPE --out <fresh folder>`` (no cache: data, training,
conversion and checks all run) of each checkout in turn, so both see the same machine load. The convert stage's
seconds come from each build's ``build.json`` (``timings_s.convert``: here tracing, calibration and quantization
of every target; in the baseline, the converter once per target). Prints a Markdown table with the median ratio,
and whether this checkout's cold builds gave byte-identical artifacts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cold_build(src: Path, recipe: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.run(
        [sys.executable, "-m", "toolchain", "build", str(src / recipe), "--out", str(out)],
        cwd=src,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"build in {src} failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    record = json.loads((out / recipe.stem / "build.json").read_text())
    return {
        "convert": record["timings_s"]["convert"],
        "total": record["timings_s"]["total"],
        "sha256": {r["target"]: r["sha256"] for r in record["results"]},
        "top1": {r["target"]: r["metrics"]["top1"] for r in record["results"]},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline-src", type=Path, required=True, help="another checkout (e.g. a git worktree of main)")
    p.add_argument("--recipe", type=Path, default=Path("recipes/mobilenet.yaml"), help="relative to each checkout")
    p.add_argument("--out", type=Path, default=Path("/tmp/bench-convert"))
    p.add_argument("--runs", type=int, default=2)
    args = p.parse_args()
    variants = {"baseline": args.baseline_src.resolve(), "this checkout": REPO}
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for i in range(args.runs):
        for name, src in variants.items():
            r = cold_build(src, args.recipe, args.out / name.replace(" ", "-"))
            runs[name].append(r)
            print(
                f"run {i + 1}/{args.runs} {name}: convert {r['convert']:.1f} s, total {r['total']:.1f} s",
                file=sys.stderr,
            )
    print("| variant | convert s (median) | convert s (runs) | build total s (median) | top-1 per target |")
    print("|---|---|---|---|---|")
    for name, rs in runs.items():
        top1 = ", ".join(f"{t} {v:.4f}" for t, v in rs[-1]["top1"].items())
        each = ", ".join(f"{r['convert']:.1f}" for r in rs)
        convert = statistics.median(r["convert"] for r in rs)
        total = statistics.median(r["total"] for r in rs)
        print(f"| {name} | {convert:.1f} | {each} | {total:.1f} | {top1} |")
    ratio = statistics.median(r["convert"] for r in runs["this checkout"]) / statistics.median(
        r["convert"] for r in runs["baseline"]
    )
    print(f"\nconvert stage, this checkout / baseline: **{ratio:.2f}x**")
    same = all(r["sha256"] == runs["this checkout"][0]["sha256"] for r in runs["this checkout"])
    print(f"this checkout's {args.runs} cold builds gave {'identical' if same else 'DIFFERENT'} artifacts (sha256)")


if __name__ == "__main__":
    main()

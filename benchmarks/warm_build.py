"""Wall-clock time of a warm rebuild (unchanged inputs, everything cached) of a recipe, median of N runs.

    python -m benchmarks.warm_build [--recipe recipes/mobilenet.yaml] [--out /tmp/warm] [--runs 5]
        [--baseline-src /path/to/other/checkout --baseline-out /tmp/warm-baseline]

Each run is a fresh ``python -m toolchain build RECIPE --out OUT`` process (start-up and imports count, as they do
for a user). A first, untimed build fills the cache (cold: minutes). With ``--baseline-src`` the same is done for
another checkout of the toolchain (e.g. a ``git worktree`` of main) and the runs are interleaved, so both see the
same machine load. Writes benchmarks/results/warm_build.json.

Bytecode: by default each checkout's modules are imported from their ``.pyc`` files, as on a user's install (pip
writes them for site-packages; Python writes them for a source checkout on its first run): the variable
``PYTHONDONTWRITEBYTECODE`` is removed from the builds' environment. ``--no-bytecode`` measures the other case,
which machines that set that variable see: each checkout's ``toolchain/**/__pycache__`` is removed first and never
written, so every toolchain module is compiled from source on every run (site-packages keep their ``.pyc``).
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
    ap.add_argument(
        "--callgrind",
        action="store_true",
        help="also count each variant's instructions once under valgrind --tool=callgrind (repeatable on a noisy "
        "machine, where seconds are not)",
    )
    ap.add_argument(
        "--no-bytecode",
        action="store_true",
        help="compile the toolchain's modules from source on every run (PYTHONDONTWRITEBYTECODE=1, no __pycache__)",
    )
    args = ap.parse_args(argv)
    env = _environment(args.no_bytecode)
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
        if args.no_bytecode:
            _remove_bytecode(src)
        common.toolchain_build(src / args.recipe, out, src=src, accept=(), env=env)
    times = common.interleave(
        {
            name: (
                lambda src=src, out=out: (
                    common.toolchain_build(src / args.recipe, out, src=src, accept=(), env=env).wall_s
                )
            )
            for name, (src, out) in variants.items()
        },
        args.runs,
    )
    label = {"baseline": f"baseline ({_commit(args.baseline_src)})"} if args.baseline_src else {}
    data = {
        "recipe": str(args.recipe),
        "runs": args.runs,
        "bytecode": not args.no_bytecode,
        "variants": {label.get(name, name): summary(t) for name, t in times.items()},
        "followup": None,
        "in_process_s": in_process(variants["this checkout"][0] / args.recipe, variants["this checkout"][1]),
        "instructions": (
            {label.get(n, n): instructions(src / args.recipe, out, src) for n, (src, out) in variants.items()}
            if args.callgrind
            else None
        ),
    }
    common.write_result(NAME, data, args.results, argv)
    print(variants_table(data))
    return 0


def _environment(no_bytecode: bool) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return env | {"PYTHONDONTWRITEBYTECODE": "1"} if no_bytecode else env


def _remove_bytecode(src: Path) -> None:
    import shutil

    for folder in (src / "toolchain").rglob("__pycache__"):
        shutil.rmtree(folder)


IN_PROCESS = """
import contextlib, io, statistics, sys, time
from toolchain.cli.main import main
def once():
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main(["build", sys.argv[1], "--out", sys.argv[2]])
    return time.perf_counter() - t
once()  # the first build imports what a build needs
print(statistics.median(once() for _ in range(5)))
"""


def in_process(recipe: Path, out: Path) -> float:
    """Median seconds of a warm build once everything is imported (five builds in one process after a first)."""
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-c", IN_PROCESS, str(recipe), str(out)], cwd=common.REPO, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise common.BenchmarkError(f"in-process warm builds failed: {proc.stderr.strip().splitlines()[-1:]}")
    return round(float(proc.stdout.split()[-1]), 3)


def instructions(recipe: Path, out: Path, src: Path) -> int:
    """Instructions one warm build executes (``valgrind --tool=callgrind``; about 30x slower than a run)."""
    import re
    import subprocess

    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    cmd += [sys.executable, "-m", "toolchain", "build", str(recipe), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=src, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or not found:
        raise common.BenchmarkError(f"callgrind of a warm build in {src} failed (exit {proc.returncode})")
    return int(found.group(1))


def _commit(src: Path) -> str:
    """The checkout's commit (``main at 1a2b3c4``), or its path when it is not a git checkout."""
    import subprocess

    out = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return f"main at {out.stdout.strip()}" if out.returncode == 0 else str(src)


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
    counts = d.get("instructions")
    instr = (
        "Instructions of one warm build (`--callgrind`; repeatable where seconds are not): "
        + ", ".join(f"{name} {n / 1e9:.2f} G" for name, n in counts.items())
        + "."
        if counts
        else ""
    )
    inside = d.get("in_process_s")
    bytecode = d.get("bytecode")
    median = next(iter(d["variants"].values()))["median_s"]
    return {
        "reached": f"{'reached' if median <= 0.5 else 'not reached'} ({median:.2f} s here)",
        "bytecode": {
            True: "Modules imported from their `.pyc` files, as on a user's install (`PYTHONDONTWRITEBYTECODE` unset).",
            False: "`--no-bytecode`: every toolchain module compiled from source on every run.",
            None: "",
        }[bytecode],
        "recipe": d["recipe"],
        "table": variants_table(d),
        "followup": followup,
        "instructions": instr,
        "in_process": f"{inside * 1000:.0f} ms" if inside is not None else "(not measured)",
    }


def metrics(result: dict) -> dict[str, float]:
    first = next(iter(result["data"]["variants"].values()))
    return {"median_s": first["median_s"]}


if __name__ == "__main__":
    sys.exit(main())

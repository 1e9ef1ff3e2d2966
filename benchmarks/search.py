"""Device-constrained search of the digits MobileNetV2 family on a local Dask cluster; trials per second with two
workers against one.

    python -m benchmarks.search [--out /tmp/search-bench] [--part all|search|scaling] [--pairs 1]

``search``: ``toolchain search recipes/mobilenet-search.yaml --workers 2`` (24 trials per target, cortex-m4 and
ethos-u55-128, cold), then ``recipes/mobilenet.yaml`` built for cortex-m4 as the baseline the search must beat
(as accurate, at least 2x faster), then each ``--write-best`` recipe built again in a fresh folder: the same
artifact (sha256) or not. ``scaling``: the same 12 points (enqueued, all distinct models, no pruner) searched
cold with ``--workers 1`` and ``--workers 2``, interleaved pair by pair; the throughput ratio and where the rest
goes (start-up, the last trial alone, each trial's own time). Writes benchmarks/results/search.json.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmarks import common

NAME = "search"
RECIPE = common.REPO / "recipes" / "mobilenet-search.yaml"
BASELINE = common.REPO / "recipes" / "mobilenet.yaml"
#: the scaling case: 12 distinct models (no two trials share a trained model through the cache)
SCALING_SPACE = {
    "model.alpha": [0.35, 0.5],
    "model.input_shape": [[32, 32, 3], [40, 40, 3], [48, 48, 3]],
    "train.epochs": [3, 5],
}
CASES = {"search": {"workers": 2}, "scaling": {"workers": [1, 2], "trials": 12}}


def search(recipe: Path, out: Path, workers: int, *extra: str) -> tuple[dict, float, str]:
    """``python -m toolchain search``: its record (stdout JSON), wall seconds, stderr."""
    cmd = [sys.executable, "-m", "toolchain", "search", str(recipe), "--build-dir", str(out)]
    cmd += ["--workers", str(workers), "--format", "json", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=common.REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 25):
        raise common.BenchmarkError(f"search failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    print(f"  search {recipe.stem} --workers {workers}: {wall:.0f} s (exit {proc.returncode})", file=sys.stderr)
    return json.loads(proc.stdout), wall, proc.stderr


def _trial(t: dict, n: int) -> dict:
    return next(x for x in t["trials"] if x["number"] == n)


def _point(x: dict) -> dict:
    r = x["result"] or {}
    return {
        "number": x["number"],
        "params": x["params"],
        "top1": r.get("metric"),
        "latency_ms": r.get("latency_ms"),
        "ram_bytes": r.get("ram_bytes"),
        "flash_bytes": r.get("flash_bytes"),
        "sha256": r.get("sha256"),
    }


def part_search(out: Path) -> dict:
    record, wall, _ = search(RECIPE, out / "search", 2, "--write-best", str(out / "best"))
    base = common.toolchain_build(BASELINE, out / "baseline", targets=["cortex-m4"]).record["results"][0]
    baseline = {
        "top1": base["metrics"]["top1"],
        "latency_ms": base["latency"]["ms"],
        "ram_bytes": base["memory"]["ram_bytes"],
    }
    targets = {}
    for t in record["targets"]:
        front = [_point(_trial(t, n)) for n in t["front"]]
        best = _point(_trial(t, t["best"])) if t["best"] is not None else None
        feasible = [_point(x) for x in t["trials"] if x["state"] == "complete" and x["feasible"]]
        targets[t["target"]] = {
            "counts": t["counts"],
            "front": front,
            "best": best,
            "rebuilt": None,
            "feasible": feasible,
            "built": sum(1 for x in t["trials"] if x["state"] != "interrupted" and x.get("seconds")),
        }
    targets = rebuild(out, targets)
    m4 = targets["cortex-m4"]["feasible"]
    goal = [p for p in m4 if p["top1"] >= baseline["top1"] and p["latency_ms"] * 2 <= baseline["latency_ms"]]
    as_good = [p for p in m4 if p["top1"] >= baseline["top1"]]
    closest = min(goal or as_good or m4, key=lambda p: (p["latency_ms"], -p["top1"]), default=None)
    return {
        "wall_s": round(wall, 1),
        "baseline": baseline,
        "targets": targets,
        "goal_met": bool(goal),
        "m4_pick": closest,
    }


def rebuild(out: Path, targets: dict) -> dict:
    """Each target's best recipe (``OUT/best``) built again in a fresh folder: the best trial's artifact or not."""
    shutil.rmtree(out / "rebuild", ignore_errors=True)
    for name, t in targets.items():
        if t["best"] is None:
            continue
        built = common.toolchain_build(out / "best" / f"mobilenet-search-{name}.yaml", out / "rebuild")
        sha = built.record["results"][0]["sha256"]
        t["rebuilt"] = {"sha256": sha, "same": sha == t["best"]["sha256"]}
    return targets


def _scaling_recipe(out: Path) -> Path:
    tree = yaml.safe_load(RECIPE.read_text())
    tree["name"] = "scaling"
    tree["search"] = {
        "trials": 12,
        "seed": 0,
        "targets": ["cortex-m4"],
        "space": SCALING_SPACE,
        "objectives": ["metric", "latency"],
        "pruner": None,
    }
    path = out / "scaling.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def _enqueue(recipe_path: Path, out: Path) -> None:
    """The 12 points of the scaling space queued in the study before the search starts: both runs build the same."""
    import itertools

    from toolchain.config import load_recipe
    from toolchain.config.search import DIRECTIONS
    from toolchain.search import storage
    from toolchain.tuner import study_names

    r = load_recipe(recipe_path)
    db_path = out / r.name / "search.db"
    db_path.parent.mkdir(parents=True, exist_ok=True)
    db = storage.open_storage(storage.url_for(db_path, db_path))
    optuna = storage.quiet_optuna()
    (name,) = study_names(r).values()
    study = storage.open_study(db, name, [DIRECTIONS[o] for o in r.search.objectives], optuna.samplers.TPESampler())
    for combo in itertools.product(*SCALING_SPACE.values()):
        params = {k: (json.dumps(v) if isinstance(v, list) else v) for k, v in zip(SCALING_SPACE, combo, strict=True)}
        study.enqueue_trial(params)


def part_scaling(out: Path, pairs: int) -> dict:
    recipe = _scaling_recipe(out)
    runs: dict[str, list[dict]] = {"1": [], "2": []}
    for i in range(pairs):
        for workers in (1, 2) if i % 2 == 0 else (2, 1):  # ABBA: the machine's drift hits both alike
            folder = out / f"scaling-{workers}-{i}"
            shutil.rmtree(folder, ignore_errors=True)
            _enqueue(recipe, folder)
            record, wall, err = search(recipe, folder, workers)
            (t,) = record["targets"]
            seconds = [x["seconds"] for x in t["trials"] if x.get("seconds")]
            runs[str(workers)].append(
                {
                    "wall_s": round(wall, 1),
                    "trials": len(seconds),
                    "trial_s": [round(s, 1) for s in seconds],
                    "trial_sum_s": round(sum(seconds), 1),
                    "points": sorted(json.dumps(x["params"], sort_keys=True) for x in t["trials"]),
                }
            )
    return {"runs": runs}


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(f"benchmarks.{NAME}", __doc__)
    ap.add_argument("--out", type=Path, default=Path("/tmp/search-bench"))
    ap.add_argument("--part", choices=["all", "search", "rebuild", "scaling"], default="all")
    ap.add_argument("--pairs", type=int, default=1, help="scaling: runs of each worker count (interleaved)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path = common.result_path(NAME, args.results)
    data = json.loads(path.read_text())["data"] if path.exists() else {}
    if args.part in ("all", "search"):
        shutil.rmtree(args.out / "search", ignore_errors=True)
        shutil.rmtree(args.out / "best", ignore_errors=True)
        data["search"] = part_search(args.out)
    if args.part == "rebuild":  # the --write-best recipes of the stored search built again in a fresh folder
        data["search"]["targets"] = rebuild(args.out, data["search"]["targets"])
    if args.part in ("all", "scaling"):
        data["scaling"] = part_scaling(args.out, args.pairs)
    common.write_result(NAME, data, args.results, argv)
    return 0


def _kb(b) -> str:
    return "-" if b is None else f"{b / 1024:.1f}"


def _params(p: dict) -> str:
    from toolchain.search.space import short

    return short(p)


def values(result: dict) -> dict[str, str]:
    d = result["data"]
    s, sc = d["search"], d["scaling"]
    base = s["baseline"]
    fronts = []
    for name, t in s["targets"].items():
        rows = [
            [
                f"{p['number']}{'*' if t['best'] and p['number'] == t['best']['number'] else ''}",
                _params(p["params"]),
                f"{100 * p['top1']:.2f}",
                f"{p['latency_ms']:.3g}",
                _kb(p["ram_bytes"]),
                _kb(p["flash_bytes"]),
            ]
            for p in t["front"]
        ]
        c = t["counts"]
        head = (
            f"**{name}**: {c['finished']} trials finished ({c['complete']} complete, {c['pruned']} pruned, "
            f"{c['failed']} failed), {len(t['feasible'])} feasible, a front of {len(t['front'])}; the best "
            f"(*) rebuilt from its `--write-best` recipe: "
            + ("the same artifact (sha256)" if t["rebuilt"] and t["rebuilt"]["same"] else "**a different artifact**")
        )
        fronts.append(head + "\n\n" + common.table(["#", "point", "top-1 %", "latency ms", "RAM KB", "flash KB"], rows))
    pick = s["m4_pick"]
    speed = base["latency_ms"] / pick["latency_ms"] if pick else float("nan")
    verdict = (
        f"met: trial {pick['number']} ({_params(pick['params'])}) is {100 * pick['top1']:.2f} % at "
        f"{pick['latency_ms']:.3g} ms, {speed:.1f}x faster than the baseline"
        if s["goal_met"]
        else (
            f"not met; the closest feasible point is trial {pick['number']} ({_params(pick['params'])}), "
            f"{100 * pick['top1']:.2f} % at {pick['latency_ms']:.3g} ms ({speed:.1f}x faster)"
            if pick
            else "not met: no feasible cortex-m4 point"
        )
    )
    one, two = sc["runs"]["1"], sc["runs"]["2"]
    ratios = [a["wall_s"] / b["wall_s"] for a, b in zip(one, two, strict=False)]
    rows = [
        [
            w,
            i + 1,
            r["trials"],
            f"{r['wall_s']:.0f}",
            f"{60 * r['trials'] / r['wall_s']:.2f}",
            f"{statistics.median(r['trial_s']):.1f}",
            f"{r['trial_sum_s']:.0f}",
            f"{r['wall_s'] - r['trial_sum_s'] / int(w):.0f}",
        ]
        for w, rs in (("1", one), ("2", two))
        for i, r in enumerate(rs)
    ]
    same = all(r["points"] == one[0]["points"] for r in one + two)
    return {
        "fronts": "\n\n".join(fronts),
        "wall": f"{s['wall_s'] / 60:.0f}",
        "base_top1": f"{100 * base['top1']:.2f}",
        "base_ms": f"{base['latency_ms']:.3g}",
        "verdict": verdict,
        "scaling": common.table(
            [
                "workers",
                "run",
                "trials",
                "wall s",
                "trials/min",
                "median trial s",
                "sum of trial s",
                "wall - sum/workers s",
            ],
            rows,
        ),
        "ratio": ", ".join(f"{x:.2f}x" for x in ratios),
        "same_points": "the same 12 points in every run" if same else "**not the same points in every run**",
        "goal": "reached" if ratios and min(ratios) >= 1.6 else "not reached",
    }


def metrics(result: dict) -> dict[str, float]:
    d = result["data"]
    one, two = d["scaling"]["runs"]["1"], d["scaling"]["runs"]["2"]
    m4 = d["search"]["targets"]["cortex-m4"]
    return {
        "scaling.ratio": round(statistics.median(a["wall_s"] / b["wall_s"] for a, b in zip(one, two, strict=False)), 2),
        "m4.front_points": len(m4["front"]),
        "m4.best_top1_pct": round(100 * m4["best"]["top1"], 2),
        "rebuilt_same": sum(bool((t["rebuilt"] or {}).get("same")) for t in d["search"]["targets"].values()),
    }


if __name__ == "__main__":
    sys.exit(main())

"""What every benchmark shares: builds as subprocesses, interleaved timing, Markdown tables, machine facts, results.

A benchmark builds the way a user does: ``sys.executable -m toolchain build RECIPE --out OUT`` in a fresh process
(start-up and imports count), and reads the numbers back from the build's ``build.json``. Variants compared with
each other run interleaved, pair by pair (``interleave``), so the shared machine's load hits them alike. Each
benchmark writes one JSON file, ``benchmarks/results/<name>.json`` (``write_result``): the machine, the date, the
command and its numbers under ``data``; ``python -m benchmarks.render`` turns those files into docs/benchmarks.md.
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

import yaml

from toolchain.errors import CompatibilityError, GateFailure, RuntimeValidationError, ToolchainError

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
#: the exit codes after which ``toolchain build`` has still written the build record: a gate or budget failed, a
#: runtime refused the artifact, a target's compiler refused the model (toolchain/errors.py, ``failure_error``)
RECORD_WRITTEN: tuple[type[ToolchainError], ...] = (GateFailure, RuntimeValidationError, CompatibilityError)
TOOLS = (
    "tensorflow",
    "tf-keras",
    "tensorflow-model-optimization",
    "ai-edge-litert",
    "ai-edge-quantizer",
    "tflite-micro",
    "ethos-u-vela",
    "torch",
    "torchvision",
    "litert-torch",
)
T = TypeVar("T")


class BenchmarkError(SystemExit):
    """A build or step a benchmark depends on failed: the benchmark stops with this message (exit 1)."""


@dataclass
class Built:
    """One ``toolchain build`` process: its wall-clock seconds, exit code and the build record it wrote."""

    wall_s: float
    returncode: int
    record: dict


def recipe_name(recipe: Path) -> str:
    return yaml.safe_load(recipe.read_text())["name"]


def toolchain_build(
    recipe: Path,
    out: Path,
    *,
    src: Path = REPO,
    targets: Sequence[str] = (),
    extra: Sequence[str] = (),
    accept: tuple[type[ToolchainError], ...] = (GateFailure,),
    env: dict[str, str] | None = None,
) -> Built:
    """``python -m toolchain build RECIPE --out OUT [-t TARGET ...]`` run from checkout ``src``; exit 0 or the exit
    code of one of ``accept`` (the record is written then) is a result, anything else stops the benchmark; ``env``:
    the process's environment (default: this one's)."""
    codes = {0} | {e.exit_code for e in accept}
    cmd = [sys.executable, "-m", "toolchain", "build", str(recipe), "--out", str(out), *extra]
    for t in targets:
        cmd += ["--target", t]
    record_path = out / recipe_name(recipe) / "build.json"
    t0 = time.perf_counter()
    start_ns = time.time_ns()
    proc = subprocess.run(cmd, cwd=src, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode not in codes or not record_path.exists() or record_path.stat().st_mtime_ns < start_ns:
        last = proc.stderr.strip().splitlines()[-1:]
        raise BenchmarkError(f"{recipe.name} in {src}: build failed (exit {proc.returncode}): {last}")
    print(f"  {recipe.stem}: {wall:.1f} s (exit {proc.returncode})", file=sys.stderr)
    return Built(wall, proc.returncode, json.loads(record_path.read_text()))


def write_recipe(recipe: Any, path: Path) -> Path:
    """A recipe model (``toolchain.config.load_recipe``, possibly ``model_copy``'d into a variant) as a YAML file
    that loads back to the same recipe (only the fields the recipe set)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe.model_dump(mode="json", exclude_unset=True), sort_keys=False))
    return path


def interleave(variants: dict[str, Callable[[], T]], runs: int, label: str = "run") -> dict[str, list[T]]:
    """Call every variant once per round, ``runs`` rounds, in the same order: both see the same machine load."""
    out: dict[str, list[T]] = {name: [] for name in variants}
    for i in range(runs):
        for name, fn in variants.items():
            out[name].append(fn())
            print(f"{label} {i + 1}/{runs} {name} done", file=sys.stderr)
    return out


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table; cells are written as given (format numbers before)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "python": platform.python_version(),
        "cores": os.cpu_count(),
    }


def tool_versions() -> dict[str, str]:
    out = {}
    for name in TOOLS:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


def parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The benchmark's argument parser, with ``--results`` (where its JSON goes) already on it."""
    ap = argparse.ArgumentParser(
        prog=f"python -m {module}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of the result JSON (default: %(default)s)")
    return ap


def result_path(name: str, folder: Path = RESULTS) -> Path:
    return folder / f"{name}.json"


def load_result(name: str, folder: Path = RESULTS) -> dict:
    return json.loads(result_path(name, folder).read_text())


def write_result(name: str, data: dict, folder: Path = RESULTS, argv: Sequence[str] | None = None) -> Path:
    """``folder/<name>.json``: the benchmark, date, command, machine, tool versions and ``data`` (its numbers)."""
    argv = sys.argv[1:] if argv is None else argv
    result = {
        "benchmark": name,
        "date": datetime.date.today().isoformat(),
        "command": shlex.join(["python", "-m", f"benchmarks.{name}", *argv]),
        "machine": machine(),
        "tool_versions": tool_versions(),
        "data": data,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = result_path(name, folder)
    path.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return path

"""Builds on a local Dask cluster: several recipes at once (one per worker, into one build folder), one recipe with
its targets' checks on the workers, and ``compare --plans`` building its plans at once. The same artifacts as a
build in a fresh process with the same TensorFlow threads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.tf


def tiny(tiny_recipe, tmp_path, name: str, targets="[phone-cpu, cortex-m7]"):
    path = tiny_recipe(targets=targets, train="train: {epochs: 2, batch_size: 32, learning_rate: 0.01, threads: 1}")
    text = path.read_text().replace("name: tiny", f"name: {name}")
    out = tmp_path / f"{name}.yaml"
    out.write_text(text)
    return out


def test_several_recipes_build_at_once_on_a_local_cluster(tiny_recipe, tmp_path, run_cli):
    a, b = tiny(tiny_recipe, tmp_path, "first"), tiny(tiny_recipe, tmp_path, "second", "[cortex-m4]")
    code, out, err = run_cli("build", a, b, "--build-dir", tmp_path / "b", "--workers", "2", "--json")
    assert code == 0, err[-3000:]
    records = json.loads(out)
    assert [r["recipe"] for r in records] == ["first", "second"]
    assert [[x["target"] for x in r["results"]] for r in records] == [["phone-cpu", "cortex-m7"], ["cortex-m4"]]
    for r in records:
        on_disk = json.loads((tmp_path / "b" / r["recipe"] / "build.json").read_text())
        assert on_disk["results"] == r["results"] and r["passed"]
    assert not (tmp_path / "b" / ".tmp").exists() and not list((tmp_path / "b" / ".cache").glob("*/.*"))

    # the same recipe built by a plain process (train.threads: 1 there too): the same artifact
    proc = subprocess.run(
        [sys.executable, "-m", "toolchain", "build", str(b), "--build-dir", str(tmp_path / "plain"), "--json"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["results"][0]["sha256"] == records[1]["results"][0]["sha256"]


def test_one_recipe_checks_its_targets_on_the_cluster(tiny_recipe, tmp_path, run_cli):
    a = tiny(tiny_recipe, tmp_path, "one")
    code, out, err = run_cli("build", a, "--build-dir", tmp_path / "b", "--workers", "2", "--json")
    assert code == 0, err[-3000:]
    record = json.loads(out)
    assert [x["target"] for x in record["results"]] == ["phone-cpu", "cortex-m7"]
    m7 = record["results"][1]
    assert m7["memory"]["arena_bytes"] > 0 and m7["sections"]["tflm"]["metrics"]["top1"] > 0.5
    assert "validate cortex-m7 on tflite-micro" in err  # the worker's log lines, replayed here


def test_compare_plans_builds_its_plans_at_once(tiny_recipe, tmp_path, run_cli):
    a = tiny(tiny_recipe, tmp_path, "plans", "[phone-cpu]")
    code, out, err = run_cli(
        "compare", a, "--plans", "int8,float16", "--build-dir", tmp_path / "b", "--workers", "2", "--format", "json"
    )
    assert code == 0, err[-3000:]
    rows = json.loads(out)["rows"]
    assert sorted((x["target"], x["plan"]) for x in rows) == [
        ("phone-cpu [float16]", "float16"),
        ("phone-cpu [int8]", "int8"),
    ]
    assert (tmp_path / "b" / "plans-int8" / "build.json").exists() and (tmp_path / "b" / "plans-float16").is_dir()

"""The one target loop with worker processes gives what it gives in this process: the same artifacts, the same
numbers, the same order; the workers' log lines are replayed here."""

import logging

import pytest

from toolchain.config import load_recipe
from toolchain.pipeline import build

pytestmark = pytest.mark.tf


def test_worker_processes_give_the_results_of_one_process(tiny_recipe, tmp_path, caplog):
    recipe = load_recipe(tiny_recipe(targets="[phone-cpu, cortex-m7, ethos-u55-128]", train="train: {epochs: 1}"))
    serial = build(recipe, out=tmp_path / "b", jobs=1)
    caplog.set_level(logging.INFO, logger="toolchain")
    parallel = build(recipe, out=tmp_path / "b", jobs=2, remeasure=True)  # the same artifacts, checked in workers
    cached = [r.getMessage() for r in caplog.records if r.getMessage().endswith("(cached)")]
    assert not [m for m in cached if m.split(":")[0] in ("litert", "tflm", "tflm-numerics", "vela")], cached
    assert [r.target for r in parallel.results] == ["phone-cpu", "cortex-m7", "ethos-u55-128"]
    for a, b in zip(serial.results, parallel.results, strict=True):
        assert (a.sha256, a.passed, a.memory, a.accelerator) == (b.sha256, b.passed, b.memory, b.accelerator)
        assert a.metrics.top1 == b.metrics.top1 and a.metrics.top1_agreement == b.metrics.top1_agreement
    tflm = [r for r in caplog.records if r.name == "toolchain.checks.tflm"]
    assert tflm, "the worker's tflite-micro log lines are replayed in the driver's log"
    order = [r.getMessage().split()[1] for r in caplog.records if r.getMessage().startswith("validate ")]
    assert order == ["phone-cpu", "cortex-m7", "ethos-u55-128"]
    assert parallel.timings_s["validate"] > 0

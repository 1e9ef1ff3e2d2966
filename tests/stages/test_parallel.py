"""The one target loop with worker processes gives what it gives in this process: the same artifacts, the same
numbers, the same order; the workers' log lines are replayed here."""

import logging

import pytest

from toolchain.config import load_recipe
from toolchain.pipeline import build

pytestmark = pytest.mark.tf


class _Keep(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def test_worker_processes_give_the_results_of_one_process(tiny_recipe, tmp_path):
    recipe = load_recipe(tiny_recipe(targets="[phone-cpu, cortex-m7, ethos-u55-128]", train="train: {epochs: 1}"))
    serial = build(recipe, out=tmp_path / "b", jobs=1)
    logger, keep = logging.getLogger("toolchain"), _Keep()  # the toolchain logger, whatever an earlier test set
    level = logger.level
    logger.addHandler(keep)
    logger.setLevel(logging.INFO)
    try:
        parallel = build(recipe, out=tmp_path / "b", jobs=2, remeasure=True)  # the same artifacts, checked in workers
    finally:
        logger.removeHandler(keep)
        logger.setLevel(level)
    messages = [r.getMessage() for r in keep.records]
    checks = ("litert", "tflm", "tflm-numerics", "vela")
    cached = [m for m in messages if m.endswith("(cached)") and m.split(":")[0] in checks]
    assert not cached, cached  # every check ran again
    assert [r.target for r in parallel.results] == ["phone-cpu", "cortex-m7", "ethos-u55-128"]
    for a, b in zip(serial.results, parallel.results, strict=True):
        assert (a.sha256, a.passed, a.memory, a.accelerator) == (b.sha256, b.passed, b.memory, b.accelerator)
        assert a.metrics.top1 == b.metrics.top1 and a.metrics.top1_agreement == b.metrics.top1_agreement
    replayed = [r for r in keep.records if r.name in ("toolchain.checks.tflm", "toolchain.checks.vela")]
    assert replayed, "the workers' tflite-micro and Vela log lines are replayed in the driver's log"
    order = [m.split()[1] for m in messages if m.startswith("validate ")]
    assert order == ["phone-cpu", "cortex-m7", "ethos-u55-128"]
    assert parallel.timings_s["validate"] > 0

"""The driver's one target loop, its executors and the same-build rule, on a tiny float .tflite used as it is
(tests/fixtures/tiny_float.tflite: Flatten + Dense 10 + softmax over 8x8x1 digits) with checks defined here.
No TensorFlow: the artifact is read as a flatbuffer, the checks are plain Python."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil

import numpy as np
import pytest

from tests.conftest import REPO, write_recipe
from toolchain.checks import Check, CheckContext, register
from toolchain.config import load_recipe
from toolchain.executors import INLINE, LocalProcesses
from toolchain.pipeline import build, ensure_build
from toolchain.record import Failure, Latency, Section, load_record, same_build
from toolchain.stages.validate import CheckJob

FIXTURE = REPO / "tests" / "fixtures" / "tiny_float.tflite"


@register
class CountingCheck(Check):
    """Reports the artifact's op count as its latency (a value the test can predict) and how often it ran."""

    name = "test-counting"
    provides = ("latency",)
    runs = 0

    def run(self, ctx: CheckContext) -> Section:
        type(self).runs += 1
        return self.section(latency=Latency(ms=float(len(ctx.model.ops)), kind="estimate", source="op count"))


@register
class RefusingCheck(Check):
    name = "test-refusing"

    def run(self, ctx: CheckContext) -> Section:
        return self.section(failures=[Failure(kind="compat", check=self.name, message="test-refusing: no")])


def _profile(targets_dir, name: str, checks: str) -> None:
    text = (targets_dir / "phone-cpu.yaml").read_text().replace("name: phone-cpu", f"name: {name}")
    (targets_dir / f"{name}.yaml").write_text(text.replace("checks: [litert]", f"checks: {checks}"))


@pytest.fixture
def recipe(tmp_path, targets_dir):
    _profile(targets_dir, "fake-a", "[test-counting]")
    _profile(targets_dir, "fake-b", "[test-counting, test-refusing]")
    _profile(targets_dir, "fake-c", "[test-counting]")
    shutil.copy(FIXTURE, tmp_path / "m.tflite")

    def make(targets: str = "[fake-a, fake-b, fake-c]"):
        body = f"""
            schema_version: 1
            name: tiny
            model: {{file: m.tflite, classes: 10}}
            data: {{builtin: digits}}
            quantize: {{mode: float32}}
            targets: {targets}
            """
        return load_recipe(write_recipe(tmp_path, body))

    return make


def test_the_loop_builds_every_target_in_order_and_fails_only_the_refused_one(recipe, tmp_path):
    out = tmp_path / "out"
    record = build(recipe(), out=out)
    assert [r.target for r in record.results] == ["fake-a", "fake-b", "fake-c"]
    assert [r.passed for r in record.results] == [True, False, True]
    assert [f.kind for f in record.results[1].failures] == ["compat"]
    assert all(r.latency.ms == 3.0 for r in record.results)  # RESHAPE, FULLY_CONNECTED, SOFTMAX
    assert record.failure_error().exit_code == 9
    folders = sorted(p.name for p in (out / "tiny").iterdir() if p.is_dir())
    assert folders == ["fake-a", "fake-b", "fake-c"]  # published whole: no temp folder is left
    report = json.loads((out / "tiny" / "fake-b" / "report.json").read_text())
    assert report["passed"] is False and report["sha256"] == record.results[0].sha256
    assert (out / "tiny" / "fake-a" / "tiny_float32.tflite").read_bytes() == FIXTURE.read_bytes()


def test_an_unchanged_rebuild_runs_no_check_and_keeps_the_record(recipe, tmp_path):
    out = tmp_path / "out"
    build(recipe(), out=out)
    before = CountingCheck.runs
    record = build(recipe(), out=out)
    assert CountingCheck.runs == before  # every section came from the cache
    assert [r.latency.ms for r in record.results] == [3.0, 3.0, 3.0]
    assert record.timings_s["validate"] >= 0 and "total" in record.timings_s


def test_one_target_rebuilt_keeps_the_others_in_the_record(recipe, tmp_path):
    out = tmp_path / "out"
    build(recipe(), out=out)
    build(recipe(), ["fake-c"], out=out)
    assert [r.target for r in load_record(out / "tiny" / "build.json").results] == ["fake-a", "fake-b", "fake-c"]


def test_ensure_build_reuses_the_same_build_and_builds_what_is_missing(recipe, tmp_path, caplog):
    out = tmp_path / "out"
    build(recipe("[fake-a]"), out=out)
    caplog.set_level(logging.INFO, logger="toolchain")
    record = ensure_build(recipe("[fake-a]"), out)
    assert "using the existing build" in caplog.text and [r.target for r in record.results] == ["fake-a"]
    caplog.clear()
    record = ensure_build(recipe("[fake-a, fake-c]"), out)  # another recipe text: another build
    assert "using the existing build" not in caplog.text and "target fake-c" in caplog.text
    assert [r.target for r in record.results] == ["fake-a", "fake-c"]


def test_same_build_compares_recipe_text_data_and_tools(recipe, tmp_path):
    record = build(recipe("[fake-a]"), out=tmp_path / "out")
    assert same_build(record, record.identity)
    for key, other in [("recipe_sha256", "0" * 64), ("data_digest", "x"), ("tool_versions", {}), ("recipe", "t")]:
        assert not same_build(record, {**record.identity, key: other}), key
    assert not same_build(None, record.identity)


class _Job:
    """A picklable job: where it ran, and a log line on the way."""

    def run(self):
        logging.getLogger("toolchain.test").info("ran in %d", os.getpid())
        return os.getpid()


def test_inline_runs_a_job_here_at_once():
    future = INLINE.submit(_Job())
    assert future.done() and future.result() == os.getpid() and INLINE.depth == 1


def test_local_processes_run_jobs_elsewhere_and_replay_their_logs_in_order(caplog):
    caplog.set_level(logging.INFO, logger="toolchain")
    with LocalProcesses(2) as pool:
        futures = [pool.submit(_Job()) for _ in range(3)]
        pids = [f.result() for f in futures]
    assert os.getpid() not in pids
    assert [r.getMessage() for r in caplog.records if r.name == "toolchain.test"] == [f"ran in {p}" for p in pids]


def test_a_check_job_travels_with_its_eval_data_and_reference(recipe, tmp_path):
    from toolchain.cache import Cache
    from toolchain.config import load_target
    from toolchain.stages.validate import EvalData, Reference

    class Model:  # what a job reads of the float model
        key, reference = "k", [np.ones((2, 10), np.float32)]

    data = EvalData("d", [np.zeros((2, 8, 8, 1), np.float32)], np.array([1, 2]))
    job = CheckJob(Cache(tmp_path), False, "classification", load_target("fake-a"), FIXTURE, "s", data, Model())
    back = pickle.loads(pickle.dumps(job))
    assert isinstance(back.model, Reference) and back.model.key == "k"
    assert back.model.reference[0].sum() == 20 and back.data.y_eval.tolist() == [1, 2]
    assert back.in_process_only  # test-counting is registered in this process only

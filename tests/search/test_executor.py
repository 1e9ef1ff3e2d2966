"""The Dask executor on a real LocalCluster (two worker processes on 127.0.0.1): results and log lines come back,
TensorFlow's threads are the cores over the workers, a job whose worker dies every time fails after the bounded
retries (as a trial that crashes its process is recorded as failed, not a dead search). No TensorFlow."""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass

import pytest

from toolchain.executors.dask import DaskCluster, WorkerDied


@dataclass
class Echo:
    value: int

    def run(self):
        logging.getLogger("toolchain.test").info("echo %d in %d", self.value, os.getpid())
        return {"value": self.value, "threads": os.environ.get("TF_NUM_INTRAOP_THREADS"), "pid": os.getpid()}


@dataclass
class Crash:
    def run(self):
        os.kill(os.getpid(), signal.SIGKILL)  # as a segfault in TensorFlow or tflite-micro would


@pytest.fixture(scope="module")
def cluster():
    with DaskCluster(workers=2, retries=1) as c:
        yield c


def test_jobs_run_on_the_workers_with_their_share_of_the_cores(cluster, caplog):
    cores = len(os.sched_getaffinity(0))
    assert cluster.depth == 2 and cluster.threads == max(1, cores // 2)
    with caplog.at_level(logging.INFO, logger="toolchain.test"):
        futures = [cluster.submit(Echo(i)) for i in range(4)]
        results = [f.result(60) for f in futures]
    assert [r["value"] for r in results] == [0, 1, 2, 3] and all(f.done() for f in futures)
    assert {r["threads"] for r in results} == {str(cluster.threads)} and os.getpid() not in {r["pid"] for r in results}
    assert sorted(m.split(" in ")[0] for m in caplog.messages if m.startswith("echo")) == [
        f"echo {i}" for i in range(4)
    ]


def test_a_job_that_kills_its_worker_every_time_fails_after_the_retries(cluster):
    from toolchain.tuner import _result

    with pytest.raises(WorkerDied, match="Attempted to run task"):
        cluster.submit(Crash()).result(120)
    failed = _result(cluster.submit(Crash()))  # what the search records for such a trial
    assert failed["state"] == "failed" and failed["reason"].startswith("the workers running it died")
    assert cluster.submit(Echo(7)).result(60)["value"] == 7  # the nannies started the workers again

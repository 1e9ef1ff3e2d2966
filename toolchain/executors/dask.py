"""Jobs on a Dask cluster (``distributed``): an in-process ``LocalCluster`` of N worker processes on this machine
(``--workers N``), or an existing cluster (``--scheduler tcp://HOST:8786``).

Each worker runs one job at a time (one thread) in its own process, and TensorFlow there uses the cores of its
host divided by the workers on that host, the least of all hosts (``threads``; a trained model's float sums
depend on the thread count, so every job runs with the same), so N workers on N cores do not oversubscribe.
A worker that dies mid-job (killed, or a crash of TensorFlow or tflite-micro that takes the process) has its job
started again on another worker, at most ``retries`` times; then ``result()`` raises ``WorkerDied``. Jobs write
their files to folders every worker can reach; only their return values come back here.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid

from toolchain.errors import SchedulerError
from toolchain.executors import _run_capturing

log = logging.getLogger(__name__)
#: seconds to wait for a scheduler to answer, and for its first worker
CONNECT_TIMEOUT = 10


class WorkerDied(Exception):
    """Every worker that ran the job died while running it."""


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _threads_per_host() -> dict[str, int]:
    """Run on each worker: (its host, its cores)."""
    import socket

    return {"host": socket.gethostname(), "cores": _cores()}


def _run_on_worker(job, threads: int):
    """A job on a worker: TensorFlow's threads set first (before the job imports it), then the job, its log lines
    kept to be replayed by the client."""
    os.environ["TOOLCHAIN_THREADS"] = str(threads)
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    return _run_capturing(job)


class _Future:
    """A Dask future whose ``result()`` replays the job's log lines here and is released at once (a result left
    on a worker that dies is recomputed: a trial must not run twice)."""

    def __init__(self, future):
        self._future, self._value, self._taken = future, None, False

    def done(self) -> bool:
        return self._taken or self._future.done()

    def result(self, timeout: float | None = None):
        if not self._taken:
            from distributed import KilledWorker

            try:
                value, lines = self._future.result(timeout)
            except KilledWorker as exc:
                self._future.release()
                raise WorkerDied(str(exc).split(".")[0]) from None
            self._future.release()
            self._value, self._taken = value, True
            for name, level, message in lines:
                logging.getLogger(name).log(level, "%s", message)
        return self._value

    def cancel(self) -> bool:
        self._future.cancel()
        return True


class DaskCluster:
    """The executor of jobs on Dask workers: ``submit(job)`` -> a future with ``done``, ``result``, ``cancel``;
    ``depth``: the workers' threads (how many jobs run at once)."""

    def __init__(self, workers: int | None = None, scheduler: str | None = None, retries: int = 2):
        import dask

        self.scheduler, self._cluster, self._client = scheduler, None, None
        # A worker's death counts against every job it held: past ``retries`` the job fails (KilledWorker). Workers
        # are not daemons, so a job may start processes of its own (tflite-micro's probe, a PyTorch conversion).
        dask.config.set({"distributed.scheduler.allowed-failures": retries, "distributed.worker.daemon": False})
        if scheduler:
            self._client = _connect(scheduler)
        else:
            self._client, self._cluster = _local(workers or 1)
        info = self._client.scheduler_info(n_workers=-1)["workers"]
        self.depth = sum(w.get("nthreads", 1) for w in info.values()) or 1
        self.threads = self._threads()
        log.info(
            "dask: %s, %d worker%s, TensorFlow with %d thread%s in each",
            scheduler or "a local cluster",
            len(info),
            "" if len(info) == 1 else "s",
            self.threads,
            "" if self.threads == 1 else "s",
        )

    def _threads(self) -> int:
        """TensorFlow's threads per job: on each host its cores over the worker threads it runs; the least."""
        seen = self._client.run(_threads_per_host)
        info = self._client.scheduler_info(n_workers=-1)["workers"]
        hosts: dict[str, list[int]] = {}
        for addr, facts in seen.items():
            hosts.setdefault(facts["host"], [facts["cores"], 0])[1] += info.get(addr, {}).get("nthreads", 1)
        return min((max(1, cores // max(1, slots)) for cores, slots in hosts.values()), default=1)

    def submit(self, job) -> _Future:
        key = f"{type(job).__name__}-{uuid.uuid4().hex}"  # one key per attempt: a live key would be reused
        return _Future(self._client.submit(_run_on_worker, job, self.threads, key=key, pure=False))

    def close(self) -> None:
        client, cluster, self._client, self._cluster = self._client, self._cluster, None, None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _local(workers: int):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",  # loopback, any free port (the default listens on every interface)
        silence_logs=logging.ERROR,
    )
    return Client(cluster), cluster


def _connect(address: str):
    """A client of the scheduler at ``address``, with one worker at least; SchedulerError (one line) otherwise.
    A port that accepts a connection but never answers would hang Dask's handshake: a watchdog bounds it."""
    from distributed import Client

    box: dict = {}

    def connect():
        try:
            box["client"] = Client(address, timeout=f"{CONNECT_TIMEOUT}s")
        except Exception as exc:  # OSError (timed out, refused), ValueError (a malformed address), ...
            box["error"] = exc

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(CONNECT_TIMEOUT + 5)
    if "client" not in box:
        reason = box.get("error") or f"no answer in {CONNECT_TIMEOUT + 5} s"
        raise SchedulerError(f"--scheduler {address}: cannot reach the Dask scheduler: {_first_line(reason)}")
    client = box["client"]
    try:
        client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
    except TimeoutError:
        client.close()
        raise SchedulerError(
            f"--scheduler {address}: the scheduler has no worker after {CONNECT_TIMEOUT} s (start one: "
            f"dask worker {address} --nthreads 1)"
        ) from None
    return client


def _first_line(exc) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

"""Where a target's checks run: the interface the driver's one target loop calls, and its executors.

An executor takes a job (a picklable object with a ``run()`` method: ``stages.validate.CheckJob``) and returns
a future whose ``result()`` is what ``run()`` returned. ``depth`` says how many targets the loop may keep in
flight before it waits for the oldest: 1 runs them one after another; a pool converts later artifacts while
earlier ones are checked. Results always come back in the targets' order (the loop waits oldest first).

- ``Inline``: in this process, at once (``-j 1``; a plug-in check registered in this process only; nothing to
  run because every section is cached).
- ``LocalProcesses``: a pool of spawned worker processes on this machine (``-j N``); the workers' log lines are
  replayed here, in order, when their result is taken.

A distributed executor (a Dask cluster) is one more class with the same three members.
"""

from __future__ import annotations

import logging
from typing import Protocol


class Job(Protocol):
    def run(self): ...


class Result(Protocol):
    """What ``submit`` returns (a ``concurrent.futures.Future`` has these; so does a Dask future)."""

    def result(self, timeout: float | None = None): ...

    def cancel(self) -> bool: ...


class Executor(Protocol):
    depth: float

    def submit(self, job: Job) -> Result: ...

    def close(self) -> None: ...


class _Done:
    """The result of a job that already ran."""

    def __init__(self, value):
        self._value = value

    def result(self, timeout: float | None = None):
        return self._value

    def done(self) -> bool:
        return True

    def cancel(self) -> bool:
        return False


class Inline:
    """Runs each job here, when it is submitted."""

    depth = 1

    def submit(self, job: Job) -> _Done:
        return _Done(job.run())

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


INLINE = Inline()


def _run_capturing(job: Job):
    """A worker's share: the job's value and the log lines it wrote (replayed by the submitting process)."""
    lines: list[tuple[str, int, str]] = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append((record.name, record.levelno, record.getMessage()))

    root = logging.getLogger()
    root.handlers[:] = [Keep(logging.INFO)]
    root.setLevel(logging.INFO)
    return job.run(), lines


class _Replayed:
    """A worker's future: ``result()`` replays its log lines here (once), then returns the job's value."""

    def __init__(self, future):
        self._future, self._replayed = future, False

    def result(self, timeout: float | None = None):
        value, lines = self._future.result(timeout)
        if not self._replayed:
            self._replayed = True
            for name, level, message in lines:
                logging.getLogger(name).log(level, "%s", message)
        return value

    def cancel(self) -> bool:
        return self._future.cancel()


class LocalProcesses:
    """A pool of ``workers`` spawned processes (started at the first job: none when nothing needs running)."""

    depth = float("inf")

    def __init__(self, workers: int):
        self.workers, self._pool = workers, None

    def submit(self, job: Job) -> _Replayed:
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context)
        return _Replayed(self._pool.submit(_run_capturing, job))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def default_jobs() -> int:
    """Processes validating targets at once: the cores this process may use, at most 4."""
    import os

    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))

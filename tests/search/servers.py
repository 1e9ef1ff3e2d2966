"""Real servers for the search's tests: a PostgreSQL server (Debian's, started in a temp folder on a free port of
127.0.0.1) and a Dask cluster of a ``dask scheduler`` and worker processes (``dask worker``), each its own
process on 127.0.0.1. Each skips its test with the reason where it cannot start one."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else (Path(p).parent if (p := shutil.which("pg_ctl")) else None)


@contextmanager
def postgres():
    """A PostgreSQL server of its own: yields the URL of its database ``toolchain`` (user postgres, no password:
    trust on 127.0.0.1 only). As root, the server runs as the ``postgres`` user (initdb refuses root)."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (Debian: apt-get install postgresql; .ci/run does)")
    as_user: list[str] = []
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' user to run the server as")
        if runuser is None:
            pytest.skip("running as root without runuser to start the server as 'postgres'")
        as_user = [runuser, "-u", "postgres", "--"]
    home = Path(tempfile.mkdtemp(prefix="toolchain-pg-"))
    os.chmod(home, 0o755)
    data = home / "data"
    data.mkdir()
    if as_user:
        shutil.chown(home, "postgres")
        shutil.chown(data, "postgres")
    port = free_port()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)  # noqa: E731
    init = run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    if init.returncode:
        shutil.rmtree(home, ignore_errors=True)
        pytest.skip(f"initdb failed: {init.stderr.strip()[-300:]}")
    opts = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = run(str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(home / "log"), "-w", "start")
    try:
        if start.returncode:
            pytest.skip(f"the PostgreSQL server did not start: {start.stderr.strip()[-300:]}")
        made = run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "toolchain")
        assert made.returncode == 0, made.stderr
        yield f"postgresql://postgres@127.0.0.1:{port}/toolchain"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(home, ignore_errors=True)


class Cluster:
    """A ``dask scheduler`` and ``workers`` ``dask worker`` processes (one thread, with a nanny each)."""

    def __init__(self, workers: int = 2):
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        # workers may start processes of their own (a job's tflite-micro probe); TensorFlow quiet on stderr
        self.env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False", "TF_CPP_MIN_LOG_LEVEL": "3"}
        self.logs = Path(tempfile.mkdtemp(prefix="toolchain-dask-"))
        self.scheduler = self._start("scheduler", "--host", "127.0.0.1", "--port", str(self.port))
        self.nannies = [
            self._start("worker", self.address, "--nthreads", "1", "--name", f"w{i}", "--host", "127.0.0.1")
            for i in range(workers)
        ]
        self.wait_for(workers)

    def _start(self, role: str, *args: str) -> subprocess.Popen:
        log = open(self.logs / f"{role}-{len(list(self.logs.iterdir()))}.log", "w")  # noqa: SIM115
        cmd = [sys.executable, "-m", "dask", role, *args, "--no-dashboard", "--dashboard-address", "127.0.0.1:0"]
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)

    def client(self):
        from distributed import Client

        return Client(self.address, timeout="20s")

    def wait_for(self, n: int, timeout: float = 120) -> None:
        with self.client() as c:
            c.wait_for_workers(n, timeout=timeout)

    def worker_pids(self) -> dict[str, int]:
        """Worker name -> the pid of the process running its tasks (the nanny's child)."""
        with self.client() as c:
            info = c.scheduler_info(n_workers=-1)["workers"]
            pids = c.run(os.getpid)
        return {info[a]["name"]: pid for a, pid in pids.items() if a in info}

    def close(self) -> None:
        for p in [*self.nannies, self.scheduler]:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGINT)
        deadline = time.monotonic() + 20
        for p in [*self.nannies, self.scheduler]:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        shutil.rmtree(self.logs, ignore_errors=True)

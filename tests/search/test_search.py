"""``toolchain search`` for real: trials of the tiny conv net on the digits built for cortex-m4 on Dask workers, with
the studies in SQLite and in a real PostgreSQL server; a worker killed mid-trial, a search stopped by SIGINT and
resumed, two studies in one database, the best recipe rebuilt to the same artifact."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write_recipe
from tests.search import servers

pytestmark = pytest.mark.tf

RECIPE = """
schema_version: 1
name: {name}
model: {{file: {model}, classes: 10}}
data: {{builtin: digits}}
train: {{epochs: 2, batch_size: 32, learning_rate: 0.01}}
quantize: {{mode: int8, calibration_samples: 50}}
targets: [cortex-m4]
acceptance: {{max_accuracy_drop: 5}}
search:
  trials: {trials}
  space:
    train.epochs: {{low: 1, high: 3}}
    train.learning_rate: {rates}
  constraints: {constraints}
"""


def recipe(tmp_path, model, name="tiny", trials=5, rates="[0.003, 0.01, 0.03]", constraints="{}", file=None) -> Path:
    text = RECIPE.format(name=name, model=model, trials=trials, rates=rates, constraints=constraints)
    return write_recipe(tmp_path, text, file or f"{name}.yaml")


def study_of(record: dict) -> dict:
    (t,) = record["targets"]
    return t


def test_a_local_search_finds_a_front_resumes_and_writes_the_best_recipe(tmp_path, tiny_conv_file, run_cli):
    r = recipe(tmp_path, tiny_conv_file)
    out, best = tmp_path / "b", tmp_path / "best"
    code, stdout, err = run_cli("search", r, "--build-dir", out, "--workers", "2", "--write-best", best)
    assert code == 0, err[-3000:]
    record = json.loads((out / "tiny" / "search.json").read_text())
    t = study_of(record)
    assert t["counts"]["finished"] == 5 and t["counts"]["complete"] >= 3, t["counts"]
    done = [x for x in t["trials"] if x["state"] == "complete"]
    for x in done:  # every trial's numbers in the record, from its own build
        assert {"metric", "latency"} == set(x["values"]) and 0 < x["result"]["metric"] <= 1
        assert x["result"]["latency_kind"] == "estimate" and x["result"]["arena_bytes"] > 0
        assert x["constraints"]["ram budget"] < 0 and len(x["result"]["sha256"]) == 64
    assert t["front"] and t["best"] == t["front"][0]
    chosen = next(x for x in t["trials"] if x["number"] == t["best"])
    assert chosen["feasible"] and chosen["result"]["metric"] == max(
        x["result"]["metric"] for x in done if x["feasible"]
    )
    assert f"tiny on cortex-m4: Pareto front, {len(t['front'])} of the feasible trials" in stdout
    page = (out / "tiny" / "search.html").read_text()
    assert 'id="trials-cortex-m4"' in page and page.count("<tr") == 1 + t["counts"]["finished"]

    # the best recipe, rebuilt by a plain build, writes the same artifact (its train.threads: the trial's)
    written = best / "tiny-cortex-m4.yaml"
    assert "threads:" in written.read_text()
    code, built, err = run_cli("build", written, "--build-dir", tmp_path / "again", "--json")
    assert code == 0, err[-2000:]
    assert json.loads(built)["results"][0]["sha256"] == chosen["result"]["sha256"]

    # the same command again: nothing to run; more trials: the same study goes on
    code, _, err = run_cli("search", r, "--build-dir", out, "--workers", "1")
    assert code == 0 and "search tiny: 0 trials to run" in err
    code, _, err = run_cli("search", r, "--build-dir", out, "--workers", "2", "--trials", "7")
    assert code == 0 and "search tiny: 2 trials to run" in err
    again = study_of(json.loads((out / "tiny" / "search.json").read_text()))
    assert again["counts"]["finished"] == 7 and again["study"] == t["study"]
    assert [x["number"] for x in again["trials"]][:5] == [x["number"] for x in t["trials"]]

    # a constraint no point meets: exit 25, the closest trial shown; a second study in the same database
    tight = recipe(tmp_path, tiny_conv_file, trials=2, constraints="{latency_ms: 0.0001}", file="tight.yaml")
    code, stdout, err = run_cli("search", tight, "--build-dir", out, "--workers", "2")
    assert code == 25 and "no trial met the constraints on cortex-m4" in err.splitlines()[-1]
    assert "tiny on cortex-m4: no trial met the constraints" in stdout and "over by latency limit" in stdout
    code, status, _ = run_cli("search", tight, "--build-dir", out, "--status")
    assert code == 0 and re.search(r"cortex-m4 +│ +2 │ +2 │", status), status
    code, status, _ = run_cli("search", r, "--build-dir", out, "--status")
    assert code == 0 and re.search(r"cortex-m4 +│ +7 │", status), status


# --- a real Dask cluster and a real PostgreSQL server ---------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    c = servers.Cluster(workers=2)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def pg():
    with servers.postgres() as url:
        yield url


def search_process(r: Path, out: Path, cluster, url: str, *more: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "toolchain", "search", str(r), "--build-dir", str(out)]
    cmd += ["--scheduler", cluster.address, "--storage", url, *more]
    err = open(out.parent / f"{r.stem}-{time.monotonic_ns()}.err", "w")  # noqa: SIM115
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        env={**os.environ, "COLUMNS": "100"},
        preexec_fn=_interruptible,
    )


def _interruptible() -> None:
    """Ctrl-C reaches the search as in a user's shell: a test run started in the background (``cmd &``) has SIGINT
    ignored, and an ignored SIGINT is inherited, so Python would never raise KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_until(check, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the search ended ({proc.returncode}) before {what}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def started_trials(out: Path, name: str) -> list[Path]:
    return sorted((out / name / "trials").glob("*/trial.log"))


def test_a_search_on_scheduler_and_workers_survives_a_killed_worker(tmp_path, tiny_conv_file, cluster, pg):
    from toolchain.search import storage

    out = tmp_path / "b"
    r = recipe(tmp_path, tiny_conv_file, name="killed", trials=6)
    proc = search_process(r, out, cluster, pg)
    wait_until(lambda: len(started_trials(out, "killed")) >= 2, 180, "two trials running", proc)
    victim = cluster.worker_pids()["w0"]  # both workers hold a trial now: w0's dies mid-trial
    os.kill(victim, signal.SIGKILL)
    stdout, _ = proc.communicate(timeout=600)
    assert proc.returncode in (0, 25), stdout
    cluster.wait_for(2)  # its nanny started it again
    assert victim not in cluster.worker_pids().values()

    db = storage.open_storage(storage.url_for(pg, out))
    (study,) = storage.studies(db, "killed/")
    c = storage.counts(study)
    assert (c["finished"], c["failed"], c["interrupted"], c["running"]) == (6, 0, 0, 0), c
    starts = [p.read_text().count("trial: killed-") for p in started_trials(out, "killed")]
    assert sorted(starts)[-2:] == [1, 2], starts  # the killed trial ran again on another worker, once


def test_a_search_stopped_by_sigint_resumes_to_exactly_its_trials_apart_from_another_study(
    tmp_path, tiny_conv_file, cluster, pg
):
    from optuna.trial import TrialState

    from toolchain.search import storage

    out = tmp_path / "b"
    r = recipe(tmp_path, tiny_conv_file, name="stopped", trials=6, rates="[0.02, 0.05]")
    proc = search_process(r, out, cluster, pg)

    def finished():
        path = out / "stopped" / "search.json"
        return path.exists() and study_of(json.loads(path.read_text()))["counts"]["finished"] >= 1

    wait_until(finished, 300, "a finished trial", proc)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    db = storage.open_storage(storage.url_for(pg, out))
    (study,) = storage.studies(db, "stopped/")
    before = {t.number: t.params for t in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))}
    assert before and storage.counts(study)["running"] == 0  # the stopped client failed its running trials

    again = search_process(r, out, cluster, pg)
    again.communicate(timeout=600)
    assert again.returncode in (0, 25)
    (study,) = storage.studies(db, "stopped/")
    c = storage.counts(study)
    assert c["finished"] == 6 and c["running"] == c["waiting"] == 0, c
    after = {t.number: t.params for t in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))}
    assert all(after[n] == p for n, p in before.items())  # none lost, none run again
    assert not [p for p in (out / "stopped").rglob("*") if ".partial-" in p.name or p.name.endswith(".tmp")]

    # the other study in the database (the killed-worker test's, when it ran) keeps its own trials and space
    names = storage.quiet_optuna().get_all_study_names(storage=db)
    assert [n.split("/")[0] for n in names if n.startswith("stopped/")] == ["stopped"]
    assert {p["train.learning_rate"] for p in after.values()} <= {0.02, 0.05}
    for other in storage.studies(db, "killed/"):
        assert {t.params["train.learning_rate"] for t in other.trials} <= {0.003, 0.01, 0.03}

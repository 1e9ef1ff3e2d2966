"""The study database on real SQLite files: URLs, errors in one line, studies kept apart, trials a stopped client
left running failed and queued again, counts. No TensorFlow."""

from __future__ import annotations

import pytest

from toolchain.errors import StorageError
from toolchain.search import storage


def test_urls():
    assert storage.url_for(None, "/b/r/search.db") == "sqlite:////b/r/search.db"
    assert storage.url_for("/x/s.db", "/b") == "sqlite:////x/s.db"
    assert storage.url_for("postgresql://u:pw@h/db", "/b") == "postgresql+psycopg://u:pw@h/db?connect_timeout=5"
    assert storage.masked("postgresql+psycopg://u:secret@h:5432/db") == "postgresql+psycopg://u:***@h:5432/db"


def closed_port() -> int:
    from tests.search.servers import free_port

    return free_port()  # nothing listens there


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("sqlite:////nonexistent/folder/s.db", "the folder /nonexistent/folder does not exist"),
        ("foo://bar", "cannot open the study database: Can't load plugin: sqlalchemy.dialects:foo"),
        ("postgresql+psycopg://u:pw@127.0.0.1:{port}/db", "cannot open the study database: connection failed"),
    ],
)
def test_a_database_it_cannot_open_is_one_line(url, said):
    url = url.format(port=closed_port())
    with pytest.raises(StorageError) as exc:
        storage.open_storage(storage.url_for(url, "/x"))
    assert said in str(exc.value) and "\n" not in str(exc.value) and exc.value.exit_code == 24
    assert "pw" not in str(exc.value)  # the password is masked


def test_two_studies_stay_apart_and_lost_trials_are_failed_and_queued_again(tmp_path):
    from optuna.distributions import IntDistribution
    from optuna.trial import TrialState

    db = storage.open_storage(storage.url_for(tmp_path / "s.db", tmp_path))
    dists = {"x": IntDistribution(0, 100)}
    optuna = storage.quiet_optuna()
    a = storage.open_study(db, "r/a/k", ["maximize", "minimize"], optuna.samplers.RandomSampler(seed=0))
    b = storage.open_study(db, "r/b/k", ["maximize", "minimize"], optuna.samplers.RandomSampler(seed=1))
    for study, n in ((a, 3), (b, 2)):
        for _ in range(n):
            t = study.ask(dists)
            study.tell(t, [t.params["x"], 1.0])
    running = a.ask(dists)  # a client stopped here: the trial stays RUNNING in the database
    x = running.params["x"]
    assert [len(s.trials) for s in storage.studies(db, "r/")] == [4, 2]
    assert storage.counts(b)["complete"] == 2 and storage.counts(b)["running"] == 0

    again = storage.open_study(db, "r/a/k", ["maximize", "minimize"], optuna.samplers.RandomSampler(seed=0))
    assert storage.recover(again, dists) == 1
    c = storage.counts(again)
    assert (c["complete"], c["interrupted"], c["waiting"], c["finished"]) == (3, 1, 1, 3)
    retry = again.ask(dists)  # the queued point first
    assert retry.params["x"] == x and again.trials[retry.number].user_attrs["retry_of"] == running.number
    assert again.trials[running.number].state == TrialState.FAIL and storage.counts(b)["finished"] == 2

    with pytest.raises(StorageError, match="holds trials of other objectives"):
        storage.open_study(db, "r/a/k", ["maximize"], optuna.samplers.RandomSampler())

"""Where studies live: Optuna's RDB storage, SQLite by default (a file in the build folder), PostgreSQL to share a
study between machines. One study per (recipe, target, search); the status of a study read from the database."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from toolchain.errors import MissingExtraError, StorageError

log = logging.getLogger(__name__)
#: a trial the client lost (Ctrl-C, a killed client): failed with this user attribute, its point queued again
INTERRUPTED = "interrupted"


def quiet_optuna():
    """Optuna, imported, its own INFO lines off (the search logs its own) and its warnings through ours."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    return optuna


def url_for(storage: str | None, default: Path) -> str:
    """The SQLAlchemy URL of ``--storage`` (a URL, or a path of an SQLite file), else the default file."""
    if storage is None:
        return f"sqlite:///{Path(default).resolve()}"
    storage = str(storage)
    if "://" not in storage:
        return f"sqlite:///{Path(storage).resolve()}"
    if storage.startswith("postgresql://") or storage.startswith("postgres://"):
        storage = "postgresql+psycopg://" + storage.split("://", 1)[1]
    if storage.startswith("postgresql") and "connect_timeout=" not in storage:
        storage += ("&" if "?" in storage else "?") + "connect_timeout=5"  # a server that does not answer: 5 s
    return storage


def masked(url: str) -> str:
    """The URL without its password (what logs and the record show)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def open_storage(url: str):
    """Optuna's storage at ``url``: StorageError naming the reason in one line, MissingExtraError without the
    PostgreSQL driver."""
    optuna = quiet_optuna()
    if url.startswith("postgresql"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise MissingExtraError(
                "--storage postgresql://...: the PostgreSQL driver is not installed: pip install 'toolchain[postgres]'"
            ) from None
    if url.startswith("sqlite:///"):
        folder = Path(url.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise StorageError(f"--storage {masked(url)}: the folder {folder} does not exist")
    import sqlalchemy.exc

    try:
        return optuna.storages.RDBStorage(url)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as exc:
        raise StorageError(f"--storage {masked(url)}: cannot open the study database: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = [x.strip() for x in str(orig).strip().splitlines() if x.strip()]
    return lines[0] if lines else type(exc).__name__


def open_study(storage, name: str, directions: list[str], sampler):
    """The study ``name`` (created when new); one made with other objectives is refused, never mixed."""
    optuna = quiet_optuna()
    study = optuna.create_study(
        storage=storage, study_name=name, directions=directions, sampler=sampler, load_if_exists=True
    )
    have = [d.name.lower() for d in study.directions]
    if have != directions:
        raise StorageError(f"study {name}: it holds trials of other objectives ({', '.join(have)})")
    return study


def interrupted(study) -> set[int]:
    """The numbers of the study's trials a stopped client lost (kept in the study's own attributes)."""
    return set(study.user_attrs.get(INTERRUPTED, []))


def recover(study, distributions: dict, numbers: list[int] | None = None) -> int:
    """Trials left RUNNING by a client that stopped (Ctrl-C, killed; or ``numbers``, this client's own): failed as
    interrupted, their points queued again (the next ``ask`` takes them first), so no point is lost and none
    counts twice. Returns how many."""
    from optuna.trial import TrialState

    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    lost = [t for t in running if numbers is None or t.number in numbers]
    for t in lost:
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        if set(t.params) == set(distributions):
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
    if lost:
        study.set_user_attr(INTERRUPTED, sorted(interrupted(study) | {t.number for t in lost}))
    return len(lost)


def counts(study) -> dict[str, int]:
    """Trials by state; ``finished``: complete, pruned and failed, not counting interrupted ones."""
    out = {"complete": 0, "pruned": 0, "failed": 0, INTERRUPTED: 0, "running": 0, "waiting": 0}
    lost = interrupted(study)
    for t in study.get_trials(deepcopy=False):
        state = t.state.name.lower()
        if state == "fail":
            state = INTERRUPTED if t.number in lost else "failed"
        out[state] = out.get(state, 0) + 1
    out["finished"] = out["complete"] + out["pruned"] + out["failed"]
    return out


def studies(storage, prefix: str) -> list:
    """The studies whose names start with ``prefix`` (a recipe's: ``<recipe>/``), by name."""
    optuna = quiet_optuna()
    names = sorted(n for n in optuna.get_all_study_names(storage=storage) if n.startswith(prefix))
    return [optuna.load_study(study_name=n, storage=storage) for n in names]

"""``toolchain search`` refuses bad input in one line with its own exit code, before any trial and without writing
a record: no search block, a space a target cannot run, an objective a target does not measure, an unreachable
scheduler, a database it cannot open, a status with no study. No TensorFlow."""

from __future__ import annotations

import pytest

from tests.conftest import write_recipe
from tests.search.test_storage import closed_port

RECIPE = """
schema_version: 1
name: fam
model: {application: MobileNetV2, alpha: 0.35, input_shape: [32, 32, 3], classes: 10}
data: {builtin: digits}
train: {epochs: 2}
quantize: {mode: int8}
targets: [cortex-m4]
search:
  trials: 4
  space:
    model.alpha: [0.35, 0.5]
"""


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    ("change", "code", "said"),
    [
        (("search:\n  trials: 4\n  space:\n    model.alpha: [0.35, 0.5]\n", ""), 3, "no 'search:' block: add one"),
        (("model.alpha: [0.35, 0.5]", "quantize.mode: [int8, float16]"), 3, "search.space.quantize.mode: 'float16'"),
        (("  trials: 4", "  trials: 4\n  objectives: [metric, ram]\n  targets: [phone-cpu]"), 3, "'ram' is not"),
        (("  trials: 4", "  trials: 4\n  targets: [cortex-m9]"), 4, "search.targets.0: unknown target 'cortex-m9'"),
    ],
    ids=["no-search", "mode-m4-cannot-run", "ram-on-a-phone", "unknown-target"],
)
def test_a_search_it_cannot_run_is_refused_before_any_trial(change, code, said, tmp_path, run_cli):
    recipe = write_recipe(tmp_path, RECIPE.replace(*change))
    rc, out, err = run_cli("search", recipe, "--build-dir", tmp_path / "b")
    assert (rc, out) == (code, "") and said in one_line(err)
    assert not (tmp_path / "b").exists()


def test_workers_and_a_scheduler_together_is_a_usage_error(tmp_path, run_cli):
    recipe = write_recipe(tmp_path, RECIPE)
    rc, _, err = run_cli("search", recipe, "--workers", "2", "--scheduler", "tcp://127.0.0.1:8786")
    assert rc == 2 and "give --workers (a local cluster) or --scheduler" in one_line(err)


def test_an_unreachable_scheduler_is_exit_23_and_writes_nothing(tmp_path, run_cli, monkeypatch):
    from toolchain.executors import dask

    monkeypatch.setattr(dask, "CONNECT_TIMEOUT", 1)
    recipe = write_recipe(tmp_path, RECIPE)
    address = f"tcp://127.0.0.1:{closed_port()}"
    rc, out, err = run_cli("search", recipe, "--build-dir", tmp_path / "b", "--scheduler", address)
    assert (rc, out) == (23, "")
    assert one_line(err).startswith(f"error: --scheduler {address}: cannot reach the Dask scheduler: Timed out")
    assert not (tmp_path / "b" / "fam").exists()  # no database, no record


def test_a_database_it_cannot_open_is_exit_24_and_a_missing_study_exit_16(tmp_path, run_cli):
    recipe = write_recipe(tmp_path, RECIPE)
    url = f"postgresql://u:secret@127.0.0.1:{closed_port()}/db"
    rc, out, err = run_cli("search", recipe, "--build-dir", tmp_path / "b", "--storage", url, "--status")
    assert (rc, out) == (24, "") and "cannot open the study database: connection failed" in one_line(err)
    assert "secret" not in err
    rc, _, err = run_cli("search", recipe, "--build-dir", tmp_path / "b", "--status")
    assert rc == 16 and "no search of fam has run into" in one_line(err)
    rc, _, err = run_cli("search", recipe, "--storage", tmp_path / "none" / "s.db", "--status")
    assert rc == 24 and f"the folder {tmp_path / 'none'} does not exist" in one_line(err)

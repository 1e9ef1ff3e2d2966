"""Hostile input: every bad input of the corpus (tests/hostile.py) gets one line, its own exit code, no traceback."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.hostile import CASES


def params(cases):
    return [pytest.param(c, id=c.name, marks=[pytest.mark.tf] if c.tf else []) for c in cases]


@pytest.mark.parametrize("case", params(CASES))
def test_bad_input_gets_its_exit_code_and_one_line(case, tmp_path, run_cli, monkeypatch):
    from toolchain.config import loader

    monkeypatch.setattr(loader, "TARGETS_DIR", loader.TARGETS_DIR)  # --targets-dir sets it: restored after the case
    args = case.make(tmp_path)
    code, out, err = run_cli(*args)
    assert code == case.code, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and case.message in lines[0], err
    assert "Traceback" not in err and "internal error" not in err
    assert not (tmp_path / "out" / "bad" / "phone-cpu").exists()  # no folder that looks like a result


@pytest.mark.parametrize(
    "cases",
    [
        pytest.param([c for c in CASES if not c.tf], id="no-tf"),
        pytest.param([c for c in CASES if c.tf], id="tf", marks=pytest.mark.tf),
    ],
)
def test_no_bad_input_reaches_an_internal_error_in_a_real_process(cases, tmp_path):
    """The same corpus through ``python -m toolchain`` in fresh processes (two at a time)."""
    assert len(cases) >= 2
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}

    def run(case):
        folder = tmp_path / case.name
        folder.mkdir()
        args = case.make(folder)
        proc = subprocess.run(
            [sys.executable, "-m", "toolchain", *args], capture_output=True, text=True, env=env, timeout=300
        )
        return case, proc

    with ThreadPoolExecutor(2) as pool:
        for case, proc in pool.map(run, cases):
            bad = [line for line in proc.stderr.splitlines() if "internal error" in line or "Traceback" in line]
            assert not bad, (case.name, proc.stderr[-2000:])
            assert proc.returncode == case.code, (case.name, proc.stderr[-2000:])


def _cli_capped(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m toolchain ARGS`` in a process limited to 3 GB of address space; also its wall time."""
    import resource
    import time

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "toolchain", *args], capture_output=True, text=True, timeout=30, preexec_fn=cap
    )
    return proc, time.monotonic() - start


@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
def test_a_device_or_fifo_as_recipe_answers_at_once_under_a_memory_cap(kind, tmp_path):
    path = "/dev/zero"
    if kind == "fifo":
        path = str(tmp_path / "recipe.yaml")
        os.mkfifo(path)
    proc, seconds = _cli_capped("recipe", "check", path)
    assert proc.returncode == 3 and proc.stdout == "", proc.stderr
    assert proc.stderr.startswith(f"error: {path}: not a regular file") and proc.stderr.count("\n") == 1
    assert seconds < 2, seconds


def test_targets_list_prints_nothing_when_a_profile_is_bad(tmp_path, run_cli, monkeypatch):
    from tests.conftest import REPO
    from toolchain.config import loader

    monkeypatch.setattr(loader, "TARGETS_DIR", loader.TARGETS_DIR)
    for name in ("cortex-m7", "phone-cpu"):  # the good one sorts first, the bad one after it
        text = (REPO / "targets" / f"{name}.yaml").read_text()
        (tmp_path / f"{name}.yaml").write_text(text.replace("batch: null", "batch: -3"))
    code, out, err = run_cli("--targets-dir", tmp_path, "targets", "list")
    assert code == 3 and out == ""
    assert err.startswith(f"error: {tmp_path / 'phone-cpu.yaml'}:7: batch: Input should be greater than or equal to 1")
    (tmp_path / "phone-cpu.yaml").unlink()
    code, out, _ = run_cli("--targets-dir", tmp_path, "targets", "list", "--wide")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["cortex-m7"]

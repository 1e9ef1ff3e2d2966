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
def test_bad_input_gets_its_exit_code_and_one_line(case, tmp_path, run_cli):
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

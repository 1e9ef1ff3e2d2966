"""The fast tier's guard (tests/conftest.py): under ``-m "not tf"`` a test that loads TensorFlow, LiteRT's
interpreter, tflite-micro or Vela without the ``tf`` marker errors, named, also when a subprocess loads it.

The inner sessions put a stand-in module into ``sys.modules`` (nothing heavy is imported)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from tests.conftest import REPO, _deselects_tf

INNER = """
import subprocess, sys, types

import pytest


def test_clean():
    assert 1 + 1 == 2


def test_sneaks_tflite_micro_in():
    sys.modules["tflite_micro"] = types.ModuleType("tflite_micro")


@pytest.mark.tf
def test_marked_may_load_it():
    sys.modules["tensorflow"] = types.ModuleType("tensorflow")


def test_a_subprocess_loads_ethosu():
    code = "import sys, types; sys.modules['ethosu'] = types.ModuleType('ethosu')"
    subprocess.run([sys.executable, "-c", code], check=True)
"""


def run_inner(tmp_path, *args):
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER))
    cmd = [sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml"), "-p", "tests.conftest"]
    cmd += ["-p", "no:cacheprovider", "--rootdir", str(tmp_path), *args, str(tmp_path / "test_inner.py")]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TOOLCHAIN_TFGUARD_DIR")}  # not ours
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # third-party plugins (anyio, from the torch extra) add warnings
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, env=env)


def test_the_guard_names_each_unmarked_test_that_loads_a_heavy_module(tmp_path):
    proc = run_inner(tmp_path, "-m", "not tf", "-rA")
    assert proc.returncode == 1, proc.stdout
    assert "3 passed, 1 deselected, 2 errors" in proc.stdout, proc.stdout
    assert "test_sneaks_tflite_micro_in imported tflite_micro but is not marked tf" in proc.stdout
    assert "test_a_subprocess_loads_ethosu imported ethosu by `-c` (in a subprocess) but is not marked tf" in (
        proc.stdout
    )


def test_without_a_tf_deselection_the_guard_is_off(tmp_path):
    proc = run_inner(tmp_path, "-m", "tf or not tf")
    assert proc.returncode == 0 and "4 passed" in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    ("markexpr", "on"),
    [
        ("not tf", True),
        ("not tf and not slow", True),
        ("not slow and not tf", True),
        ("benchmark", False),  # a benchmark could need TensorFlow
        ("", False),
        ("tf", False),
        ("not slow", False),
        ("slow", False),  # the slow tests need TensorFlow too
        ("tf or not tf", False),
    ],
)
def test_the_guard_is_on_exactly_when_every_tf_test_is_deselected(markexpr, on):
    markers = ["slow: end-to-end", "tf: needs TensorFlow", "benchmark: references"]
    config = SimpleNamespace(option=SimpleNamespace(markexpr=markexpr), getini=lambda name: markers)
    assert _deselects_tf(config) is on

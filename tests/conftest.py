"""Shared fixtures: tiny real models, tiny real data, recipes written to tmp folders."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]

# The fast tier (``-m "not tf"``) must not load these; ``ai_edge_litert.schema_py_generated`` (flatbuffer parsing,
# as toolchain/tflite_model.py does) is allowed.
HEAVY = ("tensorflow", "tf_keras", "tflite_micro", "ethosu", "ai_edge_litert.interpreter")
GUARD_DIR = Path(__file__).resolve().parent / "tfguard"  # holds the sitecustomize.py that watches subprocesses
_guard: dict = {"on": False, "seen": set(), "reports": None}


def heavy_loaded() -> set[str]:
    """The heavy modules this process has imported."""
    return {name for name in HEAVY if name in sys.modules}


def _deselects_tf(config) -> bool:
    """Whether ``-m`` deselects every test marked ``tf``, whatever other markers it carries."""
    if not config.option.markexpr:
        return False
    from itertools import combinations

    try:
        from _pytest.mark.expression import Expression  # pytest's own -m parser (not a public API)
    except ImportError:
        return "not tf" in config.option.markexpr
    expr = Expression.compile(config.option.markexpr)
    others = [m.split(":")[0].strip() for m in config.getini("markers") if not m.startswith("tf:")]
    combos = [set(c) for n in range(len(others) + 1) for c in combinations(others, n)]
    return not any(expr.evaluate(lambda name, /, c=c, **kw: name == "tf" or name in c) for c in combos)


def pytest_configure(config):
    _guard["on"] = _deselects_tf(config)
    if _guard["on"]:
        import tempfile

        _guard["seen"] = heavy_loaded()
        _guard["reports"] = Path(tempfile.mkdtemp(prefix="tfguard-"))
        os.environ["TOOLCHAIN_TFGUARD_DIR"] = str(_guard["reports"])
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(GUARD_DIR), os.environ.get("PYTHONPATH")]))


def _newly_heavy() -> list[str]:
    """Heavy modules loaded since the last look, here or in a subprocess (reported by tfguard/sitecustomize.py)."""
    now = heavy_loaded()
    new = sorted(now - _guard["seen"])
    _guard["seen"] |= now
    for report in sorted(_guard["reports"].iterdir()):
        new.append(f"{report.read_text().strip()} (in a subprocess)")
        report.unlink()
    return new


@pytest.hookimpl(tryfirst=True)
def pytest_collectreport(report):
    if _guard["on"] and report.passed and (new := _newly_heavy()):
        report.outcome = "failed"
        report.longrepr = f"{report.nodeid} imported {', '.join(new)} while being collected; import it inside the tests"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if _guard["on"] and call.when == "teardown" and (new := _newly_heavy()):
        if item.get_closest_marker("tf") is None:
            report.outcome = "failed"
            report.longrepr = f"{item.nodeid} imported {', '.join(new)} but is not marked tf (pytest.mark.tf)"
    return report


def pytest_sessionfinish(session):
    if not _guard["on"]:
        return
    if new := _newly_heavy():
        session.config.get_terminal_writer().line(
            f"error: the run imported {', '.join(new)} outside any test", red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    import shutil

    shutil.rmtree(_guard["reports"], ignore_errors=True)


@pytest.fixture(scope="session")
def keras():
    from toolchain.models.compat import keras as k

    return k()


@pytest.fixture(scope="session")
def tiny_dense(keras):
    """Dense 10 -> 8 -> 5 with softmax, fixed seed."""
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [keras.Input((10,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(5, activation="softmax")]
    )


@pytest.fixture(scope="session")
def tiny_conv(keras):
    """One-conv net on 8x8x1 images with 10 classes (fits the digits at their native size)."""
    keras.utils.set_random_seed(2)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(
                8, 3, name="conv"
            ),  # names fixed: Keras' auto-names depend on what the session built before
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(name="relu"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(10, activation="softmax", name="dense"),
        ]
    )


@pytest.fixture(scope="session")
def tiny_conv_file(tiny_conv, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny_conv.keras"
    tiny_conv.save(path)
    return path


def write_recipe(folder: Path, body: str, name: str = "recipe.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body).lstrip())
    return path


@pytest.fixture
def tiny_recipe(tmp_path, tiny_conv_file):
    """A complete recipe over the tiny conv model and the digits at 8x8x1: builds in seconds."""

    def make(
        extra: str = "",
        quantize: str = "mode: int8",
        targets: str = "[phone-cpu]",
        train: str = "train: {epochs: 3, batch_size: 32, learning_rate: 0.01}",
    ) -> Path:
        body = textwrap.dedent(f"""
            schema_version: 1
            name: tiny
            model:
              file: {tiny_conv_file}
              classes: 10
            data:
              builtin: digits
            {train}
            quantize: {{{quantize}, calibration_samples: 50}}
            targets: {targets}
            """).lstrip()
        path = tmp_path / "recipe.yaml"
        path.write_text(body + extra + "\n")
        return path

    return make


@pytest.fixture
def run_cli(capfd):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    from toolchain.cli.main import main

    def run(*args: str):
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in args])
        out, err = capfd.readouterr()
        return exc.value.code, out, err

    return run


def int8_model(model, path: Path | None = None, io: str = "int8", batch: int | None = 1, seed: int = 0) -> bytes:
    """Full-int8 conversion of a Keras model with random calibration data; written to ``path`` if given."""
    from toolchain.convert import ConvertPlan, convert

    x = np.random.default_rng(seed).uniform(-1, 1, (32, *model.input_shape[1:])).astype(np.float32)
    blob = convert(model, ConvertPlan("int8", io, batch=batch), x)
    if path is not None:
        path.write_bytes(blob)
    return blob


@pytest.fixture(scope="session")
def tiny_conv_int8(tiny_conv, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("int8") / "tiny_conv_int8.tflite"
    int8_model(tiny_conv, path)
    return path


@pytest.fixture
def targets_dir(tmp_path, monkeypatch):
    """A targets folder with the shipped profiles, to which a test can add its own."""
    import shutil

    tdir = tmp_path / "targets"
    shutil.copytree(REPO / "targets", tdir)
    monkeypatch.setattr("toolchain.config.loader.TARGETS_DIR", tdir)
    return tdir


@pytest.fixture(scope="session")
def all_targets(tmp_path_factory, tiny_conv_file):
    """The tiny recipe built once for phone CPU/GPU, MCU, NPU and TPU; returns (record, build dir)."""
    from toolchain.config import load_recipe
    from toolchain.pipeline import build

    folder = tmp_path_factory.mktemp("all")
    recipe = write_recipe(
        folder,
        f"""
        schema_version: 1
        name: tiny
        model: {{file: {tiny_conv_file}, classes: 10}}
        data: {{builtin: digits}}
        train: {{epochs: 2, learning_rate: 0.01}}
        quantize: {{calibration_samples: 50}}
        targets: [phone-cpu, phone-gpu, cortex-m7, ethos-u55-128, edgetpu]
        """,
    )
    return build(load_recipe(recipe), out=folder / "build"), folder / "build"

"""The output folder under faults and concurrency: one build at a time, a record that keeps every target, folders
published whole, a cache that verifies itself, SIGTERM, and file-system errors with their own exit code."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from toolchain.checks import Check, register

pytestmark = pytest.mark.tf

TWO_TARGETS = "[phone-cpu, cortex-m7]"


def record(out: Path) -> dict:
    return json.loads((out / "tiny" / "build.json").read_text())


def test_second_build_fails_with_no_wait_or_waits(tiny_recipe, tmp_path, run_cli):
    from toolchain.stages.context import _lock

    recipe, out = tiny_recipe(train="train: {epochs: 1}"), tmp_path / "b"
    out.mkdir()
    with _lock(out, wait=True):
        code, _, err = run_cli("build", recipe, "--out", out, "--no-wait")
    assert code == 18 and f"error: {out} is in use by another build (pid {os.getpid()})" in err
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import time; from pathlib import Path; from toolchain.stages.context import _lock\n"
            f"with _lock(Path({str(out)!r}), True):\n    print('locked', flush=True); time.sleep(3)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    code, _, err = run_cli("build", recipe, "--out", out)
    holder.wait()
    assert code == 0 and "waiting for another build in" in err


def test_record_keeps_every_target_built_into_the_folder(tiny_recipe, tmp_path, run_cli):
    recipe, out = tiny_recipe(targets=TWO_TARGETS, train="train: {epochs: 1}"), tmp_path / "b"
    assert run_cli("build", recipe, "--out", out, "--target", "phone-cpu")[0] == 0
    code, _, err = run_cli("package", recipe, "--build-out", out, "--out", tmp_path / "d")
    assert code == 0 and "lacks cortex-m7" in err  # package rebuilt the missing target
    assert [r["target"] for r in record(out)["results"]] == ["phone-cpu", "cortex-m7"]
    first = record(out)["results"][0]["latency"]
    assert run_cli("build", recipe, "--out", out, "--target", "phone-cpu", "--remeasure")[0] == 0
    results = record(out)["results"]
    assert [r["target"] for r in results] == ["phone-cpu", "cortex-m7"] and results[0]["latency"] != first
    recipe.write_text(recipe.read_text().replace("calibration_samples: 50", "calibration_samples: 40"))
    assert run_cli("build", recipe, "--out", out, "--target", "phone-cpu")[0] == 0
    assert [r["target"] for r in record(out)["results"]] == ["phone-cpu"]  # another recipe text: old entries go
    assert not (out / "tiny" / "cortex-m7").exists()


@register
class InterruptingCheck(Check):
    name = "test-interrupts"

    def run(self, ctx):
        raise KeyboardInterrupt  # what Ctrl-C does in the middle of a check


def test_an_interrupted_build_leaves_no_folder_that_looks_like_a_result(tiny_recipe, tmp_path, targets_dir, run_cli):
    text = (
        (targets_dir / "phone-cpu.yaml")
        .read_text()
        .replace("name: phone-cpu", "name: stops")
        .replace("[litert]", "[litert, test-interrupts]")
    )
    (targets_dir / "stops.yaml").write_text(text)
    out = tmp_path / "b"
    code, _, err = run_cli("build", tiny_recipe(targets="[stops]", train="train: {epochs: 1}"), "--out", out)
    assert code == 130 and err.strip().endswith("aborted")
    assert sorted(p.name for p in (out / "tiny").iterdir()) == ["build.log"]  # no target folder, no record
    assert not (out / ".tmp").exists() and not list((out / ".cache").glob("*/.*"))


def test_cache_discards_damaged_entries_and_stale_temps(tiny_recipe, tmp_path, run_cli):
    recipe, out = tiny_recipe(train="train: {epochs: 1}"), tmp_path / "b"
    assert run_cli("build", recipe, "--out", out)[0] == 0
    sha = record(out)["results"][0]["sha256"]
    cached = next((out / ".cache" / "quantize").glob("*/model.tflite"))
    cached.write_bytes(cached.read_bytes()[:100])  # truncated
    shutil.rmtree(next((out / ".cache" / "check-litert").glob("*")))
    (next((out / ".cache" / "model").glob("*")) / "model.keras").unlink()
    (out / ".cache" / "quantize" / ".0123456789ab.dead").mkdir()  # what a SIGKILL leaves
    (out / ".tmp" / "99999").mkdir(parents=True)
    code, _, err = run_cli("build", recipe, "--out", out)
    assert code == 0, err
    assert "discarding damaged entry quantize/" in err and "discarding damaged entry model/" in err
    assert record(out)["results"][0]["sha256"] == sha
    assert not (out / ".cache" / "quantize" / ".0123456789ab.dead").exists() and not (out / ".tmp").exists()


def test_sigterm_is_handled_like_ctrl_c(tiny_recipe, tmp_path):
    recipe, out = tiny_recipe(train="train: {epochs: 200, batch_size: 8}"), tmp_path / "b"
    before = set(Path("/tmp").glob("__autograph_generated_file*"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolchain", "build", str(recipe), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stderr:
        if "train: epoch 2/" in line:
            break
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 143
    assert rest.strip().splitlines()[-1] == "terminated" and "Traceback" not in rest
    assert not (out / ".tmp").exists() and not list((out / ".cache").glob("*/.*"))
    assert set(Path("/tmp").glob("__autograph_generated_file*")) == before


def _unshare_ok() -> bool:
    try:
        return subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(not _unshare_ok(), reason="needs a private mount namespace (unshare -m, as root)")
@pytest.mark.parametrize(
    "options, message", [("ro,size=1m", "Read-only file system"), ("size=64k", "No space left on device")]
)
def test_read_only_and_full_output_folders(tiny_recipe, tmp_path, options, message):
    recipe, mnt = tiny_recipe(train="train: {epochs: 1}"), tmp_path / "mnt"
    mnt.mkdir()
    cmd = f"mount -t tmpfs -o {options} none {mnt} && exec {sys.executable} -m toolchain build {recipe} --out {mnt}/out"
    proc = subprocess.run(["unshare", "-m", "sh", "-c", cmd], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 19, proc.stderr[-1500:]
    error = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and error[0].startswith(f"error: cannot write {mnt}/out") and message in error[0]


def test_a_name_too_long_for_the_file_system(tiny_recipe, tmp_path, run_cli):
    code, _, err = run_cli("build", tiny_recipe(), "--out", tmp_path / ("x" * 300))
    assert code == 19 and "File name too long" in err and err.count("\n") == 1


@pytest.mark.tf
def test_a_build_reusing_a_cached_model_writes_the_artifact_a_cold_build_writes(tiny_recipe, tmp_path, run_cli):
    """A search's trial often finds its trained model in the cache (another trial trained it) while a --write-best
    rebuild trains it: both must trace the same graph (the model read back from its entry), so the same bytes."""
    recipe = tiny_recipe(targets="[cortex-m7]")
    code, _, err = run_cli("build", recipe, "--build-dir", tmp_path / "cold")
    assert code == 0, err
    warm = tmp_path / "warm"
    (warm / ".cache").mkdir(parents=True)
    for stage in ("data", "model"):  # the trained model only: calibration and quantization computed again
        shutil.copytree(tmp_path / "cold" / ".cache" / stage, warm / ".cache" / stage)
    code, _, err = run_cli("build", recipe, "--build-dir", warm)
    assert code == 0 and "model: float reference" in err and "(cached)" in err
    sha = [record(d)["results"][0]["sha256"] for d in (tmp_path / "cold", warm)]
    assert sha[0] == sha[1]

"""toolchain/stages/context.py: open_build's lock, temp folder, sweep of what killed builds left, path checks."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile
import time

import pytest

from tests.conftest import write_recipe
from toolchain.config import load_recipe
from toolchain.errors import BuildLockedError, FilesystemError
from toolchain.stages.context import check_paths, open_build

RECIPE = """
schema_version: 1
name: ctx
model: {application: MobileNetV2, alpha: 0.35, input_shape: [32, 32, 3], classes: 10}
data: {builtin: digits}
targets: [phone-cpu]
"""


@pytest.fixture
def recipe(tmp_path):
    return load_recipe(write_recipe(tmp_path, RECIPE))


def test_the_build_context(recipe, tmp_path):
    out = tmp_path / "out"
    with open_build(recipe, out, use_cache=False, remeasure=True) as b:
        assert b.dir == out / "ctx" and b.dir.is_dir()
        assert b.log_path == out / "ctx" / "build.log"
        assert b.cache.root == out / ".cache" and b.cache.enabled is False
        assert b.remeasure is True and b.versions is b.cache.versions and b.shared == {}
        assert (out / ".lock").read_text() == f"pid {os.getpid()}\n"


def test_tmpdir_points_into_the_build_and_is_restored(recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", "/somewhere/else")
    monkeypatch.setattr(tempfile, "tempdir", None)
    out = tmp_path / "out"
    with open_build(recipe, out):
        private = out / ".tmp" / str(os.getpid())
        assert os.environ["TMPDIR"] == str(private) and tempfile.gettempdir() == str(private)
        assert private.is_dir()
        (private / "autograph.py").write_text("x")
    assert os.environ["TMPDIR"] == "/somewhere/else" and tempfile.tempdir is None
    assert not (out / ".tmp").exists()


def test_an_unset_tmpdir_stays_unset_also_after_an_exception(recipe, tmp_path, monkeypatch):
    monkeypatch.delenv("TMPDIR", raising=False)
    before = tempfile.tempdir
    with pytest.raises(ValueError, match="stage failed"):
        with open_build(recipe, tmp_path / "out"):
            raise ValueError("stage failed")
    assert "TMPDIR" not in os.environ and tempfile.tempdir == before
    assert not (tmp_path / "out" / ".tmp").exists()


def test_a_second_build_of_the_same_folder_with_no_wait_is_refused(recipe, tmp_path):
    out = tmp_path / "out"
    with open_build(recipe, out):
        with pytest.raises(BuildLockedError) as exc:
            with open_build(recipe, out, wait=False):
                pass
    assert exc.value.exit_code == 18
    assert str(exc.value) == f"{out} is in use by another build (pid {os.getpid()}); wait for it, or use another --out"
    with open_build(recipe, out, wait=False) as b:  # released at the end of the first
        assert b.dir.is_dir()


def hold_lock(out, seconds):
    """Another process holding OUT/.lock for ``seconds``; returns once it holds it."""
    code = (
        "import fcntl, sys, time\n"
        f"f = open({str(out / '.lock')!r}, 'a+'); fcntl.flock(f, fcntl.LOCK_EX)\n"
        "f.truncate(0); f.write('pid 4242 (test)'); f.flush(); print('held', flush=True)\n"
        f"time.sleep({seconds})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "held\n"
    return proc


def test_the_lock_holder_is_named_and_a_waiting_build_starts_when_it_ends(recipe, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = hold_lock(out, 1.0)
    try:
        with pytest.raises(BuildLockedError, match=r"in use by another build \(pid 4242 \(test\)\)"):
            with open_build(recipe, out, wait=False):
                pass
        t0 = time.monotonic()
        with open_build(recipe, out, wait=True):
            waited = time.monotonic() - t0
            assert (out / ".lock").read_text() == f"pid {os.getpid()}\n"
    finally:
        proc.wait(timeout=30)
    assert waited > 0.3


def test_what_killed_builds_left_is_swept_and_the_rest_kept(recipe, tmp_path):
    out = tmp_path / "out"
    stale = [
        out / ".tmp" / "999" / "autograph.py",
        out / ".cache" / "check-litert" / ".0123456789ab.x1y2" / "section.json",  # an unfinished cache entry
        out / "ctx" / ".phone-cpu.partial-abc" / "model.tflite",  # a target folder being written
    ]
    kept = [
        out / ".cache" / "check-litert" / "0123456789abcdef" / "meta.json",
        out / "ctx" / "phone-cpu" / "report.md",
        out / "ctx" / "build.json",
    ]
    for path in stale + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    half_file = out / "ctx" / ".build.json.abc.tmp"
    half_file.write_text("{")
    with open_build(recipe, out):
        assert [p.exists() for p in stale] == [False, False, False] and not half_file.exists()
        assert not (out / "ctx" / ".phone-cpu.partial-abc").exists()
        assert [p.read_text() for p in kept] == ["x", "x", "x"]


def test_a_full_disk_inside_the_build_is_a_filesystem_error(recipe, tmp_path):
    with pytest.raises(FilesystemError) as exc:
        with open_build(recipe, tmp_path / "out"):
            raise OSError(errno.ENOSPC, "No space left on device", "/out/ctx/model.tflite")
    assert exc.value.exit_code == 19
    assert str(exc.value) == "cannot write /out/ctx/model.tflite: No space left on device"


def test_other_os_errors_pass_through(recipe, tmp_path):
    with pytest.raises(ConnectionRefusedError):
        with open_build(recipe, tmp_path / "out"):
            raise ConnectionRefusedError(errno.ECONNREFUSED, "refused")


def test_check_paths_refuses_an_output_folder_too_deep_for_the_file_system(recipe, tmp_path):
    check_paths(tmp_path / "out", recipe)  # a normal folder passes
    limit = os.pathconf("/", "PC_PATH_MAX")
    deep = tmp_path.joinpath(*["d" * 200] * (limit // 200))
    with pytest.raises(FilesystemError, match=f"the build's paths would exceed {limit} bytes; use a shorter --out"):
        check_paths(deep, recipe)
    with pytest.raises(FilesystemError):
        with open_build(recipe, deep):
            pass
    assert not (tmp_path / ("d" * 200)).exists()  # refused before creating anything


def test_the_path_room_is_counted_against_the_limit(recipe, tmp_path, monkeypatch):
    from toolchain.stages import context

    longest = len(os.fsencode(str((tmp_path / "out" / "ctx").resolve())))
    limit = os.pathconf("/", "PC_PATH_MAX")
    monkeypatch.setattr(context, "PATH_ROOM", limit - longest)
    check_paths(tmp_path / "out", recipe)
    monkeypatch.setattr(context, "PATH_ROOM", limit - longest + 1)
    with pytest.raises(FilesystemError):
        check_paths(tmp_path / "out", recipe)

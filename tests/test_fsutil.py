"""toolchain/fsutil.py: atomic writes leave nothing half-written, hashes, capturing fds 1 and 2."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys

import pytest

from toolchain import fsutil
from toolchain.fsutil import atomic_copy, atomic_dir, atomic_write, sha256_file, sha256_tree


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_writes_bytes_and_text_and_makes_parents(tmp_path):
    atomic_write(tmp_path / "a" / "b" / "x.bin", b"\x00\x01")
    path = atomic_write(tmp_path / "a" / "t.txt", "héllo")
    assert path == tmp_path / "a" / "t.txt"
    assert (tmp_path / "a" / "b" / "x.bin").read_bytes() == b"\x00\x01"
    assert path.read_bytes() == "héllo".encode()
    assert listing(tmp_path / "a") == ["b", "t.txt"]  # no temp file left beside it


def test_atomic_write_replaces_a_file_whole(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("old and longer")
    atomic_write(path, "new")
    assert path.read_text() == "new"


def test_atomic_write_failing_mid_way_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("old")

    class Exploding(str):
        def encode(self, *args):
            raise KeyboardInterrupt  # a BaseException, as Ctrl-C

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, Exploding("new"))
    assert path.read_text() == "old" and listing(tmp_path) == ["x.txt"]


def test_atomic_write_gives_the_umask_mode_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "x", b"1")
        assert path.stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        assert atomic_write(tmp_path / "y", b"1").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_atomic_copy_copies_bytes(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(256)) * 10)
    dst = atomic_copy(src, tmp_path / "out" / "dst.bin")
    assert dst.read_bytes() == src.read_bytes() and listing(tmp_path / "out") == ["dst.bin"]


def test_atomic_copy_of_a_missing_file_writes_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_copy(tmp_path / "missing", tmp_path / "dst")
    assert listing(tmp_path) == []


def test_atomic_dir_publishes_the_folder_whole(tmp_path):
    final = tmp_path / "target"
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("a")
        assert tmp.parent == tmp_path and tmp.name.startswith(".target.partial-")
        assert not final.exists()  # nothing visible until the block ends
    assert listing(final) == ["a.txt"] and listing(tmp_path) == ["target"]


def test_atomic_dir_replaces_the_old_folder_without_leaving_stale_files(tmp_path):
    final = tmp_path / "target"
    final.mkdir()
    (final / "stale.txt").write_text("from an earlier build")
    with atomic_dir(final) as tmp:
        (tmp / "new.txt").write_text("new")
    assert listing(final) == ["new.txt"] and listing(tmp_path) == ["target"]


def test_atomic_dir_on_an_exception_keeps_the_old_folder_and_removes_the_temp(tmp_path):
    final = tmp_path / "target"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="stage failed"):
        with atomic_dir(final) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("stage failed")
    assert listing(final) == ["old.txt"] and listing(tmp_path) == ["target"]


def test_atomic_dir_interrupted_before_any_folder_existed_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(tmp_path / "sub" / "target") as tmp:
            (tmp / "x").write_text("x")
            raise KeyboardInterrupt
    assert listing(tmp_path / "sub") == []


def test_atomic_dir_folder_gets_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "t"):
            pass
    finally:
        os.umask(old)
    assert (tmp_path / "t").stat().st_mode & 0o777 == 0o755  # not mkdtemp's 0700


def test_sha256_file_matches_hashlib_over_several_blocks(tmp_path):
    data = os.urandom((1 << 20) + 12345)  # more than one 1 MiB block
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_sha256_tree_of_a_file_is_its_sha256(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert sha256_tree(tmp_path / "f") == hashlib.sha256(b"abc").hexdigest()


def test_sha256_tree_is_the_documented_digest_of_names_and_contents(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a.txt").write_bytes(b"1")
    (tmp_path / "b" / "c.txt").write_bytes(b"2")
    h = hashlib.sha256()
    for name, data in (("a.txt", b"1"), ("b/c.txt", b"2")):
        h.update(name.encode() + hashlib.sha256(data).digest())
    assert sha256_tree(tmp_path) == h.hexdigest()


def test_sha256_tree_changes_with_a_name_or_a_byte_and_ignores_empty_folders(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"1")
    before = sha256_tree(tmp_path)
    (tmp_path / "empty").mkdir()
    assert sha256_tree(tmp_path) == before
    (tmp_path / "a.txt").write_bytes(b"2")
    changed = sha256_tree(tmp_path)
    assert changed != before
    (tmp_path / "a.txt").rename(tmp_path / "b.txt")
    assert sha256_tree(tmp_path) not in (before, changed)


def test_capture_fds_sends_python_and_native_output_to_the_log(tmp_path):
    """Runs in a fresh process: pytest's own capture replaces fds 1 and 2 in this one."""
    log = tmp_path / "logs" / "build.log"
    code = f"""
import os, sys
from toolchain.fsutil import capture_fds, console
print("before")
with capture_fds({str(log)!r}):
    print("python stdout")
    print("python stderr", file=sys.stderr)
    os.write(1, b"native fd1\\n")
    os.write(2, b"native fd2\\n")
    console().write("progress\\n")
    console().flush()
print("after")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "before\nafter\n"
    assert proc.stderr == "progress\n"  # console() reaches the terminal while the capture runs
    text = log.read_text()
    assert text.splitlines() == ["python stdout", "python stderr", "native fd1", "native fd2"]


def test_capture_fds_appends_and_restores_after_an_exception(tmp_path):
    log = tmp_path / "build.log"
    log.write_text("earlier\n")
    code = f"""
import os, sys
from toolchain.fsutil import capture_fds, console
try:
    with capture_fds({str(log)!r}):
        print("inside")
        with capture_fds({str(log)!r}):  # nested: progress still reaches the terminal
            console().write("nested progress\\n")
            console().flush()
        raise ValueError
except ValueError:
    pass
print("restored")
os.write(2, b"fd2 restored\\n")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "restored\n" and proc.stderr == "nested progress\nfd2 restored\n"
    assert log.read_text() == "earlier\ninside\n"


def test_console_is_stderr_without_a_capture():
    assert fsutil.console() is sys.stderr


def test_setup_logging_installs_one_handler_and_sets_the_level():
    root = logging.getLogger("toolchain")
    saved = root.handlers[:], root.level, root.propagate
    try:
        fsutil.setup_logging(verbose=False)
        fsutil.setup_logging(verbose=True)
        assert len(root.handlers) == 1 and root.level == logging.DEBUG and root.propagate is False
        handler = root.handlers[0]
        assert handler.stream is sys.stderr and "%(name)s" in handler.formatter._fmt
        fsutil.setup_logging()
        assert root.level == logging.INFO and root.handlers[0].formatter._fmt == "%(message)s"
    finally:
        root.handlers[:], root.level, root.propagate = saved


def test_held_signals_land_after_the_block_and_not_inside_it():
    import signal
    import time

    from toolchain.fsutil import held_signals

    done = []
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # a background run (cmd &) ignores SIGINT
    try:
        with pytest.raises(KeyboardInterrupt):
            with held_signals():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # the signal arrives here and waits
                done.append("bookkeeping")
        assert done == ["bookkeeping"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler put back
    finally:
        signal.signal(signal.SIGINT, before)

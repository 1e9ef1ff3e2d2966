"""Progress of the long steps on stderr: a bar with n/total, elapsed and ETA on a terminal (a real build under a
pseudo-terminal), plain rate-limited lines when stderr is a file; stdout is the summary alone either way."""

from __future__ import annotations

import fcntl
import logging
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
import time

import pytest

from toolchain.fsutil import progress

EPOCHS = 8
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
TRAIN = f"train: {{epochs: {EPOCHS}, batch_size: 32, learning_rate: 0.01}}"


def build(recipe, out, stdin, stderr) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TTY_INTERACTIVE", "TTY_COMPATIBLE")}
    env |= {"TERM": "xterm-256color", "PYTHONUTF8": "1"}
    cmd = [sys.executable, "-m", "toolchain", "build", str(recipe), "--out", str(out)]
    return subprocess.run(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=stderr, env=env, text=True, timeout=600)


def assert_summary_only(stdout: str) -> None:
    assert stdout.lstrip().startswith("tiny: classification"), stdout
    assert not re.search(r"epoch|ETA|train|data:|\x1b|\r", stdout), stdout


@pytest.mark.tf
def test_a_terminal_sees_a_bar_with_the_epoch_count_and_an_eta(tiny_recipe, tmp_path):
    recipe = tiny_recipe(train=TRAIN)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    seen = bytearray()

    def drain():
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer of the slave side is gone
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = build(recipe, tmp_path / "b", stdin=slave, stderr=slave)
    finally:
        os.close(slave)
        reader.join(timeout=30)
        os.close(master)
    raw = seen.decode("utf-8", errors="replace")
    assert proc.returncode == 0, raw[-2000:]
    plain = ANSI.sub("", raw)
    bars = re.findall(rf"train [━╸╺]{{20,}} (\d+(?:\.\d)?)/{EPOCHS} epochs [\d.]+ s, ETA [\d.]+ s", plain)
    assert len(set(bars)) >= 2, plain[-3000:]  # a bar, its epoch counter moving, with elapsed time and an ETA
    assert "\r" in raw and "\x1b[" in raw  # drawn in place
    assert f"train: epoch {EPOCHS}/{EPOCHS} loss" in plain  # the epochs' lines, printed above the bar
    assert_summary_only(proc.stdout)


@pytest.mark.tf
def test_a_file_gets_plain_lines_one_per_epoch_with_elapsed_and_eta(tiny_recipe, tmp_path):
    recipe = tiny_recipe(train=TRAIN)
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = build(recipe, tmp_path / "b", stdin=subprocess.DEVNULL, stderr=err)
    text = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 0, text
    assert "\x1b" not in text and "\r" not in text and "━" not in text
    epochs = re.findall(rf"^train: epoch (\d+)/{EPOCHS} loss [^\n]*, [\d.]+ s(, ETA [\d.]+ s)?$", text, re.M)
    assert [int(n) for n, _ in epochs] == list(range(1, EPOCHS + 1)), text
    assert all(eta for _, eta in epochs[:-1]) and not epochs[-1][1]  # the last epoch has nothing left
    train = [line for line in text.splitlines() if line.startswith("train")]
    assert len(train) <= EPOCHS + 3, text  # one line per epoch, not one per batch (40 batches an epoch)
    lines = text.splitlines()
    # what the first seconds are spent on (TensorFlow loading, the data, the model), said as each stage starts
    assert lines.index("data: loading the builtin digits") < next(i for i, x in enumerate(lines) if " train / " in x)
    assert lines.index("model: loading tiny_conv.keras") < lines.index(
        f"train: {EPOCHS} epochs on 1258 samples (this is the slow part)"
    )
    assert_summary_only(proc.stdout)


def test_a_step_off_a_terminal_logs_at_most_one_line_per_interval(caplog):
    log = logging.getLogger("tests.progress")
    with caplog.at_level(logging.INFO, "tests.progress"):
        with progress(log, "train", 3, "epochs", every=60) as step:
            for i in range(300):  # batches: no line of their own
                step.update(i / 100)
        assert caplog.messages == []
        with progress(log, "vela", every=0.2):  # one blocking call: a line each 0.2 s, after the first 0.5 s
            time.sleep(1.1)
    assert 2 <= len(caplog.messages) <= 6, caplog.messages
    assert all(re.fullmatch(r"vela: running, [\d.]+ s", m) for m in caplog.messages), caplog.messages

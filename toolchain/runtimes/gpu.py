"""GPU-delegate op compatibility, from TensorFlow's model analyzer (``gpu_compatibility=True``)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from toolchain.fsutil import capture_fds
from toolchain.models.compat import tf


def compatibility(model: bytes) -> dict:
    """The ``gpu`` section: whether the delegate takes every op, and the ops it warns about."""
    with tempfile.TemporaryDirectory(prefix="gpu-") as tmp:
        log = Path(tmp) / "analyzer.txt"
        with capture_fds(log):
            tf().lite.experimental.Analyzer.analyze(model_content=model, gpu_compatibility=True)
        text = log.read_text(errors="replace")
    issues = [
        {"index": int(i), "op": op, "reason": reason.strip()}
        for i, op, reason in re.findall(r"Op#(\d+) (\w+)\(.*?GPU COMPATIBILITY (?:WARNING|ERROR): ?(.*)", text)
    ]
    return {
        "compatible": "looks compatible with GPU delegate" in text and not issues,
        "incompatible_ops": issues,
        "source": "tf.lite.experimental.Analyzer(gpu_compatibility=True)",
    }

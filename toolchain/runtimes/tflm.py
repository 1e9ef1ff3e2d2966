"""tflite-micro: numerics, the minimum tensor arena by bisection, and crash reports.

Every interpreter runs in a child process (``tflm_worker``): a crash there becomes a
``TflmCrash`` with its signal, its stage and the op it died on, never a dead toolchain.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolchain.errors import RuntimeValidationError
from toolchain.tflite_model import TFLiteModel

ARENA_ALIGN = 16  # the bisection stops when the bracket is this narrow


@dataclass
class Outcome:
    ok: bool
    returncode: int
    stage: str
    stdout: str
    stderr: str

    @property
    def signal(self) -> str | None:
        if self.returncode < 0:
            try:
                return signal.Signals(-self.returncode).name
            except ValueError:
                return f"signal {-self.returncode}"
        return None

    def describe(self) -> str:
        what = f"killed by {self.signal}" if self.signal else next((l[7:] for l in self.stdout.splitlines() if l.startswith("error: ")), f"exit {self.returncode}")
        node = re.search(r"Node (\w+) \(number (\d+)\)", self.stderr)
        where = f" at op {node.group(2)} ({node.group(1)})" if node else ""
        return f"{what} during {self.stage}{where}"


def _worker(*args: str, timeout: float = 600) -> Outcome:
    try:
        proc = subprocess.run([sys.executable, "-m", "toolchain.runtimes.tflm_worker", *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Outcome(False, -9, "timeout", "", "")
    stages = [l[7:] for l in proc.stdout.splitlines() if l.startswith("stage: ")]
    return Outcome(proc.returncode == 0, proc.returncode, stages[-1] if stages else "start", proc.stdout, proc.stderr)


class TflmCrash(RuntimeValidationError):
    """The TFLM interpreter aborted, crashed or refused the model."""


def probe(model_path: Path, arena: int) -> Outcome:
    return _worker("probe", str(model_path), str(arena))


def recorded_arena(model_path: Path, arena: int) -> int | None:
    """The interpreter's own arena figure (``print_allocations``), which under-reports the real need."""
    out = _worker("recorded", str(model_path), str(arena))
    m = re.search(r"Arena allocation total (\d+) bytes", out.stderr)
    return int(m.group(1)) if out.ok and m else None


def min_arena(model_path: Path, hint: int | None = None) -> tuple[int, int]:
    """Smallest arena (bytes) in which the model allocates and invokes; returns (arena, probes)."""
    hi = max(ARENA_ALIGN, hint or 1 << 14)
    probes = 1
    while not (first := probe(model_path, hi)).ok:
        if first.signal or "allocate" not in first.stdout + first.stderr or hi > 1 << 30:
            raise TflmCrash(f"{first.describe()} (arena {hi} bytes){_culprit(model_path, hi, first)}")
        probes += 1
        hi *= 2
    lo = 0
    while hi - lo > 1:
        if hi - lo <= ARENA_ALIGN and lo % ARENA_ALIGN == 0:
            break
        mid = (lo + hi) // 2
        probes += 1
        if probe(model_path, mid).ok:
            hi = mid
        else:
            lo = mid
    return hi, probes


def run(model_path: Path, arena: int, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Float outputs for float inputs, and the host's median ms per invoke; raises ``TflmCrash``."""
    with tempfile.TemporaryDirectory(prefix="tflm-") as tmp:
        np.save(Path(tmp) / "x.npy", x.astype(np.float32))
        out = _worker("run", str(model_path), str(arena), str(Path(tmp) / "x.npy"), str(Path(tmp) / "y.npy"))
        if not out.ok:
            raise TflmCrash(f"{out.describe()} (arena {arena} bytes){_culprit(model_path, arena, out)}")
        host = re.search(r"host_ms: ([\d.]+)", out.stdout)
        return np.load(Path(tmp) / "y.npy"), float(host.group(1)) if host else float("nan")


def truncated(model: bytes, n_ops: int) -> bytes:
    """The model cut after its first ``n_ops`` operators (their last output becomes the output)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    m = fb.ModelT.InitFromObj(fb.Model.GetRootAs(model, 0))
    sg = m.subgraphs[0]
    sg.operators = sg.operators[:n_ops]
    sg.outputs = np.array([sg.operators[-1].outputs[0]], dtype=np.int32)
    builder = flatbuffers.Builder(len(model) + 1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _culprit(model_path: Path, arena: int, failure: Outcome) -> str:
    """For a crash with no op named: bisect on truncated models for the first op that crashes."""
    if re.search(r"Node \w+ \(number \d+\)", failure.stderr) or failure.stage.startswith("invoke") and failure.stage != "invoke 0":
        return ""
    model = Path(model_path).read_bytes()
    ops = TFLiteModel(model).ops
    lo, hi = 0, len(ops)  # truncated to lo ops runs; to hi ops fails
    with tempfile.TemporaryDirectory(prefix="tflm-cut-") as tmp:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            path = Path(tmp) / f"cut{mid}.tflite"
            try:
                path.write_bytes(truncated(model, mid))
            except Exception:  # a cut the schema cannot express: stop localizing
                return ""
            if probe(path, arena).ok:
                lo = mid
            else:
                hi = mid
    op = ops[hi - 1]
    return f"; last op {op.index} ({op.name})"

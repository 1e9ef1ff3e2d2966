"""tflite-micro: numerics, the minimum tensor arena by bisection, and crash reports.

Every interpreter runs in a child process (``tflm_worker``): a crash there becomes a
``TflmCrash`` with its signal, its stage and the op it died on, never a dead toolchain.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from toolchain.checks import Check, CheckContext, register, with_margin
from toolchain.errors import RuntimeValidationError
from toolchain.fsutil import progress
from toolchain.record import Failure, Firmware, Latency, Memory, Reload, Section

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)
ARENA_ALIGN = 16  # the bisection stops when the bracket is this narrow
MAX_ARENA = 64 << 20  # the largest arena tried before a model is declared unrunnable


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
        what = (
            f"killed by {self.signal}"
            if self.signal
            else next(
                (line[7:] for line in self.stdout.splitlines() if line.startswith("error: ")), f"exit {self.returncode}"
            )
        )
        node = re.search(r"Node (\w+) \(number (\d+)\)", self.stderr)
        where = f" at op {node.group(2)} ({node.group(1)})" if node else ""
        return f"{what} during {self.stage}{where}"


def _worker(*args: str, timeout: float = 600) -> Outcome:
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "toolchain.checks.tflm_worker", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return Outcome(False, -9, "timeout", "", "")
    stages = [line[7:] for line in proc.stdout.splitlines() if line.startswith("stage: ")]
    return Outcome(proc.returncode == 0, proc.returncode, stages[-1] if stages else "start", proc.stdout, proc.stderr)


class TflmCrash(RuntimeValidationError):
    """The TFLM interpreter aborted, crashed or refused the model."""


def _inputs(model_path: Path) -> int:
    from toolchain.tflite_model import TFLiteModel

    return len(TFLiteModel(Path(model_path).read_bytes()).inputs)


def probe(model_path: Path, arena: int, n_inputs: int | None = None) -> Outcome:
    return _worker("probe", str(model_path), str(arena), str(n_inputs or _inputs(model_path)))


def recorded_arena(model_path: Path, arena: int) -> int | None:
    """The interpreter's own arena figure (``print_allocations``), which under-reports the real need."""
    out = _worker("recorded", str(model_path), str(arena))
    m = re.search(r"Arena allocation total (\d+) bytes", out.stderr)
    return int(m.group(1)) if out.ok and m else None


class Prober:
    """Arena probes of one model from one worker (``tflm_worker serve``), each probe in a fork of it."""

    def __init__(self, model_path: Path, n_inputs: int):
        cmd = [sys.executable, "-m", "toolchain.checks.tflm_worker", "serve", str(model_path), str(n_inputs)]
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True)

    def probe(self, arena: int) -> Outcome:
        import json

        self.proc.stdin.write(f"{arena}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:  # the worker itself died: it is only a parent of forks, so this is not the model's doing
            self.err.seek(0)
            last = (self.err.read().decode(errors="replace").strip().splitlines() or ["no message"])[-1]
            raise RuntimeValidationError(f"the tflite-micro probe worker exited ({self.proc.wait()}): {last}")
        r = json.loads(line)
        stages = [x[7:] for x in r["stdout"].splitlines() if x.startswith("stage: ")]
        rc = r["returncode"]
        return Outcome(rc == 0, rc, stages[-1] if stages else "start", r["stdout"], r["stderr"])

    def close(self) -> None:
        try:
            self.proc.stdin.close()  # the worker's end of input: it exits
        except OSError:  # it is gone already (a broken pipe)
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.err.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def min_arena(model_path: Path, hint: int | None = None, step=None) -> tuple[int, int]:
    """Smallest arena (bytes) in which the model allocates and invokes; returns (arena, probes).

    A failure, even a signal, at a small arena only means "too small" while a larger one works: the arena
    doubles up to ``MAX_ARENA``; a model that fails at every size is a ``TflmCrash`` naming the op it dies in.
    The probes run in forks of one worker (``Prober``); ``step`` (``fsutil.progress``) counts them.
    """
    with Prober(model_path, _inputs(model_path)) as p:
        return _bisect(model_path, p, hint, step)


def _bisect(model_path: Path, p: Prober, hint: int | None, step=None) -> tuple[int, int]:
    hi = max(ARENA_ALIGN, min(hint or 1 << 14, MAX_ARENA))
    probes = 1
    while not (first := p.probe(hi)).ok:
        if hi >= MAX_ARENA:
            op = _culprit(model_path, hi, first)
            where = f", in op {op.index} ({op.name})" if op else ""
            raise TflmCrash(f"{_verb(first)} at every arena size up to {MAX_ARENA >> 20} MB{where}")
        probes += 1
        hi = min(hi * 2, MAX_ARENA)
    lo, total = 0, probes + max(0, (hi - 1) // ARENA_ALIGN).bit_length()  # the halvings down to ARENA_ALIGN
    while hi - lo > 1:
        if step is not None:
            step.update(probes, total=max(total, probes + 1))
        if hi - lo <= ARENA_ALIGN and lo % ARENA_ALIGN == 0:
            break
        mid = (lo + hi) // 2
        probes += 1
        if p.probe(mid).ok:
            hi = mid
        else:
            lo = mid
    return hi, probes


def _verb(outcome: Outcome) -> str:
    if outcome.signal == "SIGABRT":
        return "aborts (SIGABRT)"
    if outcome.signal:
        return f"crashes ({outcome.signal})"
    return f"fails ({outcome.describe()})"


def run(model_path: Path, arena: int, xs) -> tuple[list[np.ndarray], float]:
    """Float outputs (one array per model output) for float inputs (one array per model input, or one array),
    and the host's median ms per invoke; raises ``TflmCrash``."""
    import numpy as np

    from toolchain.tflite_model import TFLiteModel

    xs = list(xs) if isinstance(xs, (list, tuple)) else [xs]
    n_out = len(TFLiteModel(Path(model_path).read_bytes()).outputs)
    with tempfile.TemporaryDirectory(prefix="tflm-") as tmp:
        np.savez(Path(tmp) / "x.npz", **{f"in_{i}": np.asarray(x, np.float32) for i, x in enumerate(xs)})
        out = _worker(
            "run", str(model_path), str(arena), str(Path(tmp) / "x.npz"), str(Path(tmp) / "y.npz"), str(n_out)
        )
        if not out.ok:
            op = _culprit(model_path, arena, out)
            raise TflmCrash(
                f"{out.describe()} (arena {arena} bytes)" + (f"; last op {op.index} ({op.name})" if op else "")
            )
        host = re.search(r"host_ms: ([\d.]+)", out.stdout)
        with np.load(Path(tmp) / "y.npz") as z:
            outputs = [z[f"out_{k}"] for k in range(n_out)]
        return outputs, float(host.group(1)) if host else float("nan")


def truncated(model: bytes, n_ops: int) -> bytes:
    """The model cut after its first ``n_ops`` operators (their last output becomes the output)."""
    import flatbuffers
    import numpy as np
    from ai_edge_litert import schema_py_generated as fb

    m = fb.ModelT.InitFromObj(fb.Model.GetRootAs(model, 0))
    sg = m.subgraphs[0]
    sg.operators = sg.operators[:n_ops]
    sg.outputs = np.array([sg.operators[-1].outputs[0]], dtype=np.int32)
    builder = flatbuffers.Builder(len(model) + 1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _culprit(model_path: Path, arena: int, failure: Outcome):
    """For a crash with no op named: bisect on truncated models for the first op that fails (an ``Op``, or None)."""
    if (
        re.search(r"Node \w+ \(number \d+\)", failure.stderr)
        or failure.stage.startswith("invoke")
        and failure.stage != "invoke 0"
    ):
        return None
    from toolchain.tflite_model import TFLiteModel

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
                return None
            if probe(path, arena).ok:
                lo = mid
            else:
                hi = mid
    return ops[hi - 1]


def _generous_arena(model_path: Path) -> int:
    return 10 * Path(model_path).stat().st_size + (1 << 20)


@register
class TflmNumericsCheck(Check):
    """tflite-micro's numerics on the eval split (an NPU's CPU side runs the same kernels)."""

    name = "tflm-numerics"
    tools = ("tflite-micro",)
    provides = ("metrics", "reload")

    def settings(self, target) -> dict:
        return {"eval_samples": target.mcu.eval_samples if target.mcu else None}

    def samples(self, ctx: CheckContext) -> int:
        n = ctx.target.mcu.eval_samples if ctx.target.mcu else None
        return min(len(ctx.xs_eval[0]), n or len(ctx.xs_eval[0]))

    def run(self, ctx: CheckContext) -> Section:
        n = self.samples(ctx)
        log.info("tflite-micro: running %d eval samples", n)
        try:
            with progress(log, f"tflite-micro {n} eval samples ({ctx.target.name})"):
                outputs, host_ms = run(
                    ctx.artifact_path, _generous_arena(ctx.artifact_path), [x[:n] for x in ctx.xs_eval]
                )
        except TflmCrash as exc:
            return self.section(runtime="tflite-micro", reload=Reload(runtime="tflite-micro"), failures=[crash(exc)])
        return self.section(
            runtime="tflite-micro", reload=Reload(runtime="tflite-micro"), **self.numerics(ctx, outputs, n, host_ms)
        )

    def numerics(self, ctx: CheckContext, outputs: list[np.ndarray], n: int, host_ms: float) -> dict:
        from toolchain.checks.metrics import compare

        ctx.outputs[self.name] = outputs
        details = {"host_tflm_ms": host_ms}
        lite = ctx.outputs.get("litert")
        if lite is not None:  # the same artifact on the two runtimes: parity only
            task = "classification" if ctx.task == "classification" else "none"  # agreement of the top class, if any
            details["vs_litert"] = compare([o[:n] for o in lite], outputs, None, task).model_dump(exclude_none=True)
        return {"metrics": ctx.compare(outputs, n), "details": details}


def crash(exc: TflmCrash) -> Failure:
    return Failure(kind="runtime", check="tflm", message=f"tflite-micro: {exc}")


@register
class TflmCheck(TflmNumericsCheck):
    """A microcontroller: tflite-micro numerics, the minimum arena by bisection, RAM and flash, and a
    latency estimate from the model's MACs and the core's cycles per MAC."""

    name = "tflm"
    provides = ("metrics", "latency", "memory", "reload", "firmware")

    def settings(self, target) -> dict:
        return {
            "mcu": target.mcu.model_dump(mode="json") if target.mcu else None,
            "clock_mhz": target.clock_mhz,
            "arena_kb": target.memory.arena_kb,
            "arena_margin": target.memory.arena_margin,
        }

    def run(self, ctx: CheckContext) -> Section:
        t, m, path = ctx.target, ctx.model, ctx.artifact_path
        n = self.samples(ctx)
        fixed = int(t.memory.arena_kb * 1024) if t.memory.arena_kb else None
        latency, cost_details = _estimate(m, t)
        size = path.stat().st_size
        memory = Memory(flash_bytes=size, details={"fixed_arena_bytes": fixed})
        common = {"runtime": "tflite-micro", "latency": latency, "reload": Reload(runtime="tflite-micro")}
        log.info(
            "tflite-micro: bisecting the minimum arena, then running %d eval samples%s",
            n,
            f" in the fixed {fixed}-byte arena" if fixed else "",
        )
        try:
            with progress(log, f"tflite-micro arena ({t.name})", unit="probes") as step:
                recorded = memory.details["arena_recorded_bytes"] = recorded_arena(path, _generous_arena(path))
                memory.arena_bytes, memory.details["arena_probes"] = min_arena(path, recorded, step)
            with progress(log, f"tflite-micro {n} eval samples ({t.name})"):
                outputs, host_ms = run(path, fixed or memory.arena_bytes, [x[:n] for x in ctx.xs_eval])
        except TflmCrash as exc:
            return self.section(memory=memory, failures=[crash(exc)], **common)
        arena = fixed or with_margin(memory.arena_bytes, t.memory.arena_margin)
        io_bytes = sum(m.tensors[i].activation_bytes for i in m.inputs + m.outputs)
        memory.ram_bytes = arena + io_bytes
        memory.details.update(arena_with_margin_bytes=arena, arena_margin=t.memory.arena_margin, io_bytes=io_bytes)
        common["reload"] = Reload(runtime="tflite-micro", arena_bytes=arena)
        firmware = Firmware(model_file=path.name, arena_bytes=arena)
        section = self.numerics(ctx, outputs, n, host_ms)
        if cost_details:
            section["details"] = {**section.get("details", {}), "latency_estimate": cost_details}
        return self.section(memory=memory, firmware=firmware, **common, **section)


def _estimate(m, t) -> tuple[Latency | None, dict | None]:
    """The latency estimate: the profile's per-op cost model with its error band, else MACs x cycles/MAC."""
    if not t.mcu or not t.clock_mhz:
        return None, None
    c = t.mcu.cost
    if c is None:
        macs, cpm = m.total_macs(), t.mcu.cycles_per_mac
        source = f"estimate: {macs:,} MACs x {cpm} cycles/MAC / {t.clock_mhz:g} MHz (no error band: uncalibrated)"
        return Latency(ms=macs * cpm / (t.clock_mhz * 1e3), kind="estimate", source=source), None
    from toolchain.checks.mcu_cost import cycles

    total, per = cycles(m, c)
    band = (
        f"±{c.error_pct:.0f} % (leave-one-model-out median; at most {c.max_error_pct:.0f} %) against "
        f"{c.measurements} published measurements"
        if c.error_pct is not None
        else "no error band: no published measurement"
    )
    source = f"estimate: per-op {c.kernels} cost model ({c.family}) at {t.clock_mhz:g} MHz, {band}"
    ms = {k: v / (t.clock_mhz * 1e3) for k, v in per.items()}
    latency = Latency(ms=total / (t.clock_mhz * 1e3), kind="estimate", source=source, error_pct=c.error_pct)
    return latency, {"cycles": total, "ms_by_kind": ms, "family": c.family, "error_pct": c.error_pct}

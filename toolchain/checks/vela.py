"""Arm Vela: compile an int8 model for an Ethos-U NPU and read its performance estimate.

Vela runs in a child process; its summary CSV is the source of every number reported here
(``npu.csv`` keeps the row as Vela wrote it). Op counts and CPU-fallback reasons come from its stdout.
"""

from __future__ import annotations

import csv
import logging
import re
import signal
import subprocess
import sys
from pathlib import Path

from toolchain.checks import Check, CheckContext, register, with_margin
from toolchain.config.target import Vela
from toolchain.errors import CompatibilityError, RuntimeValidationError
from toolchain.fsutil import progress
from toolchain.record import Accelerator, Firmware, Latency, Memory, Section

log = logging.getLogger(__name__)
VELA = "import sys; from ethosu.vela.vela import main; sys.exit(main())"
KIB = 1024


def config_file() -> Path:
    import ethosu  # a namespace package: no __file__

    return Path(list(ethosu.__path__)[0]) / "config_files" / "Arm" / "vela.ini"


def _command(model_path: Path, spec: Vela, out_dir: Path) -> list[str]:
    """The Vela command line for the target's accelerator, system and memory configuration."""
    return [
        sys.executable,
        "-c",
        VELA,
        str(model_path),
        "--accelerator-config",
        spec.accelerator_config,
        "--config",
        str(config_file()),
        "--system-config",
        spec.system_config,
        "--memory-mode",
        spec.memory_mode,
        "--output-dir",
        str(out_dir),
        "--show-cpu-operations",
    ]


def _raise_on_failure(proc: subprocess.CompletedProcess, model_path: Path) -> None:
    """A crash (signal), a refused configuration (compat) or another failure, named by Vela's last line."""
    if proc.returncode < 0:  # killed by a signal: Vela 5.2.0 dies of SIGFPE on 4-bit weights
        raise RuntimeValidationError(
            f"vela crashed on {model_path.name} ({signal.Signals(-proc.returncode).name}; its output is in vela.log)"
        )
    if proc.returncode != 0:
        last = next(
            (
                line
                for line in reversed((proc.stdout + proc.stderr).splitlines())
                if line.strip() and not line.startswith("Warning:")
            ),
            f"exit {proc.returncode}",
        )
        if "Error" in last and ("config" in last.lower() or "option" in last.lower()):
            raise CompatibilityError(f"vela refused the target's configuration: {last.strip()}")
        raise RuntimeValidationError(f"vela failed on {model_path.name}: {last.strip()}")


def _results(model_path: Path, spec: Vela, out_dir: Path, stdout: str) -> dict:
    """The ``npu`` section from Vela's summary CSV and its log (operator counts, CPU fallbacks and why)."""
    summary = out_dir / f"{model_path.stem}_summary_{spec.system_config}.csv"
    with open(summary, newline="") as f:
        row = next(csv.DictReader(f))
    counts = {k.lower(): int(n) for k, n in re.findall(r"^(CPU|NPU) operators = (\d+)", stdout, re.M)}
    fallbacks = [
        {"op": op, "tensor": ofm, "reason": reason.strip()}
        for op, ofm, reason in re.findall(
            r"Warning \(supported operators\) operator: (\w+), ofm: '([^']*)'\s*\nReason: (.*)", stdout
        )
    ]
    cpu_ops = re.findall(r"^\s+CPU: (\S+) = (.*?) \(outputs", stdout, re.M)
    f = lambda k: float(row[k])  # noqa: E731
    return {
        "accelerator": row["accelerator_configuration"],
        "system_config": row["system_config"],
        "memory_mode": row["memory_mode"],
        "clock_mhz": f("core_clock") / 1e6,
        "inference_ms": f("inference_time") * 1e3,
        "inferences_per_second": f("inferences_per_second"),
        "cycles": int(f("cycles_total")),
        "sram_bytes": int(round(f("sram_memory_used") * KIB)),
        "flash_bytes": int(round((f("off_chip_flash_memory_used") + f("on_chip_flash_memory_used")) * KIB)),
        "dram_bytes": int(round(f("dram_memory_used") * KIB)),
        "macs": int(f("nn_macs")),
        "npu_ops": counts.get("npu", 0),
        "cpu_ops": counts.get("cpu", 0),
        "cpu_fallbacks": fallbacks
        or [{"op": op, "tensor": name, "reason": "placed on CPU by Vela"} for op, name in cpu_ops],
        "vela_model": f"{model_path.stem}_vela.tflite",
        "summary_csv": summary.name,
        "csv": row,
    }


def compile(model_path: Path, spec: Vela, out_dir: Path) -> dict:
    """Compile ``model_path`` into ``out_dir``; returns the ``npu`` section of a result."""
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(_command(model_path, spec, out_dir), capture_output=True, text=True, timeout=1800)
    (out_dir / "vela.log").write_text(proc.stdout + proc.stderr)
    _raise_on_failure(proc, model_path)
    return _results(model_path, spec, out_dir, proc.stdout)


@register
class VelaCheck(Check):
    """An Ethos-U NPU: Vela compiles the int8 model; its summary gives time, SRAM, flash and op placement."""

    name = "vela"
    tools = ("ethos-u-vela",)
    provides = ("latency", "memory", "accelerator", "firmware")

    def settings(self, target) -> dict:
        return {
            "vela": target.vela.model_dump(mode="json") if target.vela else None,
            "arena_margin": target.memory.arena_margin,
        }

    def run(self, ctx: CheckContext) -> Section:
        if ctx.target.vela is None:
            raise CompatibilityError(f"target {ctx.target.name} runs the 'vela' check but has no 'vela:' section")
        log.info("vela: compiling for %s (%s)", ctx.target.vela.accelerator_config, ctx.target.vela.system_config)
        with progress(log, f"vela ({ctx.target.name})") as step:
            npu = compile(ctx.artifact_path, ctx.target.vela, ctx.workdir)
            step.update(1, f"vela: {npu['npu_ops']} ops on the NPU, {npu['cpu_ops']} on the CPU")
        return self.section(
            latency=Latency(
                ms=npu["inference_ms"],
                kind="estimate",
                source=f"estimate: Vela performance model ({npu['accelerator']}, {npu['system_config']}, "
                f"{npu['memory_mode']})",
            ),
            memory=Memory(ram_bytes=npu["sram_bytes"], flash_bytes=npu["flash_bytes"] + npu["dram_bytes"]),
            accelerator=Accelerator(
                name=f"Ethos-U ({npu['accelerator']})", ops_on=npu["npu_ops"], ops_total=npu["npu_ops"] + npu["cpu_ops"]
            ),
            firmware=Firmware(
                model_file=npu["vela_model"], arena_bytes=with_margin(npu["sram_bytes"], ctx.target.memory.arena_margin)
            ),
            files=[npu["vela_model"], npu["summary_csv"], "vela.log"],
            details=npu,
        )

"""Kernels a target's runtime lacks, found before any runtime runs the artifact.

Which int8 ops LiteRT, tflite-micro and Vela run is data (``int8_ops.yaml``, measured by
``tools/probe_int8_ops.py``: one op between int8 layers, run or compiled). An int8 artifact holding an op one of
the target's runtimes is measured not to run is refused (``CompatibilityError``, exit 9) with the op, the
runtime's own message and the fix, instead of an abort inside tflite-micro. Ops the probe did not measure pass:
the runtime itself is the judge.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml

from toolchain.config import Target
from toolchain.errors import CompatibilityError

#: the table each check's runtime reads (tflm-numerics emulates an NPU's int8 numerics in tflite-micro, which
#: also runs the ops Vela leaves on the Cortex-M)
RUNTIME_OF = {"litert": "litert", "tflm": "tflm", "tflm-numerics": "tflm"}
#: what to do about a missing kernel
FIXES = {
    "GELU": "add the compress step {step: rewrite, gelu: sigmoid} (x*sigmoid(1.702x), or gelu: tanh), which "
    "replaces GELU by ops every runtime here has",
}


@cache
def int8_data() -> dict:
    return yaml.safe_load(resources.files("toolchain.checks").joinpath("int8_ops.yaml").read_text())


def placement(runtime: str, op: str) -> str | None:
    """Where a Vela config (``vela-ethos-u55``, ``vela-ethos-u85``) puts an int8 op: None on the NPU, else why not."""
    table = int8_data()["runtimes"].get(runtime, {"refused": {}})
    return table["refused"].get(op)


def missing(target: Target, ops: dict[str, int]) -> dict[str, tuple[str, str]]:
    """{op: (check, the runtime's measured refusal)} for the int8 ops of ``ops`` a check of ``target`` cannot run."""
    tables = int8_data()["runtimes"]
    found: dict[str, tuple[str, str]] = {}
    for check in target.checks:
        runtime = RUNTIME_OF.get(check)
        for op in sorted(ops) if runtime else ():
            reason = tables[runtime]["refused"].get(op)
            if reason and op not in found:
                found[op] = (check, reason)
    return found


def refuse_missing(target: Target, ops: dict[str, int]) -> None:
    """Raise when the target's runtime has no kernel for one of the artifact's int8 ops."""
    gone = missing(target, ops)
    if not gone:
        return
    parts = []
    for op, (check, reason) in gone.items():
        runtime = "tflite-micro" if check.startswith("tflm") else check
        vela = _vela_of(target) if "vela" in target.checks else ""
        on_npu = bool(vela) and placement(vela, op) is None
        where = " (Vela keeps it on the NPU, but tflite-micro emulates the NPU's numerics)" if on_npu else ""
        fix = FIXES.get(op, "replace it in the model, or build for a target whose runtime has it")
        parts.append(f"{op} x{ops[op]}: {runtime} has no int8 kernel ({reason}){where}; {fix}")
    raise CompatibilityError(f"{target.name}: " + "; ".join(parts))


def _vela_of(target: Target) -> str:
    """The measured Vela table of the target's NPU (the U55's for a U65: they share Vela's op support)."""
    acc = target.vela.accelerator_config if target.vela else ""
    return "vela-ethos-u85" if "u85" in acc else "vela-ethos-u55" if acc else ""

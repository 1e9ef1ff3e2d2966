"""GPU-delegate op compatibility, from TensorFlow's model analyzer (``gpu_compatibility=True``)."""

from __future__ import annotations

import re

from toolchain.checks import Check, CheckContext, register
from toolchain.models.compat import tf
from toolchain.record import Accelerator, Failure, Section


def analyzer_report(model: bytes, gpu_compatibility: bool = True) -> str:
    """The text ``tf.lite.experimental.Analyzer.analyze`` would print, returned instead."""
    tf()
    from tensorflow.lite.python.analyzer_wrapper import _pywrap_analyzer_wrapper as wrapper

    return wrapper.ModelAnalyzer(model, False, gpu_compatibility)


def compatibility(model: bytes) -> dict:
    """The ``gpu`` section: whether the delegate takes every op, and the ops it warns about."""
    text = analyzer_report(model)
    issues = [
        {"index": int(i), "op": op, "reason": reason.strip()}
        for i, op, reason in re.findall(r"Op#(\d+) (\w+)\(.*?GPU COMPATIBILITY (?:WARNING|ERROR): ?(.*)", text)
    ]
    return {
        "compatible": "looks compatible with GPU delegate" in text and not issues,
        "incompatible_ops": issues,
        "source": "tf.lite.experimental.Analyzer(gpu_compatibility=True)",
    }


@register
class GpuCheck(Check):
    """A phone GPU: which ops LiteRT's GPU delegate takes (TensorFlow's analyzer)."""

    name = "gpu"
    tools = ("tensorflow",)
    provides = ("accelerator",)

    def run(self, ctx: CheckContext) -> Section:
        gpu = compatibility(ctx.artifact)
        total = len(ctx.model.ops)
        failures = [
            Failure(
                kind="compat",
                check=self.name,
                message=f"gpu: op #{i['index']} {i['op']} falls off the GPU delegate: {i['reason']}",
            )
            for i in gpu["incompatible_ops"]
        ]
        return self.section(
            accelerator=Accelerator(name="GPU delegate", ops_on=total - len(gpu["incompatible_ops"]), ops_total=total),
            failures=failures,
            details=gpu,
        )

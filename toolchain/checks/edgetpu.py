"""Coral Edge TPU compiler rules, applied to a .tflite (no compiler is installable here).

Source: coral.ai/docs/edgetpu/models-intro ("Model requirements", "Supported operations") and the
compiler page ("Parameter data caching"); the op table is data (``edgetpu_ops.yaml``). Each rule is a
small function returning ``(ok, detail)``; its docstring is the message the user sees, so rule, message
and docs cannot drift. The real compiler may still refuse ops "due to some unspecified limitation": this
checker gives an upper bound.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from toolchain.checks import Check, CheckContext, register
from toolchain.config.target import EdgeTpu
from toolchain.errors import CompatibilityError
from toolchain.record import Accelerator, Failure, Latency, Section
from toolchain.tflite_model import Op, TFLiteModel

EIGHT_BIT = {"int8", "uint8"}
OPS_FILE = Path(__file__).with_name("edgetpu_ops.yaml")
#: Coral's supported-operations table (data: ``edgetpu_ops.yaml``): op -> documented limitation ("" for none).
OPS_TABLE = yaml.safe_load(OPS_FILE.read_text())
SUPPORTED_OPS: dict[str, str] = OPS_TABLE["ops"]

# --- model-level rules: the compiler refuses the whole model ------------------------------------


def rule_static_shapes(m: TFLiteModel) -> tuple[bool, str]:
    """Tensor sizes must be constant at compile time (no dynamic sizes)."""
    bad = [t.name for t in m.tensors if t.is_dynamic]
    return not bad, f"{len(bad)} tensors have a dynamic axis, e.g. {bad[0]!r}" if bad else ""


def rule_quantized(m: TFLiteModel) -> tuple[bool, str]:
    """The model must be fully 8-bit quantized (int8 or uint8 tensor parameters)."""
    floats = [f"{t.name!r} ({t.dtype})" for t in m.tensors if t.is_constant and t.dtype.startswith("float")]
    return not floats, f"{len(floats)} weight tensors are float, e.g. {floats[0]}" if floats else ""


def rule_single_subgraph(m: TFLiteModel) -> tuple[bool, str]:
    """The model must have one subgraph (more than one subgraph is not supported)."""
    return m.subgraph_count == 1, f"{m.subgraph_count} subgraphs"


MODEL_RULES = (rule_static_shapes, rule_quantized, rule_single_subgraph)

# --- op-level rules: a failing op and everything after it run on the CPU -------------------------


def _tensors(m: TFLiteModel, indices):
    return [(pos, m.tensors[i]) for pos, i in enumerate(indices) if i >= 0]


def rule_supported_op(m: TFLiteModel, op: Op) -> tuple[bool, str]:
    """Operation not supported: it is not in Coral's supported-operations table."""
    return op.name in SUPPORTED_OPS, op.name


def rule_eight_bit(m: TFLiteModel, op: Op) -> tuple[bool, str]:
    """Operation is working on an unsupported data type (activations must be int8/uint8)."""
    bad = [
        f"{t.name} is {t.dtype}"
        for _, t in _tensors(m, op.inputs + op.outputs)
        if not t.is_constant and t.dtype not in EIGHT_BIT
    ]
    return not bad, "; ".join(bad[:2])


def rule_rank(m: TFLiteModel, op: Op) -> tuple[bool, str]:
    """Tensor has unsupported rank: at most 3 dimensions, or else only the 3 innermost larger than 1."""
    bad = [
        f"{t.name} {t.shape}"
        for _, t in _tensors(m, op.inputs + op.outputs)
        if not t.is_constant and len(t.shape) > 3 and any(d > 1 for d in t.shape[:-3])
    ]
    return not bad, "; ".join(bad[:2])


def rule_no_fused_activation(m: TFLiteModel, op: Op) -> tuple[bool, str]:
    """Pooling and concatenation must have no fused activation function."""
    if op.name not in ("AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION"):
        return True, ""
    act = op.option("fusedActivationFunction", 0)
    return act == 0, f"fused activation {act}"


def rule_same_dilation(m: TFLiteModel, op: Op) -> tuple[bool, str]:
    """Convolutions must use the same dilation in x and y."""
    if op.name not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return True, ""
    w, h = op.option("dilationWFactor", 1), op.option("dilationHFactor", 1)
    return w == h, f"dilation {h}x{w}"


def rule_softmax_1d(m: TFLiteModel, op: Op) -> tuple[bool, str]:
    """Softmax supports only a 1-D input (one axis larger than 1) of at most 16,000 elements."""
    if op.name != "SOFTMAX":
        return True, ""
    t = m.tensors[op.inputs[0]]
    return sum(d > 1 for d in t.shape) <= 1 and t.elements <= 16000, f"input {t.shape}"


def rule_fully_connected_format(m: TFLiteModel, op: Op) -> tuple[bool, str]:
    """Fully-connected weights must use the default format and the output must be one-dimensional."""
    if op.name != "FULLY_CONNECTED":
        return True, ""
    out = m.tensors[op.outputs[0]]
    return op.option("weightsFormat", 0) == 0 and sum(d > 1 for d in out.shape) <= 1, f"output {out.shape}"


def rule_strided_slice_masks(m: TFLiteModel, op: Op) -> tuple[bool, str]:
    """Strided slice needs ellipsis-axis-mask == 0 and new-axis-mask == 0."""
    if op.name != "STRIDED_SLICE":
        return True, ""
    return op.option("ellipsisMask", 0) == 0 and op.option("newAxisMask", 0) == 0, "masks set"


def rule_concat_constant(m: TFLiteModel, op: Op) -> tuple[bool, str]:
    """Concatenation with a constant input must have exactly 2 inputs."""
    if op.name != "CONCATENATION":
        return True, ""
    consts = [t for _, t in _tensors(m, op.inputs) if t.is_constant]
    return not consts or len(op.inputs) == 2, f"{len(op.inputs)} inputs, {len(consts)} constant"


OP_RULES = (
    rule_supported_op,
    rule_eight_bit,
    rule_rank,
    rule_no_fused_activation,
    rule_same_dilation,
    rule_softmax_1d,
    rule_fully_connected_format,
    rule_strided_slice_masks,
    rule_concat_constant,
)


def _first_line(fn) -> str:
    return fn.__doc__.strip().splitlines()[0].rstrip(".")


def _boundary(m: TFLiteModel, op: Op) -> bool:
    """Float<->int conversions at the model's edges run on the CPU without cutting the TPU partition."""
    if op.name == "QUANTIZE" and m.tensors[op.inputs[0]].dtype not in EIGHT_BIT and op.inputs[0] in m.inputs:
        return True
    return op.name == "DEQUANTIZE" and op.outputs[0] in m.outputs


def _kind(op: str) -> str:
    return {"DEPTHWISE_CONV_2D": "depthwise", "FULLY_CONNECTED": "fully_connected"}.get(op, "conv")


def _other_elements(m: TFLiteModel, on_tpu: set[int], macs: dict[int, int]) -> int:
    """Output elements of the TPU's ops that do no multiply-accumulates (memory-bound: adds, muls, pools...)."""
    return sum(m.tensors[i].elements for op in m.ops if op.index in on_tpu and op.index not in macs for i in op.outputs)


def features(m: TFLiteModel, spec: EdgeTpu) -> dict:
    """What the estimate is made of, for fitting it: MACs on the TPU per kind, TPU ops, streamed parameter bytes,
    I/O bytes and CPU MACs."""
    r = check(m, spec)
    on_tpu = {p["index"] for p in r["placement"] if p["on"] == "tpu"}
    macs = {"conv": 0, "depthwise": 0, "fully_connected": 0}
    for k, v in m.macs().items():
        if k in on_tpu:
            macs[_kind(m.ops[k].name)] += v
    io_bytes = sum(m.tensors[i].activation_bytes for i in m.inputs + m.outputs)
    return {
        "macs": macs,
        "tpu_ops": len(on_tpu),
        "other_elements": _other_elements(m, on_tpu, m.macs()),
        "streamed_bytes": r["streamed_param_bytes"],
        "io_bytes": io_bytes,
        "cpu_macs": r["macs_on_cpu"],
    }


def check(m: TFLiteModel, spec: EdgeTpu) -> dict:
    """The ``edgetpu`` section of a result: what maps to the TPU, what stays on the CPU and why."""
    refusals = [f"{_first_line(rule)}: {detail}" for rule in MODEL_RULES for ok, detail in [rule(m)] if not ok]
    placement, cut = [], None
    for op in m.ops:
        if refusals:
            placement.append(
                {"index": op.index, "op": op.name, "on": "cpu", "reason": "the compiler refuses the model"}
            )
            continue
        if _boundary(m, op):
            placement.append(
                {
                    "index": op.index,
                    "op": op.name,
                    "on": "cpu",
                    "reason": "float input/output conversion stays on the CPU",
                }
            )
            continue
        if cut is not None:
            placement.append(
                {
                    "index": op.index,
                    "op": op.name,
                    "on": "cpu",
                    "reason": f"after the first unmapped op {cut} (the compiler makes one TPU partition)",
                }
            )
            continue
        failed = [
            f"{_first_line(rule)} ({detail})" if detail else _first_line(rule)
            for rule in OP_RULES
            for ok, detail in [rule(m, op)]
            if not ok
        ]
        if failed:
            cut = f"#{op.index} {op.name}"
            placement.append({"index": op.index, "op": op.name, "on": "cpu", "reason": "; ".join(failed)})
        else:
            placement.append({"index": op.index, "op": op.name, "on": "tpu", "reason": "Mapped to Edge TPU"})
    on_tpu = {p["index"] for p in placement if p["on"] == "tpu"}
    tpu_tensors = {i for op in m.ops if op.index in on_tpu for i in op.inputs if i >= 0}
    params = sum(m.tensors[i].const_bytes for i in tpu_tensors)
    cached = min(params, spec.param_cache_bytes)
    macs = m.macs()
    tpu_macs = sum(v for k, v in macs.items() if k in on_tpu)
    cpu_macs = sum(v for k, v in macs.items() if k not in on_tpu)
    tpu_ms = sum(
        2 * v / (spec.tops * 1e12 * spec.utilization_by_kind.get(_kind(m.ops[k].name), spec.utilization)) * 1e3
        for k, v in macs.items()
        if k in on_tpu
    )
    tpu_ms += spec.op_overhead_ms * len(on_tpu) + spec.element_ms_per_m * _other_elements(m, on_tpu, macs) / 1e6
    stream_ms = (params - cached) / (spec.usb_mb_per_s * 1e6) * 1e3
    cpu_ms = cpu_macs / (spec.cpu_gmacs * 1e9) * 1e3
    io_bytes = sum(m.tensors[i].activation_bytes for i in m.inputs + m.outputs)
    io_ms = spec.invoke_overhead_ms + io_bytes / (spec.usb_mb_per_s * 1e6) * 1e3
    return {
        "compiles": not refusals,
        "refusals": refusals,
        "ops_on_tpu": len(on_tpu),
        "ops_on_cpu": len(m.ops) - len(on_tpu),
        "first_cpu_op": cut,
        "cached_param_bytes": cached,
        "streamed_param_bytes": params - cached,
        "macs_on_tpu": tpu_macs,
        "macs_on_cpu": cpu_macs,
        "estimate_ms": {
            "invoke_and_io": io_ms,
            "tpu": tpu_ms,
            "param_streaming": stream_ms,
            "cpu": cpu_ms,
            "total": io_ms + tpu_ms + stream_ms + cpu_ms,
        },
        "placement": placement,
    }


@register
class EdgeTpuCheck(Check):
    """A Coral Edge TPU: Coral's compiler rules on the artifact, op placement and a latency estimate."""

    name = "edgetpu"
    provides = ("latency", "accelerator")

    def settings(self, target) -> dict:
        return {"edgetpu": target.edgetpu.model_dump(mode="json") if target.edgetpu else None, "ops_table": OPS_TABLE}

    def run(self, ctx: CheckContext) -> Section:
        if ctx.target.edgetpu is None:
            raise CompatibilityError(f"target {ctx.target.name} runs the 'edgetpu' check but has no 'edgetpu:' section")
        tpu = check(ctx.model, ctx.target.edgetpu)
        failures = [
            Failure(kind="compat", check=self.name, message=f"edgetpu: the compiler would refuse the model: {r}")
            for r in tpu["refusals"]
        ]
        spec = ctx.target.edgetpu
        band = (
            f", ±{spec.error_pct:.0f} % (leave-one-model-out median; at most {spec.max_error_pct:.0f} %) against "
            f"{spec.measurements} published Coral USB Accelerator latencies"
            if spec.error_pct is not None
            else " (uncalibrated)"
        )
        latency = Latency(
            ms=tpu["estimate_ms"]["total"],
            kind="estimate",
            source="estimate: Coral Edge TPU rules (MACs per op kind at fitted utilization + per-op time + I/O + "
            f"streamed parameters + CPU ops){band}",
            error_pct=spec.error_pct,
        )
        accelerator = Accelerator(
            name="Edge TPU", ops_on=tpu["ops_on_tpu"], ops_total=tpu["ops_on_tpu"] + tpu["ops_on_cpu"]
        )
        return self.section(latency=latency, accelerator=accelerator, failures=failures, details=tpu)


def docs() -> str:
    """``docs/edgetpu-ops.md``: the rules (their docstrings are the messages) and the op table."""
    lines = [
        "# Edge TPU rules checked by toolchain",
        "",
        f"Generated by `python -m toolchain.checks.edgetpu` from `toolchain/checks/edgetpu.py` and `edgetpu_ops.yaml` "
        f"(table version {OPS_TABLE['version']}, source: {OPS_TABLE['source']}). Do not edit by hand.",
        "",
        "## Model rules (the compiler refuses the whole model)",
        "",
    ]
    lines += [f"- `{r.__name__}`: {r.__doc__.strip()}" for r in MODEL_RULES]
    lines += ["", "## Op rules (a failing op and every op after it run on the CPU)", ""]
    lines += [f"- `{r.__name__}`: {r.__doc__.strip()}" for r in OP_RULES]
    lines += ["", "## Supported operations", "", "| op | limitation |", "|---|---|"]
    lines += [f"| {op} | {note or '-'} |" for op, note in sorted(SUPPORTED_OPS.items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(docs(), end="")

"""Coral Edge TPU compiler rules, applied to a .tflite (no compiler is installable here).

Source: coral.ai/docs/edgetpu/models-intro ("Model requirements", "Supported operations") and the
compiler page ("Parameter data caching"); the op table is data (``edgetpu_ops.yaml``). Each rule is a
small function returning ``(ok, detail)``; its docstring is the message the user sees, so rule, message
and docs cannot drift. Rules are registered as Vela registers its constraints: ``@model_rule`` (the
compiler refuses the model), ``@op_rule()`` (every op) or ``@op_rule("CONV_2D", ...)`` (those op types;
``rules_for(op_type)`` is what an op is checked against). The real compiler may still refuse ops "due to
some unspecified limitation": this checker gives an upper bound.
"""

from __future__ import annotations

from collections.abc import Callable
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

Rule = Callable[..., tuple[bool, str]]

#: Model-level rules, in the order they are checked: ``rule(m) -> (ok, detail)``.
MODEL_RULES: list[Rule] = []
#: Op-level rules checked on every op, in order: ``rule(m, op) -> (ok, detail)``.
GENERIC_OP_RULES: list[Rule] = []
#: Op-level rules registered for one op type (checked after the generic ones, in registration order).
OP_RULES_BY_TYPE: dict[str, list[Rule]] = {}
#: Every op-level rule, in registration order (the docs list them so).
OP_RULES: list[Rule] = []


def model_rule(fn: Rule) -> Rule:
    """Register a model-level rule: when it fails, the compiler refuses the whole model."""
    MODEL_RULES.append(fn)
    return fn


def op_rule(*op_types: str) -> Callable[[Rule], Rule]:
    """Register an op-level rule for ``op_types`` (none named: every op). A failing op and everything after it
    run on the CPU. The rule's docstring is the message; a rule for an op outside the table is a mistake."""
    unknown = [t for t in op_types if t not in SUPPORTED_OPS]
    if unknown:
        raise ValueError(f"op rule for ops not in {OPS_FILE.name}: {', '.join(unknown)}")

    def add(fn: Rule) -> Rule:
        fn.op_types = op_types
        OP_RULES.append(fn)
        if not op_types:
            GENERIC_OP_RULES.append(fn)
        for t in op_types:
            OP_RULES_BY_TYPE.setdefault(t, []).append(fn)
        return fn

    return add


def rules_for(op_type: str) -> list[Rule]:
    """The rules an op of ``op_type`` is checked against: the generic ones, then its own."""
    return GENERIC_OP_RULES + OP_RULES_BY_TYPE.get(op_type, [])


# --- model-level rules: the compiler refuses the whole model ------------------------------------


@model_rule
def rule_static_shapes(m: TFLiteModel) -> tuple[bool, str]:
    """Tensor sizes must be constant at compile time (no dynamic sizes)."""
    bad = [t.name for t in m.tensors if t.is_dynamic]
    return not bad, f"{len(bad)} tensors have a dynamic axis, e.g. {bad[0]!r}" if bad else ""


@model_rule
def rule_quantized(m: TFLiteModel) -> tuple[bool, str]:
    """The model must be fully 8-bit quantized (int8 or uint8 tensor parameters)."""
    floats = [f"{t.name!r} ({t.dtype})" for t in m.tensors if t.is_constant and t.dtype.startswith("float")]
    return not floats, f"{len(floats)} weight tensors are float, e.g. {floats[0]}" if floats else ""


@model_rule
def rule_single_subgraph(m: TFLiteModel) -> tuple[bool, str]:
    """The model must have one subgraph (more than one subgraph is not supported)."""
    return m.subgraph_count == 1, f"{m.subgraph_count} subgraphs"


# --- op-level rules: a failing op and everything after it run on the CPU -------------------------


def _tensors(m: TFLiteModel, indices):
    return [(pos, m.tensors[i]) for pos, i in enumerate(indices) if i >= 0]


@op_rule()
def rule_supported_op(m: TFLiteModel, op: Op) -> tuple[bool, str]:
    """Operation not supported: it is not in Coral's supported-operations table."""
    return op.name in SUPPORTED_OPS, op.name


@op_rule()
def rule_eight_bit(m: TFLiteModel, op: Op) -> tuple[bool, str]:
    """Operation is working on an unsupported data type (activations must be int8/uint8)."""
    bad = [
        f"{t.name} is {t.dtype}"
        for _, t in _tensors(m, op.inputs + op.outputs)
        if not t.is_constant and t.dtype not in EIGHT_BIT
    ]
    return not bad, "; ".join(bad[:2])


@op_rule()
def rule_rank(m: TFLiteModel, op: Op) -> tuple[bool, str]:
    """Tensor has unsupported rank: at most 3 dimensions, or else only the 3 innermost larger than 1."""
    bad = [
        f"{t.name} {t.shape}"
        for _, t in _tensors(m, op.inputs + op.outputs)
        if not t.is_constant and len(t.shape) > 3 and any(d > 1 for d in t.shape[:-3])
    ]
    return not bad, "; ".join(bad[:2])


@op_rule("AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION")
def rule_no_fused_activation(m: TFLiteModel, op: Op) -> tuple[bool, str]:
    """Pooling and concatenation must have no fused activation function."""
    act = op.option("fusedActivationFunction", 0)
    return act == 0, f"fused activation {act}"


@op_rule("CONV_2D", "DEPTHWISE_CONV_2D")
def rule_same_dilation(m: TFLiteModel, op: Op) -> tuple[bool, str]:
    """Convolutions must use the same dilation in x and y."""
    w, h = op.option("dilationWFactor", 1), op.option("dilationHFactor", 1)
    return w == h, f"dilation {h}x{w}"


@op_rule("SOFTMAX")
def rule_softmax_1d(m: TFLiteModel, op: Op) -> tuple[bool, str]:
    """Softmax supports only a 1-D input (one axis larger than 1) of at most 16,000 elements."""
    t = m.tensors[op.inputs[0]]
    return sum(d > 1 for d in t.shape) <= 1 and t.elements <= 16000, f"input {t.shape}"


@op_rule("FULLY_CONNECTED")
def rule_fully_connected_format(m: TFLiteModel, op: Op) -> tuple[bool, str]:
    """Fully-connected weights must use the default format and the output must be one-dimensional."""
    out = m.tensors[op.outputs[0]]
    return op.option("weightsFormat", 0) == 0 and sum(d > 1 for d in out.shape) <= 1, f"output {out.shape}"


@op_rule("STRIDED_SLICE")
def rule_strided_slice_masks(m: TFLiteModel, op: Op) -> tuple[bool, str]:
    """Strided slice needs ellipsis-axis-mask == 0 and new-axis-mask == 0."""
    return op.option("ellipsisMask", 0) == 0 and op.option("newAxisMask", 0) == 0, "masks set"


@op_rule("CONCATENATION")
def rule_concat_constant(m: TFLiteModel, op: Op) -> tuple[bool, str]:
    """Concatenation with a constant input must have exactly 2 inputs."""
    consts = [t for _, t in _tensors(m, op.inputs) if t.is_constant]
    return not consts or len(op.inputs) == 2, f"{len(op.inputs)} inputs, {len(consts)} constant"


def _first_line(fn) -> str:
    return fn.__doc__.strip().splitlines()[0].rstrip(".")


def model_refusals(m: TFLiteModel) -> list[str]:
    """Why the compiler refuses the whole model (empty: it compiles): each failing model rule's message."""
    return [f"{_first_line(rule)}: {detail}" for rule in MODEL_RULES for ok, detail in [rule(m)] if not ok]


def op_refusals(m: TFLiteModel, op: Op) -> list[str]:
    """Why ``op`` cannot map to the TPU (empty: it can): each failing rule's message, with its detail."""
    return [
        f"{_first_line(rule)} ({detail})" if detail else _first_line(rule)
        for rule in rules_for(op.name)
        for ok, detail in [rule(m, op)]
        if not ok
    ]


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


def _placed(op: Op, on: str, reason: str) -> dict:
    return {"index": op.index, "op": op.name, "on": on, "reason": reason}


def placement(m: TFLiteModel, refused: bool) -> tuple[list[dict], str | None]:
    """Where each op runs and why, and the first op the TPU cannot map (``#index NAME``; None: none). The compiler
    makes one TPU partition: everything after that op runs on the CPU too, except the float conversions at the
    model's edges, which run on the CPU without cutting it."""
    rows, cut = [], None
    for op in m.ops:
        if refused:
            rows.append(_placed(op, "cpu", "the compiler refuses the model"))
        elif _boundary(m, op):
            rows.append(_placed(op, "cpu", "float input/output conversion stays on the CPU"))
        elif cut is not None:
            rows.append(_placed(op, "cpu", f"after the first unmapped op {cut} (the compiler makes one TPU partition)"))
        elif failed := op_refusals(m, op):
            cut = f"#{op.index} {op.name}"
            rows.append(_placed(op, "cpu", "; ".join(failed)))
        else:
            rows.append(_placed(op, "tpu", "Mapped to Edge TPU"))
    return rows, cut


def _estimate_ms(m: TFLiteModel, spec: EdgeTpu, on_tpu: set[int], streamed: int, cpu_macs: int) -> dict:
    """The latency estimate's parts: invoke and I/O over USB, the TPU's ops (MACs at the fitted utilisation per
    kind, a time per op and per output element of memory-bound ops), streamed parameters, the CPU's ops."""
    macs = m.macs()
    tpu_ms = sum(
        2 * v / (spec.tops * 1e12 * spec.utilization_by_kind.get(_kind(m.ops[k].name), spec.utilization)) * 1e3
        for k, v in macs.items()
        if k in on_tpu
    )
    tpu_ms += spec.op_overhead_ms * len(on_tpu) + spec.element_ms_per_m * _other_elements(m, on_tpu, macs) / 1e6
    stream_ms = streamed / (spec.usb_mb_per_s * 1e6) * 1e3
    cpu_ms = cpu_macs / (spec.cpu_gmacs * 1e9) * 1e3
    io_bytes = sum(m.tensors[i].activation_bytes for i in m.inputs + m.outputs)
    io_ms = spec.invoke_overhead_ms + io_bytes / (spec.usb_mb_per_s * 1e6) * 1e3
    return {
        "invoke_and_io": io_ms,
        "tpu": tpu_ms,
        "param_streaming": stream_ms,
        "cpu": cpu_ms,
        "total": io_ms + tpu_ms + stream_ms + cpu_ms,
    }


def check(m: TFLiteModel, spec: EdgeTpu) -> dict:
    """The ``edgetpu`` section of a result: what maps to the TPU, what stays on the CPU and why."""
    refusals = model_refusals(m)
    placed, cut = placement(m, bool(refusals))
    on_tpu = {p["index"] for p in placed if p["on"] == "tpu"}
    tpu_tensors = {i for op in m.ops if op.index in on_tpu for i in op.inputs if i >= 0}
    params = sum(m.tensors[i].const_bytes for i in tpu_tensors)
    cached = min(params, spec.param_cache_bytes)
    macs = m.macs()
    tpu_macs = sum(v for k, v in macs.items() if k in on_tpu)
    cpu_macs = sum(v for k, v in macs.items() if k not in on_tpu)
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
        "estimate_ms": _estimate_ms(m, spec, on_tpu, params - cached, cpu_macs),
        "placement": placed,
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
    lines += [f"- `{r.__name__}` ({', '.join(r.op_types) or 'every op'}): {r.__doc__.strip()}" for r in OP_RULES]
    lines += ["", "## Supported operations", "", "| op | limitation | checked by |", "|---|---|---|"]
    lines += [
        f"| {op} | {note or '-'} | {', '.join(f'`{r.__name__}`' for r in OP_RULES_BY_TYPE.get(op, [])) or '-'} |"
        for op, note in sorted(SUPPORTED_OPS.items())
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(docs(), end="")

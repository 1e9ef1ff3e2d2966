"""A microcontroller latency estimate per op, not per MAC: cycles = Σ over ops of (a·MACs + b·elements + c).

``a`` (cycles per multiply-accumulate), ``b`` (cycles per activation element read or written) and ``c`` (cycles
per op: dispatch, setup) are per op kind and per core family, with the kernels they assume (CMSIS-NN), stored in
the target profile (``mcu.cost``) and fitted by ``tools/fit_mcu_cost.py`` from published measurements; the
profile also carries the fit's leave-one-model-out error, which every estimate reports as its band.
"""

from __future__ import annotations

from toolchain.tflite_model import TFLiteModel

#: TFLite op -> the kind whose coefficients it takes (an op not listed is a "copy": data movement only)
KINDS = {
    "CONV_2D": "conv",
    "TRANSPOSE_CONV": "conv",
    "DEPTHWISE_CONV_2D": "depthwise",
    "FULLY_CONNECTED": "fully_connected",
    "BATCH_MATMUL": "fully_connected",
    "AVERAGE_POOL_2D": "pooling",
    "MAX_POOL_2D": "pooling",
    "MEAN": "pooling",
    "SOFTMAX": "softmax",
    "LOG_SOFTMAX": "softmax",
    **dict.fromkeys(
        [
            "ADD",
            "SUB",
            "MUL",
            "MAXIMUM",
            "MINIMUM",
            "RELU",
            "RELU6",
            "LOGISTIC",
            "TANH",
            "HARD_SWISH",
            "LEAKY_RELU",
            "PRELU",
            "QUANTIZE",
            "DEQUANTIZE",
            "SQUARED_DIFFERENCE",
            "RSQRT",
            "GELU",
        ],
        "elementwise",
    ),
}
KIND_NAMES = ("conv", "depthwise", "fully_connected", "pooling", "elementwise", "softmax", "copy")


def kind_of(op: str) -> str:
    return KINDS.get(op, "copy")


def features(m: TFLiteModel) -> dict[str, dict[str, float]]:
    """Per kind: MACs, activation elements moved (non-constant inputs + outputs) and op count."""
    macs = m.macs()
    out = {k: {"macs": 0.0, "elements": 0.0, "ops": 0.0} for k in KIND_NAMES}
    for op in m.ops:
        f = out[kind_of(op.name)]
        f["macs"] += macs.get(op.index, 0)
        f["elements"] += sum(
            m.tensors[i].elements for i in [*op.inputs, *op.outputs] if i >= 0 and not m.tensors[i].is_constant
        )
        f["ops"] += 1
    return out


def cycles(m: TFLiteModel, cost) -> tuple[float, dict[str, float]]:
    """(total cycles, cycles per kind) of ``m`` under ``cost`` (a profile's ``mcu.cost``)."""
    per = {}
    for kind, f in features(m).items():
        c = cost.kinds.get(kind)
        if c is None or not f["ops"]:
            continue
        per[kind] = c.mac * f["macs"] + c.element * f["elements"] + c.op * f["ops"]
    return sum(per.values()), per

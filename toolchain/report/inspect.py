"""``toolchain inspect``: what is inside any .tflite, read from the flatbuffer (no TensorFlow)."""

from __future__ import annotations

from toolchain.report import units
from toolchain.report.table import Column, box_table, footer, terminal_width
from toolchain.tflite_model import Tensor, TFLiteModel


def _quant(t: Tensor) -> dict | None:
    if not t.scales:
        return None
    if len(t.scales) == 1:
        return {"scale": t.scales[0], "zero_point": t.zero_points[0] if t.zero_points else 0}
    return {
        "per_channel_axis": t.quantized_dimension,
        "channels": len(t.scales),
        "scale_min": min(t.scales),
        "scale_max": max(t.scales),
    }


def _tensor(t: Tensor) -> dict:
    return {
        "index": t.index,
        "name": t.name,
        "dtype": t.dtype,
        "shape": t.shape_signature,
        "quantization": _quant(t),
        "constant_bytes": t.const_bytes,
    }


def inspect_model(m: TFLiteModel) -> dict:
    names = sum(len(t.name.encode()) for t in m.tensors)
    quant = sum(4 * len(t.scales) + 8 * len(t.zero_points) for t in m.tensors)
    metadata = sum(m.metadata.values())
    weights = m.constant_bytes
    return {
        "file": m.path,
        "size_bytes": m.size,
        "description": m.description,
        "subgraphs": m.subgraph_count,
        "size_breakdown": {
            "weights": weights,
            "quantization_parameters": quant,
            "names": names,
            "metadata": metadata,
            "structure": m.size - weights - quant - names - metadata,
        },
        "ops": m.op_counts(),
        "op_sequence": [op.name for op in m.ops],
        "macs": m.total_macs(),
        "inputs": [_tensor(m.tensors[i]) for i in m.inputs],
        "outputs": [_tensor(m.tensors[i]) for i in m.outputs],
        "tensors": [_tensor(t) for t in m.tensors],
        "metadata": m.metadata,
    }


def _fmt_quant(q: dict | None) -> str:
    if q is None:
        return "-"
    if "scale" in q:
        return f"scale {q['scale']:.6g}, zp {q['zero_point']}"
    return (
        f"per-channel axis {q['per_channel_axis']} ({q['channels']} scales {q['scale_min']:.3g}..{q['scale_max']:.3g})"
    )


def print_inspection(info: dict, wide: bool = False) -> None:
    """The inspection on stdout: sizes in KB (units.py), at the terminal's width (long names and quantization
    wrap) unless ``wide``."""
    import sys

    width = None if wide else terminal_width()
    size = info["size_bytes"]
    lines = [
        f"{info['file']}: {units.kb_text(size)} ({size:,} bytes), {info['subgraphs']} subgraph(s), "
        f"{sum(info['ops'].values())} ops, {info['macs']:,} MACs"
    ]
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            lines.append(f"  {kind[:-1]:6} {t['name']}: {t['dtype']} {t['shape']} ({_fmt_quant(t['quantization'])})")
    out = footer(lines, width)
    parts = [[part, units.kb(n), units.pct(n / max(1, size))] for part, n in info["size_breakdown"].items()]
    out += box_table("size breakdown", [("part", "left"), ("KB", "right"), ("share", "right")], parts, width)
    ops = [[op, str(n)] for op, n in sorted(info["ops"].items(), key=lambda kv: -kv[1])]
    out += box_table("operators", [("op", "left"), ("count", "right")], ops, width)
    columns = [
        Column("#", "right"),
        Column("name", fold=True),
        Column("dtype"),
        Column("shape", wrap=True),
        Column("quantization", wrap=True),
        Column("const KB", "right"),
    ]
    tensors = [
        [
            str(t["index"]),
            t["name"],
            t["dtype"],
            str(t["shape"]),
            _fmt_quant(t["quantization"]),
            units.kb(t["constant_bytes"]) if t["constant_bytes"] else "-",
        ]
        for t in info["tensors"]
    ]
    out += box_table("tensors", columns, tensors, width)
    sys.stdout.write(out)

"""``toolchain inspect``: what is inside any .tflite, read from the flatbuffer (no TensorFlow)."""

from __future__ import annotations

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


def print_inspection(info: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console() if Console().is_terminal else Console(width=160)
    console.print(
        f"[bold]{info['file']}[/bold]: {info['size_bytes']:,} bytes, {info['subgraphs']} subgraph(s), "
        f"{sum(info['ops'].values())} ops, {info['macs']:,} MACs"
    )
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            console.print(f"  {kind[:-1]:6} {t['name']}: {t['dtype']} {t['shape']} ({_fmt_quant(t['quantization'])})")
    size = Table(title="size breakdown")
    size.add_column("part")
    size.add_column("bytes", justify="right")
    size.add_column("share", justify="right")
    for part, n in info["size_breakdown"].items():
        size.add_row(part, f"{n:,}", f"{n / info['size_bytes']:.1%}")
    console.print(size)
    ops = Table(title="operators")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    for op, n in sorted(info["ops"].items(), key=lambda kv: -kv[1]):
        ops.add_row(op, str(n))
    console.print(ops)
    tensors = Table(title="tensors")
    for col in ("#", "name", "dtype", "shape", "quantization", "const bytes"):
        tensors.add_column(col, justify="right" if col in ("#", "const bytes") else "left")
    for t in info["tensors"]:
        tensors.add_row(
            str(t["index"]),
            t["name"],
            t["dtype"],
            str(t["shape"]),
            _fmt_quant(t["quantization"]),
            f"{t['constant_bytes']:,}",
        )
    console.print(tensors)

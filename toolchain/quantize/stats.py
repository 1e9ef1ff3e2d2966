"""Statistics of every tensor the converter will quantize, from one batched run of the float graph.

Two passes over the calibration split on LiteRT (reference kernels, every intermediate tensor kept):
the first takes each tensor's min/max, the min/max of each batch (``mean_minmax``), and the per-channel mean and
minimum (bias correction, high-bias absorption); the second fills a histogram over the tensor's symmetric
range ``[-a, a]``, ``a = max(|min|, |max|)`` (percentile, KL, MSE and the clipped share of any range).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from toolchain.errors import ConversionError
from toolchain.quantize.graph import Graph

BINS = 4096  # over [-a, a]: 2048 per side, as TensorRT's entropy calibrator uses
BATCH = 16  # samples per invoke; mean_minmax averages the min/max of these batches


@dataclass
class TensorStats:
    name: str
    min: float
    max: float
    batch_min: np.ndarray
    batch_max: np.ndarray
    channel_mean: np.ndarray  # over every axis but the last (empty when the last axis changes with the batch)
    channel_min: np.ndarray
    hist: np.ndarray = field(repr=False)  # BINS counts over [-absmax, absmax]

    @property
    def absmax(self) -> float:
        return max(abs(self.min), abs(self.max))

    @property
    def edges(self) -> np.ndarray:
        a = self.absmax or 1.0
        return np.linspace(-a, a, BINS + 1)


def _interpreter(blob: bytes):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    return Interpreter(
        model_content=blob,
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )


def _batches(blob: bytes, xs: list[np.ndarray]):
    """Every batch's tensors, as {tensor index: array}, running the graph on BATCH samples at a time."""
    interp = _interpreter(blob)
    inputs = interp.get_input_details()
    dynamic = all(len(d["shape_signature"]) and d["shape_signature"][0] == -1 for d in inputs)
    step = BATCH if dynamic else int(inputs[0]["shape"][0])
    shape = None
    for start in range(0, len(xs[0]), step):
        part = [x[start : start + step].astype(np.float32) for x in xs]
        if not dynamic and len(part[0]) != step:
            break  # a fixed batch: the last, partial one is left out
        if part[0].shape != shape:
            for d, x in zip(inputs, part, strict=True):
                interp.resize_tensor_input(d["index"], x.shape)
            interp.allocate_tensors()
            shape = part[0].shape
        for d, x in zip(inputs, part, strict=True):
            interp.set_tensor(d["index"], x)
        interp.invoke()
        yield interp


def collect(blob: bytes, xs: list[np.ndarray]) -> dict[int, TensorStats]:
    """Statistics per calibration slot of the graph ``blob``, on the float samples ``xs`` (one array per input)."""
    g = Graph(blob)
    slots = g.slots()
    first: dict[int, dict] = {i: {"min": [], "max": [], "sum": 0.0, "n": 0, "cmin": None} for i in slots}
    try:
        for interp in _batches(blob, xs):
            for i in slots:
                a = interp.get_tensor(i)
                s = first[i]
                s["min"].append(float(a.min()))
                s["max"].append(float(a.max()))
                flat = a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)
                if s["cmin"] is not None and s["cmin"].shape != flat.shape[1:]:
                    s["varies"] = True  # its last axis grows with the batch (attention's heads x tokens): no channels
                if s.get("varies"):
                    continue
                s["sum"] = s["sum"] + flat.sum(axis=0, dtype=np.float64)
                s["n"] += len(flat)
                cmin = flat.min(axis=0)
                s["cmin"] = cmin if s["cmin"] is None else np.minimum(s["cmin"], cmin)
        hists = {i: np.zeros(BINS, dtype=np.int64) for i in slots}
        absmax = {i: max(abs(min(first[i]["min"])), abs(max(first[i]["max"]))) or 1.0 for i in slots}
        for interp in _batches(blob, xs):
            for i in slots:
                hists[i] += np.histogram(interp.get_tensor(i), bins=BINS, range=(-absmax[i], absmax[i]))[0]
    except (ValueError, RuntimeError) as exc:
        raise ConversionError(f"calibration: LiteRT cannot run the float graph: {exc}") from None
    out = {}
    for i in slots:
        s = first[i]
        if not np.all(np.isfinite(s["min"] + s["max"])):
            raise ConversionError(
                f"calibration: tensor {g.name(i)!r} is not finite on the calibration data (NaN or inf)"
            )
        out[i] = TensorStats(
            g.name(i),
            min(s["min"]),
            max(s["max"]),
            np.array(s["min"]),
            np.array(s["max"]),
            np.asarray(s["sum"] / max(s["n"], 1) if not s.get("varies") else [], dtype=np.float64),
            np.asarray(s["cmin"] if not s.get("varies") else [], dtype=np.float64),
            hists[i],
        )
    return out


def save(stats: dict[int, TensorStats], path) -> None:
    arrays = {}
    for i, s in stats.items():
        arrays |= {
            f"{i}/name": np.array(s.name),
            f"{i}/range": np.array([s.min, s.max]),
            f"{i}/batch_min": s.batch_min,
            f"{i}/batch_max": s.batch_max,
            f"{i}/channel_mean": s.channel_mean,
            f"{i}/channel_min": s.channel_min,
            f"{i}/hist": s.hist,
        }
    np.savez(path, **arrays)


def load(path) -> dict[int, TensorStats]:
    with np.load(path) as z:
        ids = sorted({int(k.split("/")[0]) for k in z.files})
        return {
            i: TensorStats(
                str(z[f"{i}/name"]),
                float(z[f"{i}/range"][0]),
                float(z[f"{i}/range"][1]),
                z[f"{i}/batch_min"],
                z[f"{i}/batch_max"],
                z[f"{i}/channel_mean"],
                z[f"{i}/channel_min"],
                z[f"{i}/hist"],
            )
            for i in ids
        }

"""A float TFLite graph with calibration slots, open for editing: ranges, batch size, weights and biases.

The converter's calibrate-only output is a float32 model whose tensors to be quantized carry an empty
``quantization.min/max``; ``quantize_graph`` turns those ranges into scales and zero points. Everything here
edits that flatbuffer through the schema's object API (the schema ships with ai-edge-litert).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

#: Ops whose weights (input 1) and bias (input 2) equalization and bias correction edit.
LINEAR = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
#: Ops that read the batch size as data: a graph with one cannot get its batch fixed by rewriting shapes.
READS_SHAPE = ("SHAPE", "SIZE", "RANK")


def _fb():
    from ai_edge_litert import schema_py_generated as fb

    return fb


def _name(t) -> str:
    return t.name.decode(errors="replace") if isinstance(t.name, bytes) else (t.name or "")


@dataclass
class LinearOp:
    index: int
    kind: str  # one of LINEAR
    input: int
    weights: int
    bias: int | None
    output: int
    activation: str  # the fused activation: NONE, RELU, RELU6 ...
    padding: str | None  # SAME / VALID for convolutions


class Graph:
    def __init__(self, blob: bytes):
        fb = _fb()
        self.m = fb.ModelT.InitFromObj(fb.Model.GetRootAs(blob, 0))
        self.sg = self.m.subgraphs[0]
        codes = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
        self.opnames = [codes.get(max(c.builtinCode, c.deprecatedBuiltinCode), "CUSTOM") for c in self.m.operatorCodes]
        self._activations = {v: k for k, v in vars(fb.ActivationFunctionType).items() if not k.startswith("_")}
        self._padding = {v: k for k, v in vars(fb.Padding).items() if not k.startswith("_")}

    # -- tensors -------------------------------------------------------------------------------------------
    def name(self, i: int) -> str:
        return _name(self.sg.tensors[i])

    def slots(self) -> list[int]:
        """Tensors the converter will quantize from a calibrated range."""
        return [
            i
            for i, t in enumerate(self.sg.tensors)
            if t.quantization is not None and t.quantization.min is not None and len(t.quantization.min)
        ]

    def set_range(self, i: int, lo: float, hi: float) -> None:
        q = self.sg.tensors[i].quantization
        q.min = np.array([lo], dtype=np.float32)
        q.max = np.array([hi], dtype=np.float32)

    def range(self, i: int) -> tuple[float, float]:
        q = self.sg.tensors[i].quantization
        return float(q.min[0]), float(q.max[0])

    def add_slots(self) -> int:
        """Give every float tensor that is not a constant (inputs, activations, outputs) an empty calibration slot,
        as the converter's calibrate-only output has: a float flatbuffer from anywhere becomes a graph to calibrate.
        Returns how many tensors got one."""
        fb = _fb()
        added = 0
        for i, t in enumerate(self.sg.tensors):
            if t.type != fb.TensorType.FLOAT32 or self._is_constant(i):
                continue
            if t.quantization is not None and t.quantization.scale is not None and len(t.quantization.scale):
                continue  # already quantized: not a float tensor to calibrate
            q = fb.QuantizationParametersT()
            q.min, q.max = np.zeros(1, dtype=np.float32), np.zeros(1, dtype=np.float32)
            t.quantization = q
            added += 1
        return added

    def _is_constant(self, i: int) -> bool:
        b = self.m.buffers[self.sg.tensors[i].buffer] if 0 < self.sg.tensors[i].buffer < len(self.m.buffers) else None
        return b is not None and b.data is not None and len(b.data) > 0

    def compact_names(self) -> None:
        """Drop the scope every name shares (Keras 3 writes ``functional_1/<model>_1/`` before each of a fused
        tensor's names: 20 KB of a 640 KB MobileNetV2)."""
        parts = [p for t in self.sg.tensors for p in _name(t).split(";") if "/" in p]
        if len(parts) < 2:
            return
        prefix = os.path.commonprefix(parts)
        prefix = prefix[: prefix.rfind("/") + 1]
        while prefix and any(p.startswith(prefix) and "/" not in p[len(prefix) :] for p in parts):
            prefix = prefix[: prefix[:-1].rfind("/") + 1]  # keep the layer's own scope in every name
        if not prefix:
            return
        for t in self.sg.tensors:
            name = ";".join(p[len(prefix) :] if p.startswith(prefix) else p for p in _name(t).split(";"))
            t.name = name.encode()

    # -- batch -----------------------------------------------------------------------------------------------
    def fix_batch(self, n: int) -> bool:
        """Give every dynamic batch axis the size ``n``; False (unchanged) when an op reads shapes as data."""
        if any(self.opnames[o.opcodeIndex] in READS_SHAPE for o in self.sg.operators):
            return False
        for t in self.sg.tensors:
            sig = t.shapeSignature
            if sig is not None and len(sig) and sig[0] == -1:
                t.shapeSignature = np.array([n, *sig[1:]], dtype=np.int32)
                t.shape = np.array([n, *t.shape[1:]], dtype=np.int32)
        return True

    def batch(self) -> int:
        """The first input's batch size (-1: dynamic)."""
        t = self.sg.tensors[self.sg.inputs[0]]
        sig = t.shapeSignature if t.shapeSignature is not None and len(t.shapeSignature) else t.shape
        return int(sig[0]) if sig is not None and len(sig) else 1

    # -- weights -------------------------------------------------------------------------------------------
    def linear_ops(self) -> list[LinearOp]:
        out = []
        for k, o in enumerate(self.sg.operators):
            kind = self.opnames[o.opcodeIndex]
            if kind not in LINEAR or len(o.inputs) < 2 or not self.is_float_constant(o.inputs[1]):
                continue
            bias = int(o.inputs[2]) if len(o.inputs) > 2 and o.inputs[2] >= 0 else None
            if bias is not None and not self.is_float_constant(bias):
                continue
            opts = o.builtinOptions
            act = self._activations.get(getattr(opts, "fusedActivationFunction", 0), "NONE")
            pad = self._padding.get(opts.padding) if hasattr(opts, "padding") else None
            out.append(LinearOp(k, kind, int(o.inputs[0]), int(o.inputs[1]), bias, int(o.outputs[0]), act, pad))
        return out

    def consumers(self, i: int) -> list[int]:
        return [k for k, o in enumerate(self.sg.operators) if i in o.inputs]

    def is_output(self, i: int) -> bool:
        return i in self.sg.outputs

    def is_float_constant(self, i: int) -> bool:
        return self.sg.tensors[i].type == _fb().TensorType.FLOAT32 and self._is_constant(i)

    def array(self, i: int) -> np.ndarray:
        t = self.sg.tensors[i]
        data = np.asarray(self.m.buffers[t.buffer].data, dtype=np.uint8)
        return data.view(np.float32).reshape([int(s) for s in t.shape]).copy()

    def set_array(self, i: int, value: np.ndarray) -> None:
        """Write a constant; a buffer shared with other tensors (the converter deduplicates) is copied first."""
        t = self.sg.tensors[i]
        if sum(u.buffer == t.buffer for u in self.sg.tensors) > 1:
            fb = _fb()
            self.m.buffers.append(fb.BufferT())
            t.buffer = len(self.m.buffers) - 1
        data = np.ascontiguousarray(value, dtype=np.float32).reshape(-1).view(np.uint8)
        self.m.buffers[t.buffer].data = data.copy()

    def to_bytes(self) -> bytes:
        import flatbuffers

        builder = flatbuffers.Builder(1024)
        builder.Finish(self.m.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

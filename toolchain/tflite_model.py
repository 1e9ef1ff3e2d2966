"""Read a .tflite flatbuffer without TensorFlow (the schema that ships with ai-edge-litert).

One parsed view serves every backend: op lists, Edge TPU rules, MAC counts and ``toolchain inspect``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolchain.errors import InputError

_TYPE_BYTES = {
    "float32": 4,
    "float16": 2,
    "float64": 8,
    "int32": 4,
    "uint8": 1,
    "int64": 8,
    "int16": 2,
    "int8": 1,
    "bool": 1,
    "uint32": 4,
    "uint16": 2,
    "uint64": 8,
    "int4": 1,
}


def _fb():
    from ai_edge_litert import schema_py_generated as fb

    return fb


def _names(enum) -> dict[int, str]:
    return {v: k for k, v in vars(enum).items() if not k.startswith("_")}


@dataclass
class Tensor:
    index: int
    name: str
    shape: list[int]
    shape_signature: list[int]
    dtype: str
    const_bytes: int  # bytes of constant data in the file (0 for activations and I/O)
    scales: list[float] = field(default_factory=list)
    zero_points: list[int] = field(default_factory=list)
    quantized_dimension: int = 0
    is_variable: bool = False

    @property
    def is_constant(self) -> bool:
        return self.const_bytes > 0

    @property
    def is_dynamic(self) -> bool:
        return -1 in self.shape_signature

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def activation_bytes(self) -> int:
        return self.elements * _TYPE_BYTES.get(self.dtype, 4)


@dataclass
class Op:
    index: int
    name: str
    inputs: list[int]
    outputs: list[int]
    options: object | None  # the schema's *OptionsT object (stride, dilation, activation ...)
    intermediates: list[int] = field(default_factory=list)

    def option(self, name: str, default=None):
        return getattr(self.options, name, default) if self.options is not None else default


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


def _ints(values) -> list[int]:
    return [int(x) for x in (values if values is not None else [])]


def _check_buffers(buffers: list, size: int, where: str) -> None:
    """Buffers with an offset/size (models over 2 GB keep buffers after the flatbuffer) must lie in the file."""
    for i, b in enumerate(buffers):
        if (b.offset > 1 or b.size > 1) and b.offset + b.size > size:
            raise InputError(
                f"{where}: buffer {i} points outside the file (offset {b.offset:,}, "
                f"size {b.size:,}; the file has {size:,} bytes)"
            )


def _buffer_bytes(buffers: list, i: int) -> int:
    """Bytes of data in buffer ``i`` (0: buffer 0, the empty one, or a missing index)."""
    if i <= 0 or i >= len(buffers):
        return 0
    b = buffers[i]
    n = len(b.data) if b.data is not None else 0
    return n or (b.size if b.size > 1 else 0)


def _op_names(fb, operator_codes) -> list[str]:
    """Each operator code's name: the builtin's (``CONV_2D``) or ``CUSTOM:<code>``."""
    names, builtin = [], _names(fb.BuiltinOperator)
    for oc in operator_codes or []:
        code = max(oc.builtinCode, oc.deprecatedBuiltinCode)
        custom = oc.customCode.decode() if isinstance(oc.customCode, bytes) else oc.customCode
        names.append(f"CUSTOM:{custom}" if code == fb.BuiltinOperator.CUSTOM else builtin.get(code, f"UNKNOWN_{code}"))
    return names


def _tensor(fb, i: int, t, buffers: list) -> Tensor:
    q = t.quantization
    shape = [int(s) for s in (t.shape if t.shape is not None else [])]
    sig = [int(s) for s in t.shapeSignature] if t.shapeSignature is not None and len(t.shapeSignature) else shape
    return Tensor(
        i,
        _text(t.name),
        shape,
        sig,
        _names(fb.TensorType).get(t.type, f"type{t.type}").lower(),
        _buffer_bytes(buffers, t.buffer),
        [float(s) for s in (q.scale if q is not None and q.scale is not None else [])],
        [int(z) for z in (q.zeroPoint if q is not None and q.zeroPoint is not None else [])],
        int(q.quantizedDimension) if q is not None else 0,
        bool(t.isVariable),
    )


class TFLiteModel:
    def __init__(self, blob: bytes, path: str | None = None):
        fb = _fb()
        where = path or "model"
        try:
            if blob[4:8] != b"TFL3":
                raise ValueError("missing TFL3 identifier")
            m = fb.ModelT.InitFromObj(fb.Model.GetRootAs(blob, 0))
        except Exception as exc:
            raise InputError(f"{where}: not a TFLite flatbuffer ({exc})") from None
        self.path, self.size = path, len(blob)
        self.description = _text(m.description)
        self.subgraph_count = len(m.subgraphs or [])
        if not self.subgraph_count:
            raise InputError(f"{where}: TFLite model has no subgraph")
        buffers = m.buffers or []
        _check_buffers(buffers, len(blob), where)
        opnames = _op_names(fb, m.operatorCodes)
        sg = m.subgraphs[0]
        self.tensors: list[Tensor] = [_tensor(fb, i, t, buffers) for i, t in enumerate(sg.tensors or [])]
        self.ops: list[Op] = [
            Op(i, opnames[o.opcodeIndex], _ints(o.inputs), _ints(o.outputs), o.builtinOptions, _ints(o.intermediates))
            for i, o in enumerate(sg.operators or [])
        ]
        self.inputs = [int(i) for i in sg.inputs]
        self.outputs = [int(i) for i in sg.outputs]
        self.metadata = {_text(md.name): _buffer_bytes(buffers, md.buffer) for md in m.metadata or []}
        self.constant_bytes = sum(t.const_bytes for t in self.tensors)

    @classmethod
    def from_file(cls, path: str | Path) -> TFLiteModel:
        try:
            return cls(Path(path).read_bytes(), str(path))
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror}") from None

    def op_counts(self) -> dict[str, int]:
        return dict(Counter(op.name for op in self.ops))

    def macs(self) -> dict[int, int]:
        """Multiply-accumulates per op index, for the ops that dominate compute."""
        out = {}
        for op in self.ops:
            shape = lambda i: self.tensors[i].shape  # noqa: E731
            if op.name == "CONV_2D":  # weights [Cout, kh, kw, Cin]
                _, kh, kw, cin = shape(op.inputs[1])
                out[op.index] = int(np.prod(shape(op.outputs[0]))) * kh * kw * cin
            elif op.name == "DEPTHWISE_CONV_2D":  # weights [1, kh, kw, Cout]
                _, kh, kw, _ = shape(op.inputs[1])
                out[op.index] = int(np.prod(shape(op.outputs[0]))) * kh * kw
            elif op.name == "FULLY_CONNECTED":  # weights [units, features]
                out[op.index] = int(np.prod(shape(op.outputs[0]))) * shape(op.inputs[1])[-1]
            elif op.name == "TRANSPOSE_CONV":  # (output_shape, weights [Cout, kh, kw, Cin], input)
                cout, kh, kw, _ = shape(op.inputs[1])
                out[op.index] = int(np.prod(shape(op.inputs[2]))) * kh * kw * cout
        return out

    def total_macs(self) -> int:
        return sum(self.macs().values())

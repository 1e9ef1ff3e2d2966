"""Read a .tflite flatbuffer without TensorFlow (the schema that ships with ai-edge-litert), and write one from
parts (``GraphBuilder``: synthetic graphs for tests of target rules and ``toolchain inspect``).

One parsed view serves every backend: op lists, Edge TPU rules, MAC counts and ``toolchain inspect``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from toolchain.errors import InputError

if TYPE_CHECKING:
    import numpy as np

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
        return int(math.prod(self.shape)) if self.shape else 1

    @property
    def activation_bytes(self) -> int:
        return self.elements * _TYPE_BYTES.get(self.dtype, 4)

    @property
    def declared_bytes(self) -> int:
        """What a runtime allocates for the shape the file declares (a dynamic ``-1`` counted as 1)."""
        return int(math.prod(d if d >= 0 else 1 for d in self.shape)) * _TYPE_BYTES.get(self.dtype, 4)


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


#: The most bytes any tensor's declared shape may take, and all non-constant tensors of a model together (what
#: a runtime allocates before it runs): 2 GiB, far above any edge model's (a phone app has a few hundred MB).
MAX_DECLARED_BYTES = 2**31


def _check_indices(where: str, sg, subgraph: int, opnames: list[str], buffers: int) -> None:
    """Every index a subgraph holds points at something the file has (-1: an optional input left out)."""
    at, tensors = (f"{where}: subgraph {subgraph}" if subgraph else where), len(sg.tensors or [])

    def check(what: str, ids, optional: bool = False) -> None:
        for t in _ints(ids):
            if not (0 <= t < tensors or (optional and t == -1)):
                raise InputError(f"{at}: {what}: tensor {t} does not exist (the subgraph has {tensors} tensors)")

    for i, t in enumerate(sg.tensors or []):
        if not 0 <= t.buffer < max(buffers, 1):
            raise InputError(f"{at}: tensor {i}: buffer {t.buffer} does not exist (the model has {buffers} buffers)")
    for i, o in enumerate(sg.operators or []):
        if not 0 <= o.opcodeIndex < len(opnames):
            raise InputError(
                f"{at}: operator {i}: opcode index {o.opcodeIndex} does not exist (the model has {len(opnames)} "
                "operator codes)"
            )
        for what in ("inputs", "outputs", "intermediates"):
            check(f"operator {i} ({opnames[o.opcodeIndex]}) {what}", getattr(o, what), optional=what == "inputs")
    check("the subgraph's inputs", sg.inputs)
    check("the subgraph's outputs", sg.outputs)


def _check_sizes(where: str, tensors: list[Tensor]) -> None:
    """Refuse declared shapes a runtime would allocate into gigabytes (``MAX_DECLARED_BYTES``), before any does."""
    limit = f"over the {MAX_DECLARED_BYTES:,} bytes (2 GiB) the toolchain allows"
    for t in tensors:
        if t.declared_bytes > MAX_DECLARED_BYTES:
            raise InputError(
                f"{where}: tensor {t.index} {t.name!r} declares shape {t.shape} of {t.dtype}: "
                f"{t.declared_bytes:,} bytes, {limit}"
            )
    live = [t for t in tensors if not t.is_constant]
    total = sum(t.declared_bytes for t in live)
    if total > MAX_DECLARED_BYTES:
        big = max(live, key=lambda t: t.declared_bytes)
        raise InputError(
            f"{where}: the non-constant tensors declare {total:,} bytes in all (the largest: tensor {big.index} "
            f"{big.name!r}, shape {big.shape} of {big.dtype}), {limit}"
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
        custom = _text(oc.customCode)
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
        every = []  # every subgraph's tensors: a runtime allocates them all
        for k, g in enumerate(m.subgraphs):
            _check_indices(where, g, k, opnames, len(buffers))
            every += [_tensor(fb, i, t, buffers) for i, t in enumerate(g.tensors or [])]
        _check_sizes(where, every)
        sg = m.subgraphs[0]
        self.tensors: list[Tensor] = every[: len(sg.tensors or [])]
        self.ops: list[Op] = [
            Op(i, opnames[o.opcodeIndex], _ints(o.inputs), _ints(o.outputs), o.builtinOptions, _ints(o.intermediates))
            for i, o in enumerate(sg.operators or [])
        ]
        self.inputs, self.outputs = _ints(sg.inputs), _ints(sg.outputs)
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
        """Multiply-accumulates per op index, for the ops that dominate compute (not for an op whose inputs are
        not its kernel's: a malformed graph)."""

        def shape(i: int) -> list[int]:
            if i < 0:
                raise ValueError("an optional input left out")
            return self.tensors[i].shape

        out = {}
        for op in self.ops:
            try:
                if op.name == "CONV_2D":  # weights [Cout, kh, kw, Cin]
                    _, kh, kw, cin = shape(op.inputs[1])
                    out[op.index] = int(math.prod(shape(op.outputs[0]))) * kh * kw * cin
                elif op.name == "DEPTHWISE_CONV_2D":  # weights [1, kh, kw, Cout]
                    _, kh, kw, _ = shape(op.inputs[1])
                    out[op.index] = int(math.prod(shape(op.outputs[0]))) * kh * kw
                elif op.name == "FULLY_CONNECTED":  # weights [units, features]
                    out[op.index] = int(math.prod(shape(op.outputs[0]))) * shape(op.inputs[1])[-1]
                elif op.name == "TRANSPOSE_CONV":  # (output_shape, weights [Cout, kh, kw, Cin], input)
                    cout, kh, kw, _ = shape(op.inputs[1])
                    out[op.index] = int(math.prod(shape(op.inputs[2]))) * kh * kw * cout
            except (IndexError, ValueError):
                continue
        return out

    def total_macs(self) -> int:
        return sum(self.macs().values())


#: The builtin options table of the op types synthetic graphs use most (others: ``GraphBuilder.op(options_type=)``).
_OPTIONS = {
    "ADD": "AddOptions",
    "AVERAGE_POOL_2D": "Pool2DOptions",
    "CONCATENATION": "ConcatenationOptions",
    "CONV_2D": "Conv2DOptions",
    "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
    "FULLY_CONNECTED": "FullyConnectedOptions",
    "MAX_POOL_2D": "Pool2DOptions",
    "MEAN": "ReducerOptions",
    "MUL": "MulOptions",
    "RESHAPE": "ReshapeOptions",
    "SOFTMAX": "SoftmaxOptions",
    "STRIDED_SLICE": "StridedSliceOptions",
    "SUB": "SubOptions",
    "TRANSPOSE_CONV": "TransposeConvOptions",
}


class GraphBuilder:
    """A real .tflite flatbuffer from parts, without TensorFlow (the schema's object API): tensors, then ops
    between them, then ``to_bytes(inputs, outputs)`` or ``model(...)``. For tests of target rules and
    ``toolchain inspect`` on synthetic graphs::

        g = GraphBuilder()
        x = g.tensor([1, 8, 8, 1], scale=[0.1], zero_point=[0])
        w = g.tensor([4, 3, 3, 1], data=np.ones((4, 3, 3, 1), np.int8), scale=[0.02] * 4, zero_point=[0] * 4)
        y = g.tensor([1, 6, 6, 4])
        g.op("CONV_2D", [x, w, -1], [y], padding=1, strideW=1, strideH=1)  # padding 1: VALID
        m = g.model([x], [y])

    The LiteRT interpreter runs such a graph; nothing here checks that shapes agree with the ops.
    """

    def __init__(self, description: str = "toolchain synthetic graph"):
        self._fb = _fb()
        self.description = description
        self._tensors: list = []
        self._buffers: list = [self._fb.BufferT()]  # buffer 0: the empty sentinel
        self._codes: dict[str, int] = {}  # op name -> index into _operator_codes
        self._operator_codes: list = []
        self._ops: list = []

    def tensor(
        self,
        shape: list[int],
        dtype: str = "int8",
        *,
        name: str | None = None,
        data: np.ndarray | bytes | None = None,
        scale: list[float] | None = None,
        zero_point: list[int] | None = None,
        quantized_dimension: int = 0,
        signature: list[int] | None = None,
        variable: bool = False,
    ) -> int:
        """Add a tensor; ``data`` (its raw bytes, or an array written as it is) makes it a constant. ``signature``:
        the shape signature (``-1`` for a dynamic axis)."""
        import numpy as np

        fb = self._fb
        t = fb.TensorT()
        t.shape, t.type = list(shape), getattr(fb.TensorType, dtype.upper())
        t.name = name if name is not None else f"t{len(self._tensors)}"
        t.shapeSignature = list(signature) if signature is not None else None
        t.isVariable = variable
        if data is not None:
            raw = data if isinstance(data, bytes) else np.ascontiguousarray(data).tobytes()
            buffer = fb.BufferT()
            buffer.data = np.frombuffer(raw, dtype=np.uint8)
            self._buffers.append(buffer)
            t.buffer = len(self._buffers) - 1
        if scale is not None or zero_point is not None:
            q = fb.QuantizationParametersT()
            q.scale, q.zeroPoint = list(scale or []), list(zero_point or [])
            q.quantizedDimension = quantized_dimension
            t.quantization = q
        self._tensors.append(t)
        return len(self._tensors) - 1

    def shape(self, i: int) -> list[int]:
        """The shape tensor ``i`` was given."""
        return list(self._tensors[i].shape)

    def const(self, shape: list[int], dtype: str = "int8", value: int | float = 1, **kw) -> int:
        """A constant tensor filled with ``value`` (weights, biases, shapes)."""
        import numpy as np

        return self.tensor(shape, dtype, data=np.full(shape, value, dtype=np.dtype(dtype)), **kw)

    def op(
        self,
        name: str,
        inputs: list[int],
        outputs: list[int],
        *,
        options_type: str | None = None,
        intermediates: list[int] | None = None,
        **options,
    ) -> int:
        """Add an op: ``name`` a builtin (``CONV_2D``) or ``CUSTOM:<code>``; ``options`` the fields of its builtin
        options (``strideW=2``, ``fusedActivationFunction=1`` ...), of ``options_type`` when the op is not in the
        builder's table."""
        fb = self._fb
        o = fb.OperatorT()
        o.opcodeIndex = self._code(name)
        o.inputs, o.outputs = list(inputs), list(outputs)
        o.intermediates = list(intermediates) if intermediates else None
        kind = options_type or _OPTIONS.get(name)
        if kind is not None:
            o.builtinOptionsType = getattr(fb.BuiltinOptions, kind)
            o.builtinOptions = getattr(fb, f"{kind}T")()
            for key, value in options.items():
                if not hasattr(o.builtinOptions, key):
                    raise ValueError(f"{kind} has no field {key!r}")
                setattr(o.builtinOptions, key, value)
        elif options:
            raise ValueError(f"{name}: options given but no options type (pass options_type=)")
        self._ops.append(o)
        return len(self._ops) - 1

    def _code(self, name: str) -> int:
        if name not in self._codes:
            fb = self._fb
            custom = name.startswith("CUSTOM:")
            code = fb.BuiltinOperator.CUSTOM if custom else getattr(fb.BuiltinOperator, name)
            oc = fb.OperatorCodeT(
                deprecatedBuiltinCode=min(code, fb.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES),
                customCode=name.split(":", 1)[1] if custom else None,
                builtinCode=code,
            )
            self._codes[name] = len(self._operator_codes)
            self._operator_codes.append(oc)
        return self._codes[name]

    def to_bytes(
        self, inputs: list[int], outputs: list[int], subgraphs: int = 1, signature: str | None = None
    ) -> bytes:
        """The flatbuffer (``TFL3``); ``subgraphs`` > 1 adds empty subgraphs after the graph; ``signature``: a
        signature of that key over the inputs and outputs, by their tensor names (as the converter writes one)."""
        import flatbuffers

        fb = self._fb
        sg = fb.SubGraphT()
        sg.tensors, sg.operators, sg.inputs, sg.outputs, sg.name = (
            self._tensors,
            self._ops,
            list(inputs),
            list(outputs),
            "main",
        )
        m = fb.ModelT()
        m.version, m.description, m.buffers = 3, self.description, self._buffers
        m.operatorCodes = self._operator_codes
        m.subgraphs = [sg] + [fb.SubGraphT() for _ in range(subgraphs - 1)]
        if signature is not None:

            def maps(ids: list[int]) -> list:
                out = []
                for i in ids:
                    t = fb.TensorMapT()
                    t.name, t.tensorIndex = self._tensors[i].name, i
                    out.append(t)
                return out

            sig = fb.SignatureDefT()
            sig.signatureKey, sig.subgraphIndex = signature, 0
            sig.inputs, sig.outputs = maps(inputs), maps(outputs)
            m.signatureDefs = [sig]
        b = flatbuffers.Builder(1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())

    def model(self, inputs: list[int], outputs: list[int], subgraphs: int = 1) -> TFLiteModel:
        """The graph written and parsed back, as every check reads a model."""
        return TFLiteModel(self.to_bytes(inputs, outputs, subgraphs))

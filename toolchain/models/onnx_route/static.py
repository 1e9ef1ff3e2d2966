"""Static converters for onnx2torch 1.5.15, installed over its registry.

onnx2torch feeds shape-like inputs (Reshape shape, Slice starts/ends, Pad pads, Resize scales/sizes, Expand shape,
Tile repeats, Split split, Squeeze axes) to its modules as tensors (buffers) read at run time with .tolist() /
torch.Size(t). torch.export (which litert_torch runs) sees those buffers as fake tensors, so it fails with
GuardOnDataDependentSymNode. When such inputs are constants (initializers, after fold_constants), these converters
bake them into the module as Python ints. Otherwise they fall back to the original converter.
Also: newer opset versions whose change is irrelevant here are mapped to the converter onnx2torch has.
This module writes into onnx2torch's converter registry (a private API of onnx2torch 1.5.15, pinned).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from onnx import defs
from onnx2torch.node_converters.pad import OnnxPadStatic
from onnx2torch.node_converters.reduce import OnnxReduceStaticAxes
from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription
from onnx2torch.node_converters.resize import _get_torch_align_corners, _onnx_mode_to_torch_mode
from onnx2torch.node_converters.slice import _do_slice, _get_slices
from onnx2torch.node_converters.squeeze import OnnxSqueezeStaticAxes
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value
from torch import nn


def _ints(v):
    return [int(x) for x in (v.reshape(-1).tolist() if hasattr(v, "reshape") else v)]


def _consts(node, graph, first=1):
    """Constant values of inputs[first:] (None for absent optional inputs); KeyError if one is not constant."""
    return [None if not name else get_const_value(name, graph) for name in node.input_values[first:]]


def _result(module, node):
    return OperationConverterResult(
        torch_module=module, onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values)
    )


class StaticReshape(nn.Module):
    def __init__(self, shape, allowzero):
        super().__init__()
        self.shape, self.allowzero = shape, allowzero

    def forward(self, x):
        shape = self.shape if self.allowzero else [x.shape[i] if s == 0 else s for i, s in enumerate(self.shape)]
        return torch.reshape(x, shape)


class StaticSlice(nn.Module):
    def __init__(self, starts, ends, axes, steps):
        super().__init__()
        self.flip, self.pos, self.neg = _get_slices(starts, ends, axes, steps)

    def forward(self, x):
        return _do_slice(x, self.flip, self.pos, self.neg)


class StaticExpand(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return torch.broadcast_to(x, torch.broadcast_shapes(tuple(x.shape), tuple(self.shape)))


class StaticTile(nn.Module):
    def __init__(self, repeats):
        super().__init__()
        self.repeats = repeats

    def forward(self, x):
        return x.repeat(self.repeats)


class StaticSplit(nn.Module):
    def __init__(self, axis, sizes=None, num_outputs=None):
        super().__init__()
        self.axis, self.sizes, self.num_outputs = axis, sizes, num_outputs

    def forward(self, x):
        if self.sizes is not None:
            return tuple(torch.split(x, self.sizes, dim=self.axis))
        n = x.shape[self.axis]
        return tuple(torch.split(x, math.ceil(n / self.num_outputs), dim=self.axis))  # ONNX: last chunk smaller


def _nearest_index(o, n_in, n_out, scale, ctm, nearest_mode):
    if ctm == "half_pixel":
        x = (o + 0.5) / scale - 0.5
    elif ctm == "pytorch_half_pixel":
        x = (o + 0.5) / scale - 0.5 if n_out > 1 else 0.0
    elif ctm == "align_corners":
        x = o * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    elif ctm == "asymmetric":
        x = o / scale
    elif ctm == "tf_half_pixel_for_nn":
        x = (o + 0.5) / scale
    else:
        raise NotImplementedError(f"Resize coordinate_transformation_mode {ctm}")
    i = {
        "floor": math.floor,
        "ceil": math.ceil,
        "round_prefer_floor": lambda v: math.ceil(v - 0.5),
        "round_prefer_ceil": lambda v: math.floor(v + 0.5),
    }[nearest_mode](x)
    return min(max(int(i), 0), n_in - 1)


class StaticResize(nn.Module):
    """ONNX Resize with constant scales/sizes. Nearest mode picks ONNX's exact indices: F.interpolate only for
    integer up-sampling in asymmetric/floor mode (what litert_torch lowers right), else index_select -> GATHER
    (litert_torch 0.10.0 lowers nearest *down*-sampling with half-pixel centres: wrong pixels)."""

    def __init__(
        self, mode, align_corners, scales=None, sizes=None, ctm="half_pixel", nearest_mode="round_prefer_floor"
    ):
        super().__init__()
        self.mode, self.align_corners, self.scales, self.sizes = mode, align_corners, scales, sizes
        self.ctm, self.nearest_mode = ctm, nearest_mode

    def forward(self, x):
        spatial = list(x.shape[2:])
        if self.sizes is not None:
            outs = list(self.sizes)
            scales = [o / i for o, i in zip(outs, spatial, strict=False)]
        else:
            scales = list(self.scales)
            outs = [int(math.floor(i * s)) for i, s in zip(spatial, scales, strict=False)]
        if self.mode != "nearest":
            mode = _onnx_mode_to_torch_mode(self.mode, x.dim() - 2)
            return F.interpolate(x, size=outs, mode=mode, align_corners=self.align_corners)
        if (
            self.ctm == "asymmetric"
            and self.nearest_mode == "floor"
            and all(o % i == 0 and o >= i for o, i in zip(outs, spatial, strict=False))
        ):
            return F.interpolate(x, size=outs, mode="nearest")
        for d, (n_in, n_out, s) in enumerate(zip(spatial, outs, scales, strict=False)):
            idx = [_nearest_index(o, n_in, n_out, s, self.ctm, self.nearest_mode) for o in range(n_out)]
            if idx != list(range(n_in)):
                step = idx[1] - idx[0] if n_out > 1 else 1
                if step > 0 and idx == list(range(idx[0], idx[0] + step * n_out, step)):
                    x = x.narrow(d + 2, idx[0], n_in - idx[0])[(slice(None),) * (d + 2) + (slice(None, None, step),)]
                    x = x.narrow(d + 2, 0, n_out)
                else:
                    x = torch.index_select(x, d + 2, torch.tensor(idx))
        return x


def _reshape(node, graph):
    (shape,) = _consts(node, graph)
    return _result(StaticReshape(_ints(shape), node.attributes.get("allowzero", 0)), node)


def _slice(node, graph):
    starts, ends, *rest = _consts(node, graph) + [None, None]
    axes, steps = rest[0], rest[1]
    return _result(
        StaticSlice(
            _ints(starts),
            _ints(ends),
            None if axes is None else torch.tensor(_ints(axes)),
            None if steps is None else torch.tensor(_ints(steps)),
        ),
        node,
    )


def _pad(node, graph):
    pads, *rest = _consts(node, graph) + [None, None]
    value, axes = rest[0], rest[1]
    if axes is not None:
        raise NotImplementedError("Pad with axes input")
    mode = node.attributes.get("mode", "constant")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode == "wrap":
        raise NotImplementedError("Pad mode wrap")
    value = (
        0.0 if value is None else float(value.reshape(-1)[0]) if hasattr(value, "reshape") and value.numel() else 0.0
    )
    return _result(
        OnnxPadStatic.create_from_onnx_params(onnx_mode=mode, onnx_pads=_ints(pads), constant_value=value), node
    )


def _expand(node, graph):
    (shape,) = _consts(node, graph)
    return _result(StaticExpand(_ints(shape)), node)


def _tile(node, graph):
    (repeats,) = _consts(node, graph)
    return _result(StaticTile(_ints(repeats)), node)


def _split(node, graph):
    axis = node.attributes.get("axis", 0)
    consts = _consts(node, graph)
    split = consts[0] if consts else None
    if split is not None and split.numel():
        return _result(StaticSplit(axis, sizes=_ints(split)), node)
    return _result(StaticSplit(axis, num_outputs=node.attributes.get("num_outputs", len(node.output_values))), node)


def _squeeze(node, graph):
    consts = _consts(node, graph)
    axes = consts[0] if consts else None
    return _result(OnnxSqueezeStaticAxes(axes=None if axes is None else _ints(axes)), node)


def _resize(node, graph):
    a = node.attributes
    if (
        a.get("antialias", 0)
        or a.get("axes") is not None
        or a.get("keep_aspect_ratio_policy", "stretch") not in ("stretch", b"stretch")
    ):
        raise NotImplementedError("Resize antialias/axes/keep_aspect_ratio_policy")
    roi, scales, sizes = (_consts(node, graph) + [None, None, None])[:3]
    mode = a.get("mode", "nearest")
    ctm = a.get("coordinate_transformation_mode", "half_pixel")
    if roi is not None and roi.numel() and ctm == "tf_crop_and_resize":
        raise NotImplementedError("Resize roi")
    sc = None if scales is None or not scales.numel() else [float(s) for s in scales.tolist()]
    sz = None if sizes is None or not sizes.numel() else _ints(sizes)
    if sc and sc[:2] != [1.0, 1.0]:
        raise NotImplementedError("Resize of batch/channel dims")
    nm = a.get("nearest_mode", "round_prefer_floor")
    dec = lambda v: v.decode() if isinstance(v, bytes) else v
    return _result(
        StaticResize(
            dec(mode),
            _get_torch_align_corners(dec(mode), dec(ctm)),
            scales=sc[2:] if sc else None,
            sizes=sz[2:] if sz else None,
            ctm=dec(ctm),
            nearest_mode=dec(nm),
        ),
        node,
    )


def _reduce18(node, graph):
    consts = _consts(node, graph)
    axes = consts[0] if consts else None
    axes = None if axes is None or not axes.numel() else _ints(axes)
    if axes is None and node.attributes.get("noop_with_empty_axes", 0):
        return _result(nn.Identity(), node)
    return _result(OnnxReduceStaticAxes(node.operation_type, axes, node.attributes.get("keepdims", 1)), node)


def _with_fallback(static, original):
    def converter(node, graph):
        try:
            return static(node, graph)
        except (KeyError, NotImplementedError):
            if original is None:
                raise NotImplementedError(
                    f"Converter is not implemented ({node.operation_type} with non-constant inputs)"
                ) from None
            return original(node, graph)

    return converter


_STATIC = {
    "Reshape": _reshape,
    "Slice": _slice,
    "Pad": _pad,
    "Expand": _expand,
    "Tile": _tile,
    "Split": _split,
    "Squeeze": _squeeze,
    "Resize": _resize,
}
_REDUCE = [
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSumSquare",
]
# newer schema versions that only add types (bfloat16/float8/int4...) or attributes we check elsewhere
_TYPE_ONLY = [
    "Reshape",
    "Cast",
    "Shape",
    "Constant",
    "Identity",
    "ConstantOfShape",
    "Flatten",
    "Transpose",
    "Unsqueeze",
    "Squeeze",
    "Conv",
    "ConvTranspose",
    "MaxPool",
    "GlobalAveragePool",
    "HardSwish",
    "HardSigmoid",
    "Size",
    "Gather",
    "Concat",
    "Where",
    "Equal",
    "Less",
    "Greater",
    "Relu",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Clip",
    "Softmax",
    "Sigmoid",
    "Tanh",
    "LeakyRelu",
    "MatMul",
    "Gemm",
    "Erf",
    "Sqrt",
    "Exp",
    "Log",
    "Neg",
    "Abs",
    "Max",
    "Min",
    "Range",
    "ScatterND",
    "GatherElements",
    "DepthToSpace",
    "InstanceNormalization",
    "LayerNormalization",
    "TopK",
    "Pad",
    "Split",
    "Resize",
    "AveragePool",
]
# of those, versions that changed semantics: only the guarded static converter, never the old one
_NEW_SEMANTICS = {"Pad": 18, "Split": 18, "Resize": 18, "AveragePool": 19}


def _avgpool19(original):
    def converter(node, graph):
        if any(d != 1 for d in node.attributes.get("dilations", [1])):
            raise NotImplementedError("AveragePool with dilations")
        return original(node, graph)

    return converter


_installed = False


def install(max_opset: int = 22) -> None:
    global _installed
    if _installed:
        return
    by_op = {}
    for d in list(_CONVERTER_REGISTRY):
        if d.domain == "":
            by_op.setdefault(d.operation_type, {})[d.version] = _CONVERTER_REGISTRY[d]
    for op, static in _STATIC.items():
        for v, conv in list(by_op.get(op, {}).items()):
            if v >= 10 or op not in ("Slice", "Pad", "Split", "Squeeze"):  # old versions use attributes already
                _CONVERTER_REGISTRY[OperationDescription("", op, v)] = _with_fallback(static, conv)
    for op in _REDUCE:
        for opset in range(18, max_opset + 1):
            v = defs.get_schema(op, max_inclusive_version=opset, domain="").since_version
            _CONVERTER_REGISTRY.setdefault(OperationDescription("", op, v), _with_fallback(_reduce18, None))
    for op in _TYPE_ONLY:  # map each newer since_version to the newest converter onnx2torch has
        have = {d.version: c for d, c in _CONVERTER_REGISTRY.items() if d.domain == "" and d.operation_type == op}
        if not have:
            continue
        for opset in range(1, max_opset + 1):
            try:
                v = defs.get_schema(op, max_inclusive_version=opset, domain="").since_version
            except Exception:
                continue
            if v not in have:
                newest = have[max(k for k in have if k < v)] if any(k < v for k in have) else None
                if newest is not None:
                    if op in _NEW_SEMANTICS and v >= _NEW_SEMANTICS[op]:
                        newest = _avgpool19(newest) if op == "AveragePool" else _with_fallback(_STATIC[op], None)
                    elif op in _STATIC:
                        newest = _with_fallback(_STATIC[op], newest)
                    _CONVERTER_REGISTRY[OperationDescription("", op, v)] = newest
                    have[v] = newest
    _installed = True

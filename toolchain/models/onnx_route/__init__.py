"""ONNX models: onnx2torch turns the graph into PyTorch, litert-torch converts that (``models.pytorch``), and
onnxruntime runs the ONNX file itself for the float reference. Why this route: docs/onnx-route.md.

Before onnx2torch (1.5.15) sees a graph: shared initializers are inlined (``prepare``), the input shape is fixed
and everything constant is folded (``fold``), and the shape-reading ops get converters with their constants
baked in (``static``), so that ``torch.export`` can trace it. Every op is checked first: one line names all the
ops the route cannot convert. HardSigmoid is rewritten as ``relu6(6a·x + 6b) / 6`` (litert-torch lowers the clip
to RELU_0_TO_1, which tflite-micro and the Edge TPU do not run).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolchain.data.sources import InputSpec
from toolchain.errors import ConversionError, DataShapeError, InputError
from toolchain.models.pytorch import first_line

#: ONNX defines these on [N, C, H, W]: an input that reaches one through element-wise ops is NCHW
CHANNEL_FIRST_OPS = {
    "Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool",
    "BatchNormalization", "InstanceNormalization", "LRN", "DepthToSpace", "SpaceToDepth", "Resize",
}  # fmt: skip
PASS_THROUGH = {
    "Cast", "Identity", "Add", "Sub", "Mul", "Div", "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish",
    "LeakyRelu", "Neg", "Abs", "Sqrt", "Dropout",
}  # fmt: skip


def load(path: Path):
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # protobuf decode and checker errors of many types
        why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise InputError(f"model.file: {Path(path).name} is not a valid ONNX model: {why}") from None
    return model


def _data_inputs(model) -> list:
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _dims(vi) -> list:
    return [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]


def layout_of(model, vi) -> str | None:
    """``nchw`` or ``nhwc`` for a 4-D input, from the graph (the first channel-first op it reaches, or tf2onnx's
    Transpose to NCHW), else from its shape (a channel axis of at most 4); None when neither tells."""
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
    frontier, seen = [vi.name], set()
    while frontier:
        for n in consumers.get(frontier.pop(0), []):
            if id(n) in seen:
                continue
            seen.add(id(n))
            if n.op_type in CHANNEL_FIRST_OPS:
                return "nchw"
            if n.op_type == "Transpose":
                perm = list(next((a.ints for a in n.attribute if a.name == "perm"), []))
                return "nhwc" if perm == [0, 3, 1, 2] else None
            if n.op_type in PASS_THROUGH:
                frontier.extend(n.output)
    c1, c3 = _dims(vi)[1], _dims(vi)[3]
    small = lambda d: d is not None and 0 < d <= 4  # noqa: E731
    if small(c1) != small(c3):
        return "nchw" if small(c1) else "nhwc"
    return None


def input_specs(model, layout: str | None = None) -> list[InputSpec]:
    """The model's data inputs as the data and the artifacts take them (images channels last)."""
    specs = []
    for vi in _data_inputs(model):
        dims = _dims(vi)
        if any(d is None for d in dims[1:]):
            raise InputError(f"model.file: input {vi.name!r} has a symbolic size {dims}: export it with a fixed one")
        if len(dims) != 4:
            specs.append(InputSpec(vi.name, tuple(dims[1:])))
            continue
        found = layout_of(model, vi)
        if layout is None and found is None:
            raise DataShapeError(
                f"model.file: cannot tell whether input {vi.name!r} {dims} is NCHW or NHWC: set data.layout"
            )
        if layout is not None and found is not None and layout != found:
            raise DataShapeError(f"data.layout: {layout}, but the model's input {vi.name!r} {dims} is {found.upper()}")
        if (layout or found) == "nchw":
            specs.append(InputSpec(vi.name, (dims[2], dims[3], dims[1]), channels_first=True))
        else:
            specs.append(InputSpec(vi.name, tuple(dims[1:])))
    return specs


def unsupported_ops(model) -> list[str]:
    """``Op-version`` of every node onnx2torch has no converter for."""
    import onnx
    from onnx2torch.node_converters.registry import get_converter

    opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}
    bad = set()
    for n in model.graph.node:
        domain = "" if n.domain == "ai.onnx" else n.domain
        try:
            get_converter(operation_type=n.op_type, version=opsets.get(domain, 1), domain=domain)
        except NotImplementedError:
            try:
                schema = onnx.defs.get_schema(n.op_type, max_inclusive_version=opsets.get(domain, 1), domain=domain)
                since = schema.since_version
            except Exception:
                since = opsets.get(domain)
            bad.add(f"{(domain + '.') if domain else ''}{n.op_type}-{since}")
    return sorted(bad)


def to_torch(model, specs: list[InputSpec]):
    """The ONNX graph as a ``torch.fx.GraphModule`` (NCHW where the model is), batch 1."""
    import onnx2torch

    from toolchain.models.onnx_route import static
    from toolchain.models.onnx_route.fold import fold_constants, prepare

    static.install()
    shapes = {}
    for vi, s in zip(_data_inputs(model), specs, strict=True):
        shapes[vi.name] = [1, s.shape[2], s.shape[0], s.shape[1]] if s.channels_first else [1, *s.shape]
    try:
        folded = fold_constants(prepare(model), shapes)
    except Exception as exc:
        raise ConversionError(f"ONNX: cannot fold the graph's constants: {first_line(exc)}") from None
    bad = unsupported_ops(folded)
    if bad:
        raise ConversionError(f"ONNX: the route cannot convert {', '.join(bad)} (onnx2torch {_version()})")
    try:
        module = onnx2torch.convert(folded).eval()
    except Exception as exc:
        raise ConversionError(f"onnx2torch cannot convert the model: {first_line(exc)}") from None
    _hardsigmoid_as_relu6(module)
    return module


def _hardsigmoid_as_relu6(module) -> None:
    import torch
    from onnx2torch.node_converters.activations import OnnxHardSigmoid

    class HardSigmoidRelu6(torch.nn.Module):
        def __init__(self, alpha: float, beta: float):
            super().__init__()
            self.scale, self.shift = 6.0 * alpha, 6.0 * beta

        def forward(self, x):
            return torch.nn.functional.relu6(x * self.scale + self.shift) * (1.0 / 6.0)

    for name, m in list(module.named_modules()):
        if isinstance(m, OnnxHardSigmoid):
            parent, _, attr = name.rpartition(".")
            setattr(module.get_submodule(parent) if parent else module, attr, HardSigmoidRelu6(m.alpha, m.beta))


def run(path: Path, specs: list[InputSpec], xs: list[np.ndarray]) -> list[np.ndarray]:
    """onnxruntime's outputs on channels-last data (images transposed to NCHW where the model takes them)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    outs: list[list[np.ndarray]] = []
    for k in range(len(xs[0])):
        feed = {}
        for name, s, x in zip(names, specs, xs, strict=True):
            sample = x[k : k + 1]
            feed[name] = np.ascontiguousarray(sample.transpose(0, 3, 1, 2) if s.channels_first else sample)
        try:
            outs.append(sess.run(None, feed))
        except Exception as exc:
            raise ConversionError(f"onnxruntime cannot run the model on the data: {first_line(exc)}") from None
    return [np.concatenate([o[j] for o in outs]).astype(np.float32) for j in range(len(outs[0]))]


def _version() -> str:
    from toolchain.cache import package_version

    return package_version("onnx2torch")

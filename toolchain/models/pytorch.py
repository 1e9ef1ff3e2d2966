"""PyTorch models: an ``ExportedProgram`` (``.pt2``, written by ``torch.export.save``), converted to a float
flatbuffer by Google's litert-torch (no TensorFlow), which the toolchain then quantizes itself.

Loading a ``.pt2`` unpickles its weights and constants: open only files you trust, as with any PyTorch checkpoint.
Image inputs (4-D, NCHW in PyTorch) are taken channels last: a permute to NCHW is put in front of the graph, so the
artifact takes NHWC, as every MCU, NPU and Edge TPU runtime wants, litert-torch's layout pass leaves no TRANSPOSE
pair around the convolutions, and tensor names keep the PyTorch module path (``litert_torch.to_channel_last_io``
would rename every tensor after its wrapper). The batch is 1: litert-torch 0.10 lowers no dynamic batch through
a reshape. The float reference is the program itself, run by PyTorch on the eval split.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from toolchain.data.sources import InputSpec
from toolchain.errors import ConversionError, InputError

#: litert-torch draws its progress on stdout, which carries the toolchain's results
os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
#: metadata litert-torch writes that makes the converter's quantizer keep convolutions in float
DROPPED_METADATA = (b"keep_stablehlo_constant",)


def load(path: Path):
    """The ``ExportedProgram`` in ``path``; anything else is refused with one line."""
    import torch

    try:
        return torch.export.load(str(path))
    except Exception as exc:  # zip, pickle and version errors of many types
        why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"model.file: {Path(path).name} is not a PyTorch ExportedProgram (write it with torch.export.save): {why}"
        ) from None


def user_inputs(program) -> list[tuple[str, tuple]]:
    """(name, shape with the batch axis) of each input the program's caller gives (not parameters, buffers)."""
    from torch.export.graph_signature import InputKind

    nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    out = []
    for spec in program.graph_signature.input_specs:
        if spec.kind != InputKind.USER_INPUT:
            continue
        val = nodes[spec.arg.name].meta.get("val")
        if val is None or not hasattr(val, "shape"):
            raise InputError(f"model.file: input {spec.arg.name!r} of the program is not a tensor")
        out.append((spec.arg.name, tuple(int(d) if str(d).lstrip("-").isdigit() else None for d in val.shape)))
    if not out:
        raise InputError("model.file: the program takes no tensor input")
    return out


def input_specs(program) -> list[InputSpec]:
    """The program's inputs as the data and the artifacts take them: images channels last."""
    specs = []
    for name, shape in user_inputs(program):
        if len(shape) == 4:
            c, h, w = shape[1:]
            specs.append(InputSpec(name, (h, w, c), channels_first=True))
        else:
            specs.append(InputSpec(name, shape[1:]))
    return specs


def to_tflite(module, specs: list[InputSpec]) -> bytes:
    """The float flatbuffer of a ``torch.fx.GraphModule`` (batch 1; images channels last)."""
    import litert_torch
    import torch

    if any(d is None for s in specs for d in s.shape):
        raise InputError("model.file: the program's input shape is not fixed (export it with a concrete shape)")
    module = channels_last(module, specs)
    sample = tuple(torch.zeros((1, *s.shape)) for s in specs)
    try:
        blob = bytes(litert_torch.convert(module, sample).model_content())
    except Exception as exc:  # torch.export / lowering errors of many types
        raise ConversionError(f"litert-torch cannot convert the model: {first_line(exc)}") from None
    return strip_metadata(blob)


def channels_last(module, specs: list[InputSpec]):
    """The module with a permute NHWC -> NCHW after each image input (in its own graph: names are kept)."""
    import torch

    module.training = False  # an exported program is traced already; litert-torch warns on the flag only
    g = module.graph
    placeholders = [n for n in g.nodes if n.op == "placeholder"]
    for node, spec in zip(placeholders, specs, strict=False):
        if not spec.channels_first:
            continue
        with g.inserting_after(node):
            permuted = g.call_function(torch.ops.aten.permute.default, (node, [0, 3, 1, 2]))
        node.replace_all_uses_with(permuted, delete_user_cb=lambda n, p=permuted: n is not p)
    module.recompile()
    return module


def strip_metadata(blob: bytes) -> bytes:
    """The flatbuffer without the metadata entries in ``DROPPED_METADATA`` (their buffers stay, empty)."""
    from ai_edge_litert import schema_py_generated as fb

    m = fb.ModelT.InitFromObj(fb.Model.GetRootAs(blob, 0))
    kept = [e for e in (m.metadata or []) if e.name not in DROPPED_METADATA]
    if len(kept) == len(m.metadata or []):
        return blob
    import flatbuffers

    m.metadata = kept
    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def run(module, specs: list[InputSpec], xs: list[np.ndarray], batch: int = 1) -> list[np.ndarray]:
    """The module's outputs on channels-last data (images transposed back to NCHW), one array per output;
    ``batch`` samples per call (an exported program's batch is fixed where it was traced)."""
    import torch

    parts: list[list[np.ndarray]] = []
    with torch.no_grad():
        for start in range(0, len(xs[0]), batch):
            args = []
            for s, x in zip(specs, xs, strict=True):
                part = x[start : start + batch]
                args.append(
                    torch.from_numpy(np.ascontiguousarray(part.transpose(0, 3, 1, 2) if s.channels_first else part))
                )
            try:
                out = module(*args)
            except Exception as exc:
                raise ConversionError(f"PyTorch cannot run the model on the data: {first_line(exc)}") from None
            outs = out if isinstance(out, (list, tuple)) else [out]
            parts.append([o.detach().numpy().astype(np.float32) for o in outs])
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0][:300] if text else type(exc).__name__).rstrip(".:")

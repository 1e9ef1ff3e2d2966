"""Fix an ONNX model's input shapes and fold everything that is then constant (Shape chains, shape arithmetic,
constant-only subgraphs), so that what reaches onnx2torch has initializers wherever a shape is needed
and
``prepare``: the legacy exporter's shared initializers (Identity of an initializer) and Constant nodes become
initializers, which onnx2torch's Conv and Gemm converters need."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference
from onnx.reference import ReferenceEvaluator

_NEVER_FOLD = {
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "If",
    "Loop",
    "Scan",
}


def _static_dims(vi):
    dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
    return dims if vi.type.tensor_type.HasField("shape") and all(d is not None for d in dims) else None


def fix_input_shapes(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> None:
    for vi in model.graph.input:
        if vi.name in shapes:
            dims = vi.type.tensor_type.shape.dim
            if len(dims) != len(shapes[vi.name]):
                raise ValueError(f"input {vi.name}: rank {len(dims)} != {len(shapes[vi.name])}")
            for d, v in zip(dims, shapes[vi.name], strict=False):
                if d.HasField("dim_value") and d.dim_value != v:
                    raise ValueError(f"input {vi.name}: dim {d.dim_value} fixed in the model, asked {v}")
                d.Clear()
                d.dim_value = v
    # output/value_info dims that named the batch symbol are stale now: let shape inference redo them
    del model.graph.value_info[:]
    for vi in model.graph.output:
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param"):
                d.Clear()


def fold_constants(
    model: onnx.ModelProto, input_shapes: dict[str, list[int]] | None = None, rounds: int = 8
) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    if input_shapes:
        fix_input_shapes(m, input_shapes)
    total = 0
    for _ in range(rounds):  # folding makes more shapes static (e.g. Pad with now-constant pads): repeat to a fixpoint
        m, folded = _fold_once(m)
        total += folded
        if not folded:
            break
    m.doc_string = (model.doc_string + f" [folded {total} nodes]").strip()
    return m


def _fold_once(m: onnx.ModelProto):
    m = shape_inference.infer_shapes(m, data_prop=True)
    g = m.graph
    opsets = [helper.make_opsetid(o.domain, o.version) for o in m.opset_import]
    vinfo = {vi.name: vi for vi in list(g.value_info) + list(g.input) + list(g.output)}
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    keep, folded = [], 0
    for n in g.node:
        ins = [x for x in n.input if x]
        value = None
        if (
            n.domain in ("", "ai.onnx")
            and n.op_type not in _NEVER_FOLD
            and not any(a.g.node or a.graphs for a in n.attribute)
        ):
            if n.op_type == "Shape" and n.input[0] in vinfo and _static_dims(vinfo[n.input[0]]) is not None:
                dims = _static_dims(vinfo[n.input[0]])
                attrs = {a.name: a.i for a in n.attribute}
                start, end = attrs.get("start", 0), attrs.get("end", len(dims))
                value = [np.array(dims[start:end], dtype=np.int64)]
            elif n.op_type == "Size" and n.input[0] in vinfo and _static_dims(vinfo[n.input[0]]) is not None:
                value = [np.array(int(np.prod(_static_dims(vinfo[n.input[0]]))), dtype=np.int64)]
            elif all(x in consts for x in ins):
                sub = helper.make_graph(
                    [n],
                    "fold",
                    [
                        helper.make_tensor_value_info(
                            x, helper.np_dtype_to_tensor_dtype(consts[x].dtype), consts[x].shape
                        )
                        for x in ins
                    ],
                    [helper.make_value_info(o, onnx.TypeProto()) for o in n.output],
                )
                sm = helper.make_model(sub, opset_imports=opsets)
                sm.ir_version = m.ir_version
                value = ReferenceEvaluator(sm).run(None, {x: consts[x] for x in ins})
        if value is None:
            keep.append(n)
            continue
        for o, v in zip(n.output, value, strict=False):
            consts[o] = np.asarray(v)
        folded += 1
    used = {x for n in keep for x in n.input} | {o.name for o in g.output}
    del g.node[:]
    g.node.extend(keep)
    del g.initializer[:]
    g.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items() if k in used)
    del g.value_info[:]
    m = shape_inference.infer_shapes(m)
    onnx.checker.check_model(m)
    return m, folded


def _inline_constants(m: onnx.ModelProto) -> None:
    """Constant(value=T) and Identity(initializer) -> initializers. The legacy exporter dedups equal initializers
    (e.g. zero biases) through Identity nodes; onnx2torch's Conv/Gemm converters need weights/biases as initializers
    (else KeyError: 'features.6.block.2.fc1.bias')."""
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    graph_outputs = {o.name for o in g.output}
    keep = []
    for n in g.node:
        t = None
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(n.attribute[0].t)
        elif n.op_type == "Identity" and n.input[0] in inits:
            t = onnx.TensorProto()
            t.CopyFrom(inits[n.input[0]])
        if t is None or n.output[0] in graph_outputs:
            keep.append(n)
            continue
        t.name = n.output[0]
        g.initializer.append(t)
        inits[t.name] = t
    del g.node[:]
    g.node.extend(keep)


def prepare(model: onnx.ModelProto) -> onnx.ModelProto:
    """Make exporter output digestible for onnx2torch 1.5.15 (copy; semantics unchanged)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    _inline_constants(m)
    return m

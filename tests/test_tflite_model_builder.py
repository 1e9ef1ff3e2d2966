"""``GraphBuilder`` writes real .tflite flatbuffers from parts (no TensorFlow); ``TFLiteModel`` reads them back."""

import numpy as np
import pytest

from toolchain.errors import InputError
from toolchain.report.inspect import inspect_model
from toolchain.tflite_model import GraphBuilder, TFLiteModel


def conv_graph() -> tuple[GraphBuilder, bytes]:
    g = GraphBuilder(description="synthetic conv")
    x = g.tensor([1, 8, 8, 3], scale=[0.5], zero_point=[-128], name="input")
    w = g.tensor(
        [4, 3, 3, 3],
        data=np.arange(108, dtype=np.int8).reshape(4, 3, 3, 3),
        scale=[0.1, 0.2, 0.3, 0.4],
        zero_point=[0, 0, 0, 0],
        quantized_dimension=0,
        name="kernel",
    )
    b = g.const([4], "int32", 7, name="bias")
    y = g.tensor([1, 6, 6, 4], scale=[0.25], zero_point=[3], name="conv")
    g.op("CONV_2D", [x, w, b], [y], strideW=1, strideH=1, dilationHFactor=1, fusedActivationFunction=1)
    dw = g.const([1, 3, 3, 4], scale=[0.1] * 4, zero_point=[0] * 4, quantized_dimension=3, name="dw")
    z = g.tensor([1, 4, 4, 4], scale=[0.25], zero_point=[3], name="dwconv")
    g.op("DEPTHWISE_CONV_2D", [y, dw, -1], [z], depthMultiplier=1)
    flat = g.tensor([1, 64], scale=[0.25], zero_point=[3], name="flat")
    g.op("RESHAPE", [z, g.const([2], "int32", 0, name="shape")], [flat])
    fc = g.const([10, 64], name="fc")
    out = g.tensor([1, 10], name="logits", signature=[-1, 10])
    g.op("FULLY_CONNECTED", [flat, fc, -1], [out])
    g.op("CUSTOM:postprocess", [out], [g.tensor([1, 10], "float32", name="post")])
    return g, g.to_bytes([x], [out])


def test_round_trip_of_tensors_shapes_dtypes_and_quantization():
    m = TFLiteModel(conv_graph()[1])
    t = {t.name: t for t in m.tensors}
    assert [x.index for x in m.tensors] == list(range(len(m.tensors)))
    assert (t["input"].shape, t["input"].dtype, t["input"].scales, t["input"].zero_points) == (
        [1, 8, 8, 3],
        "int8",
        [0.5],
        [-128],
    )
    assert t["kernel"].scales == pytest.approx([0.1, 0.2, 0.3, 0.4]) and t["kernel"].quantized_dimension == 0
    assert t["dw"].quantized_dimension == 3 and t["dw"].const_bytes == 36
    assert (t["bias"].dtype, t["bias"].const_bytes) == ("int32", 16)
    assert t["kernel"].const_bytes == 108 and t["kernel"].is_constant and not t["input"].is_constant
    assert t["logits"].shape == [1, 10] and t["logits"].shape_signature == [-1, 10] and t["logits"].is_dynamic
    assert not t["conv"].is_dynamic and t["conv"].shape_signature == [1, 6, 6, 4]
    assert t["post"].dtype == "float32" and t["post"].scales == []
    assert m.constant_bytes == 108 + 16 + 36 + 8 + 640


def test_round_trip_of_ops_options_io_and_counts():
    m = TFLiteModel(conv_graph()[1])
    names = {t.name: t.index for t in m.tensors}
    assert [op.name for op in m.ops] == [
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "RESHAPE",
        "FULLY_CONNECTED",
        "CUSTOM:postprocess",
    ]
    assert m.op_counts() == {
        "CONV_2D": 1,
        "DEPTHWISE_CONV_2D": 1,
        "RESHAPE": 1,
        "FULLY_CONNECTED": 1,
        "CUSTOM:postprocess": 1,
    }
    conv = m.ops[0]
    assert conv.inputs == [names["input"], names["kernel"], names["bias"]] and conv.outputs == [names["conv"]]
    assert conv.option("fusedActivationFunction") == 1 and conv.option("strideW") == 1
    assert m.ops[1].inputs[2] == -1 and m.ops[1].option("depthMultiplier") == 1
    assert m.ops[4].options is None and m.ops[4].option("anything", "default") == "default"
    assert m.inputs == [names["input"]] and m.outputs == [names["logits"]]
    assert m.subgraph_count == 1 and m.description == "synthetic conv"
    assert m.macs() == {0: 6 * 6 * 4 * 27, 1: 4 * 4 * 4 * 9, 3: 10 * 64}


@pytest.mark.parametrize(
    ("dtype", "itemsize"), [("int8", 1), ("uint8", 1), ("int16", 2), ("int32", 4), ("float16", 2), ("float32", 4)]
)
def test_every_dtype_reads_back_with_its_constant_bytes(dtype, itemsize):
    g = GraphBuilder()
    x = g.tensor([2, 3], dtype)
    c = g.const([2, 3], dtype, 1)
    y = g.tensor([2, 3], dtype)
    g.op("ADD", [x, c], [y])
    m = g.model([x], [y])
    assert [t.dtype for t in m.tensors] == [dtype] * 3
    assert [t.const_bytes for t in m.tensors] == [0, 6 * itemsize, 0]
    assert m.tensors[0].activation_bytes == 6 * itemsize


def test_subgraphs_and_the_file_is_a_tflite_flatbuffer(tmp_path):
    g, blob = conv_graph()
    assert blob[4:8] == b"TFL3"
    assert TFLiteModel(g.to_bytes([0], [1], subgraphs=3)).subgraph_count == 3
    path = tmp_path / "synthetic.tflite"
    path.write_bytes(blob)
    m = TFLiteModel.from_file(path)
    assert m.path == str(path) and m.size == len(blob)
    with pytest.raises(InputError, match="not a TFLite flatbuffer"):
        TFLiteModel(blob[:4] + b"XXXX" + blob[8:])


def test_inspect_reads_a_synthetic_graph():
    info = inspect_model(TFLiteModel(conv_graph()[1]))
    assert info["op_sequence"][-1] == "CUSTOM:postprocess" and info["macs"] == 6 * 6 * 4 * 27 + 4 * 4 * 4 * 9 + 640
    assert info["size_bytes"] == sum(info["size_breakdown"].values()) and info["size_breakdown"]["structure"] > 0
    assert info["size_breakdown"]["weights"] == 808
    kernel = next(t for t in info["tensors"] if t["name"] == "kernel")
    assert kernel["quantization"] == {
        "per_channel_axis": 0,
        "channels": 4,
        "scale_min": pytest.approx(0.1),
        "scale_max": pytest.approx(0.4),
    }
    assert info["outputs"][0]["shape"] == [-1, 10]


def test_options_are_checked_against_the_options_table():
    g = GraphBuilder()
    x = g.tensor([1, 4])
    with pytest.raises(ValueError, match="Conv2DOptions has no field 'strides'"):
        g.op("CONV_2D", [x], [x], strides=2)
    with pytest.raises(ValueError, match="pass options_type="):
        g.op("HARD_SWISH", [x], [x], alpha=1)
    g.op("LEAKY_RELU", [x], [x], options_type="LeakyReluOptions", alpha=0.25)
    assert g.model([x], [x]).ops[0].option("alpha") == pytest.approx(0.25)

"""Coral's Edge TPU rules one by one on synthetic graphs: real flatbuffers written by ``GraphBuilder`` (no
TensorFlow, no interpreter), each built to keep or break exactly one rule."""

import pytest

from toolchain.checks import edgetpu
from toolchain.checks.edgetpu import check, rules_for
from toolchain.config.target import EdgeTpu
from toolchain.tflite_model import GraphBuilder, TFLiteModel

SPEC = EdgeTpu()
PARTITION = "after the first unmapped op {} (the compiler makes one TPU partition)"
UNSUPPORTED = "Operation not supported: it is not in Coral's supported-operations table ({})"
DTYPE = "Operation is working on an unsupported data type (activations must be int8/uint8) ({})"


def act(g: GraphBuilder, shape, dtype="int8", **kw) -> int:
    """An activation with a per-tensor int8 quantization."""
    return g.tensor(shape, dtype, scale=[0.05], zero_point=[0], **kw)


def conv(g: GraphBuilder, x: int, cout: int = 4, k: int = 3, weights="int8", **options) -> int:
    """A valid-padding CONV_2D on ``x`` ([1, h, w, cin]) with int8 weights and an int32 bias; its output."""
    _, h, w, cin = g.shape(x)
    wt = g.const([cout, k, k, cin], weights, scale=[0.02] * cout, zero_point=[0] * cout, name=f"w{len(g._ops)}")
    b = g.const([cout], "int32", 0)
    y = act(g, [1, h - k + 1, w - k + 1, cout])
    g.op("CONV_2D", [x, wt, b], [y], padding=1, strideW=1, strideH=1, **options)
    return y


def sandwich(middle) -> TFLiteModel:
    """CONV_2D -> ``middle(g, x) -> y`` -> CONV_2D: the op under test at index 1, a supported conv after it."""
    g = GraphBuilder()
    x = act(g, [1, 12, 12, 4], name="x")
    y = middle(g, conv(g, x))
    return g.model([x], [conv(g, y, k=1)])


def placed(m: TFLiteModel, spec: EdgeTpu = SPEC) -> tuple[dict, list[tuple[str, str, str]]]:
    r = check(m, spec)
    return r, [(p["op"], p["on"], p["reason"]) for p in r["placement"]]


def compliant() -> TFLiteModel:
    """conv -> conv -> reshape -> fully connected -> softmax, all int8: every op on Coral's list."""
    g = GraphBuilder()
    x = act(g, [1, 8, 8, 1], name="x")
    y = conv(g, conv(g, x), cout=2)  # [1, 4, 4, 2]
    flat = act(g, [1, 32])
    g.op("RESHAPE", [y, g.const([2], "int32", 0)], [flat])
    logits = act(g, [1, 5])
    g.op("FULLY_CONNECTED", [flat, g.const([5, 32], scale=[0.02], zero_point=[0]), g.const([5], "int32", 0)], [logits])
    probs = act(g, [1, 5])
    g.op("SOFTMAX", [logits], [probs], beta=1.0)
    return g.model([x], [probs])


def test_a_compliant_int8_graph_maps_every_op_to_the_tpu():
    m = compliant()
    r, ops = placed(m)
    assert r["compiles"] and r["refusals"] == [] and r["first_cpu_op"] is None
    assert ops == [
        (name, "tpu", "Mapped to Edge TPU") for name in ["CONV_2D", "CONV_2D", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
    ]
    assert r["ops_on_tpu"] == 5 and r["ops_on_cpu"] == 0
    assert r["cached_param_bytes"] == m.constant_bytes == (36 + 16) + (72 + 8) + 8 + (160 + 20)
    assert r["streamed_param_bytes"] == 0 and r["estimate_ms"]["param_streaming"] == 0
    assert r["macs_on_tpu"] == m.total_macs() == 6 * 6 * 4 * 9 + 4 * 4 * 2 * 36 + 5 * 32 and r["macs_on_cpu"] == 0


def _add_with(dtype: str, constant: bool = False):
    def middle(g, x):
        shape = g.shape(x)
        other = g.const(shape, dtype, name="other") if constant else g.tensor(shape, dtype, name="other")
        y = act(g, shape)
        g.op("ADD", [x, other], [y])
        return y

    return middle


def _unary(op: str, out_shape=None, **options):
    def middle(g, x):
        y = act(g, out_shape or g.shape(x))
        g.op(op, [x], [y], **options)
        return y

    return middle


def _reshape_to(shape):
    def middle(g, x):
        mid = act(g, shape, name="r")
        g.op("RESHAPE", [x, g.const([len(shape)], "int32", 0)], [mid])
        back = act(g, g.shape(x))
        g.op("RESHAPE", [mid, g.const([4], "int32", 0)], [back])
        return back

    return middle


def _softmax(shape):
    def middle(g, x):
        flat = act(g, shape)
        g.op("RESHAPE", [x, g.const([len(shape)], "int32", 0)], [flat])
        probs = act(g, shape)
        g.op("SOFTMAX", [flat], [probs], beta=1.0)
        back = act(g, g.shape(x))
        g.op("RESHAPE", [probs, g.const([4], "int32", 0)], [back])
        return back

    return middle


def _concat(n_inputs: int, constant: bool, fused: int = 0):
    def middle(g, x):
        _, h, w, c = g.shape(x)
        parts = [x] * (n_inputs - int(constant)) + ([g.const([1, h, w, c], value=0)] if constant else [])
        y = act(g, [1, h, w, c * n_inputs])
        g.op("CONCATENATION", parts, [y], axis=3, fusedActivationFunction=fused)
        back = act(g, [1, h, w, c])
        g.op("STRIDED_SLICE", [y, *(g.const([4], "int32", 0) for _ in range(3))], [back])
        return back

    return middle


def _fully_connected(out_shape, weights_format=0):
    def middle(g, x):
        _, h, w, c = g.shape(x)
        units = out_shape[-1]
        y = act(g, out_shape)
        wt = g.const([units, c], scale=[0.02], zero_point=[0])
        g.op("FULLY_CONNECTED", [x, wt, -1], [y], weightsFormat=weights_format, keepNumDims=True)
        back = act(g, [1, h, w, c])
        g.op("RESHAPE", [y, g.const([4], "int32", 0)], [back])
        return back

    return middle


def _depthwise(h_factor: int, w_factor: int):
    def middle(g, x):
        _, h, w, c = g.shape(x)
        y = act(g, [1, h, w, c])
        wt = g.const([1, 3, 3, c], scale=[0.02] * c, zero_point=[0] * c, quantized_dimension=3)
        g.op("DEPTHWISE_CONV_2D", [x, wt, -1], [y], dilationHFactor=h_factor, dilationWFactor=w_factor, padding=0)
        return y

    return middle


def _conv_dilated(h_factor: int, w_factor: int):
    return lambda g, x: conv(g, x, k=1, dilationHFactor=h_factor, dilationWFactor=w_factor)


def _quantize_back(g, x):
    f = g.tensor(g.shape(x), "float32", name="f")
    g.op("DEQUANTIZE", [x], [f])
    y = act(g, g.shape(x))
    g.op("QUANTIZE", [f], [y])
    return y


def _slice(g, x, **options):
    y = act(g, g.shape(x))
    g.op("STRIDED_SLICE", [x, *(g.const([4], "int32", 0) for _ in range(3))], [y], **options)
    return y


# (the graph's middle, the op expected to be the first unmapped one and its reason; None: every op maps)
CASES = {
    "unsupported HARD_SWISH": (_unary("HARD_SWISH"), "HARD_SWISH", UNSUPPORTED.format("HARD_SWISH")),
    "unsupported custom op": (_unary("CUSTOM:my_op"), "CUSTOM:my_op", UNSUPPORTED.format("CUSTOM:my_op")),
    "unsupported and float: DEQUANTIZE inside": (
        _quantize_back,
        "DEQUANTIZE",
        UNSUPPORTED.format("DEQUANTIZE") + "; " + DTYPE.format("f is float32"),
    ),
    "float32 activation": (_add_with("float32"), "ADD", DTYPE.format("other is float32")),
    "int16 activation": (_add_with("int16"), "ADD", DTYPE.format("other is int16")),
    "int8 constant operand": (_add_with("int8", constant=True), None, None),
    "5-D, an outer axis > 1": (
        _reshape_to([1, 2, 5, 10, 4]),
        "RESHAPE",
        "Tensor has unsupported rank: at most 3 dimensions, or else only the 3 innermost larger than 1 "
        "(r [1, 2, 5, 10, 4])",
    ),
    "5-D, only the 3 innermost > 1": (_reshape_to([1, 1, 10, 10, 4]), None, None),
    "softmax over 2 axes": (
        _softmax([1, 4, 100]),
        "SOFTMAX",
        "Softmax supports only a 1-D input (one axis larger than 1) of at most 16,000 elements (input [1, 4, 100])",
    ),
    "softmax of 400 elements": (_softmax([1, 400]), None, None),
    "dilation 2x1": (
        _conv_dilated(2, 1),
        "CONV_2D",
        "Convolutions must use the same dilation in x and y (dilation 2x1)",
    ),
    "dilation 2x2": (_conv_dilated(2, 2), None, None),
    "depthwise dilation 1x3": (
        _depthwise(1, 3),
        "DEPTHWISE_CONV_2D",
        "Convolutions must use the same dilation in x and y (dilation 1x3)",
    ),
    "max pool with fused ReLU": (
        _unary("MAX_POOL_2D", strideW=1, strideH=1, filterWidth=1, filterHeight=1, fusedActivationFunction=1),
        "MAX_POOL_2D",
        "Pooling and concatenation must have no fused activation function (fused activation 1)",
    ),
    "average pool without activation": (
        _unary("AVERAGE_POOL_2D", strideW=1, strideH=1, filterWidth=1, filterHeight=1),
        None,
        None,
    ),
    "concat: constant among 3 inputs": (
        _concat(3, constant=True),
        "CONCATENATION",
        "Concatenation with a constant input must have exactly 2 inputs (3 inputs, 1 constant)",
    ),
    "concat: constant and fused ReLU6, both rules in registration order": (
        _concat(3, constant=True, fused=3),
        "CONCATENATION",
        "Pooling and concatenation must have no fused activation function (fused activation 3); "
        "Concatenation with a constant input must have exactly 2 inputs (3 inputs, 1 constant)",
    ),
    "concat: constant among 2 inputs": (_concat(2, constant=True), None, None),
    "concat: 3 activations": (_concat(3, constant=False), None, None),
    "fully connected to a 2-D output": (
        _fully_connected([1, 10, 10, 4]),
        "FULLY_CONNECTED",
        "Fully-connected weights must use the default format and the output must be one-dimensional "
        "(output [1, 10, 10, 4])",
    ),
    "fully connected, shuffled weights": (
        _fully_connected([1, 1, 1, 4], weights_format=1),
        "FULLY_CONNECTED",
        "Fully-connected weights must use the default format and the output must be one-dimensional "
        "(output [1, 1, 1, 4])",
    ),
    "strided slice with a new-axis mask": (
        lambda g, x: _slice(g, x, newAxisMask=1),
        "STRIDED_SLICE",
        "Strided slice needs ellipsis-axis-mask == 0 and new-axis-mask == 0 (masks set)",
    ),
    "strided slice with an ellipsis mask": (
        lambda g, x: _slice(g, x, ellipsisMask=2),
        "STRIDED_SLICE",
        "Strided slice needs ellipsis-axis-mask == 0 and new-axis-mask == 0 (masks set)",
    ),
    "strided slice without masks": (lambda g, x: _slice(g, x, beginMask=15), None, None),
}


@pytest.mark.parametrize("case", CASES)
def test_each_rule_on_the_op_that_keeps_or_breaks_it(case):
    middle, op, reason = CASES[case]
    m = sandwich(middle)
    r, ops = placed(m)
    assert r["compiles"] and r["refusals"] == []
    if reason is None:
        assert r["ops_on_cpu"] == 0 and r["first_cpu_op"] is None
        assert {on for _, on, _ in ops} == {"tpu"}
        return
    first = next(i for i, (_, on, _) in enumerate(ops) if on == "cpu")
    assert ops[first] == (op, "cpu", reason)
    assert r["first_cpu_op"] == f"#{first} {op}"
    assert all(
        p == (name, "tpu", "Mapped to Edge TPU")
        for p, name in zip(ops[:first], [o.name for o in m.ops[:first]], strict=True)
    )
    # one partition: every op after the first unmapped one runs on the CPU, the supported last conv too
    assert ops[first + 1 :] and all(
        (on, why) == ("cpu", PARTITION.format(f"#{first} {op}")) for _, on, why in ops[first + 1 :]
    )
    assert ops[-1][0] == "CONV_2D"
    assert r["ops_on_tpu"] == first and r["ops_on_cpu"] == len(m.ops) - first
    tpu_macs = sum(v for k, v in m.macs().items() if k < first)
    assert r["macs_on_tpu"] == tpu_macs and r["macs_on_cpu"] == m.total_macs() - tpu_macs > 0


def test_softmax_size_limit_is_16000_elements():
    assert placed(sandwich(_softmax([1, 16000])))[0]["ops_on_cpu"] == 0
    _, ops = placed(sandwich(_softmax([1, 16001])))
    assert ops[2] == (
        "SOFTMAX",
        "cpu",
        "Softmax supports only a 1-D input (one axis larger than 1) of at most 16,000 elements (input [1, 16001])",
    )


def _model_with(dynamic=False, float_weights=False, subgraphs=1) -> TFLiteModel:
    g = GraphBuilder()
    x = act(g, [1, 8, 8, 1], name="x", signature=[-1, 8, 8, 1] if dynamic else None)
    y = conv(g, x, weights="float32" if float_weights else "int8")
    return g.model([x], [y], subgraphs=subgraphs)


STATIC = "Tensor sizes must be constant at compile time (no dynamic sizes): 1 tensors have a dynamic axis, e.g. 'x'"
EIGHT_BIT = "The model must be fully 8-bit quantized (int8 or uint8 tensor parameters): 1 weight tensors are float, "
EIGHT_BIT += "e.g. 'w0' (float32)"
SUBGRAPHS = "The model must have one subgraph (more than one subgraph is not supported): 2 subgraphs"


@pytest.mark.parametrize(
    ("kw", "refusals"),
    [
        ({"dynamic": True}, [STATIC]),
        ({"float_weights": True}, [EIGHT_BIT]),
        ({"subgraphs": 2}, [SUBGRAPHS]),
        ({"dynamic": True, "float_weights": True, "subgraphs": 2}, [STATIC, EIGHT_BIT, SUBGRAPHS]),
    ],
)
def test_model_rules_refuse_the_whole_model(kw, refusals):
    r, ops = placed(_model_with(**kw))
    assert not r["compiles"] and r["refusals"] == refusals
    assert ops == [("CONV_2D", "cpu", "the compiler refuses the model")]
    assert r["ops_on_tpu"] == 0 and r["cached_param_bytes"] == 0 and r["macs_on_tpu"] == 0


def test_float_conversions_at_the_edges_stay_on_the_cpu_without_cutting_the_partition():
    g = GraphBuilder()
    x = g.tensor([1, 8, 8, 1], "float32", name="x")
    q = act(g, [1, 8, 8, 1])
    g.op("QUANTIZE", [x], [q])
    y = conv(g, conv(g, q))
    out = g.tensor([1, 4, 4, 4], "float32", name="out")
    g.op("DEQUANTIZE", [y], [out])
    r, ops = placed(g.model([x], [out]))
    edge = "float input/output conversion stays on the CPU"
    assert ops == [
        ("QUANTIZE", "cpu", edge),
        ("CONV_2D", "tpu", "Mapped to Edge TPU"),
        ("CONV_2D", "tpu", "Mapped to Edge TPU"),
        ("DEQUANTIZE", "cpu", edge),
    ]
    assert r["compiles"] and r["first_cpu_op"] is None and r["ops_on_tpu"] == 2


def test_the_output_dequantize_after_the_cut_is_still_the_edge_conversion():
    g = GraphBuilder()
    x = act(g, [1, 12, 12, 4], name="x")
    y = conv(g, _unary("HARD_SWISH")(g, conv(g, x)), k=1)
    out = g.tensor([1, 10, 10, 4], "float32", name="out")
    g.op("DEQUANTIZE", [y], [out])
    _, ops = placed(g.model([x], [out]))
    assert [on for _, on, _ in ops] == ["tpu", "cpu", "cpu", "cpu"]
    assert ops[2][2] == PARTITION.format("#1 HARD_SWISH")
    assert ops[3] == ("DEQUANTIZE", "cpu", "float input/output conversion stays on the CPU")


@pytest.mark.parametrize(
    ("cache", "cached", "streamed"),
    [(None, 2112, 0), (2112, 2112, 0), (2111, 2111, 1), (1000, 1000, 1112), (0, 0, 2112)],
)
def test_parameters_beyond_the_on_chip_cache_are_streamed(cache, cached, streamed):
    """One conv with 16 x 4x4x8 int8 weights (2,048 bytes) and a 16 x int32 bias (64 bytes)."""
    g = GraphBuilder()
    x = act(g, [1, 8, 8, 8], name="x")
    m = g.model([x], [conv(g, x, cout=16, k=4)])
    assert m.constant_bytes == 2112
    r, _ = placed(m, EdgeTpu() if cache is None else EdgeTpu(param_cache_bytes=cache))
    assert (r["cached_param_bytes"], r["streamed_param_bytes"]) == (cached, streamed)
    assert r["estimate_ms"]["param_streaming"] == pytest.approx(streamed / 320e6 * 1e3)
    assert r["estimate_ms"]["total"] == pytest.approx(sum(v for k, v in r["estimate_ms"].items() if k != "total"))


def test_only_the_tpus_parameters_count_against_the_cache():
    """The conv after the cut runs on the CPU: its weights are neither cached nor streamed."""
    m = sandwich(_unary("HARD_SWISH"))
    r, _ = placed(m, EdgeTpu(param_cache_bytes=10))
    first_conv = 4 * 3 * 3 * 4 + 4 * 4
    assert r["cached_param_bytes"] + r["streamed_param_bytes"] == first_conv < m.constant_bytes
    assert r["streamed_param_bytes"] == first_conv - 10


def test_the_registry_checks_generic_rules_then_the_ops_own():
    generic = [edgetpu.rule_supported_op, edgetpu.rule_eight_bit, edgetpu.rule_rank]
    assert rules_for("HARD_SWISH") == rules_for("ADD") == generic
    assert rules_for("CONV_2D") == [*generic, edgetpu.rule_same_dilation]
    assert rules_for("CONCATENATION") == [*generic, edgetpu.rule_no_fused_activation, edgetpu.rule_concat_constant]
    assert edgetpu.MODEL_RULES == [edgetpu.rule_static_shapes, edgetpu.rule_quantized, edgetpu.rule_single_subgraph]
    assert all(r.__doc__ and r.__doc__.strip() for r in edgetpu.MODEL_RULES + edgetpu.OP_RULES)
    assert set(edgetpu.OP_RULES_BY_TYPE) <= set(edgetpu.SUPPORTED_OPS)


def test_a_rule_for_an_op_outside_the_table_is_refused():
    with pytest.raises(ValueError, match="op rule for ops not in edgetpu_ops.yaml: HARD_SWISH"):
        edgetpu.op_rule("CONV_2D", "HARD_SWISH")


def test_features_split_the_tpus_macs_by_kind():
    m = sandwich(_depthwise(1, 1))
    f = edgetpu.features(m, SPEC)
    macs = m.macs()
    assert f["macs"] == {"conv": macs[0] + macs[2], "depthwise": macs[1], "fully_connected": 0}
    assert f["tpu_ops"] == 3 and f["cpu_macs"] == 0 and f["streamed_bytes"] == 0
    assert f["io_bytes"] == 12 * 12 * 4 + 10 * 10 * 4

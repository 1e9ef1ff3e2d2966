"""Each quantize mode converts a tiny model with the real converter and runs on ai-edge-litert."""

import numpy as np
import pytest

from toolchain.checks.litert import LiteRT
from toolchain.checks.metrics import compare
from toolchain.convert import ConvertPlan, convert
from toolchain.errors import ConversionError

pytestmark = pytest.mark.tf

CASES = [
    # mode, io_type, expected input dtype, minimum cosine to the Keras outputs
    ("float32", "float32", "float32", 0.99999),
    ("dynamic", "float32", "float32", 0.999),
    ("float16", "float32", "float32", 0.9999),
    ("int8", "int8", "int8", 0.99),
    ("int8", "uint8", "uint8", 0.99),
    ("int8", "float32", "float32", 0.99),
    ("int16x8", "int16", "int16", 0.999),
    ("int16x8", "float32", "float32", 0.999),
]


@pytest.mark.parametrize("model_name", ["tiny_dense", "tiny_conv"])
@pytest.mark.parametrize("mode,io,dtype,min_cos", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_mode_runs_on_litert(request, model_name, mode, io, dtype, min_cos):
    model = request.getfixturevalue(model_name)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (64, *model.input_shape[1:])).astype(np.float32)
    blob = convert(model, ConvertPlan(mode=mode, io_type=io, batch=1), calibration=x[:32])
    rt = LiteRT(blob)
    assert rt.io()["input"]["dtype"] == dtype
    ops = rt.ops()
    if mode in ("int8", "int16x8"):  # float I/O is converted at the graph's edges, uint8 re-quantized, int I/O not
        edges = {op for op in ("QUANTIZE", "DEQUANTIZE") if op in ops}
        want = {"float32": {"QUANTIZE", "DEQUANTIZE"}, "uint8": {"QUANTIZE"}}.get(io, set())
        assert edges == want, ops
    if mode == "dynamic" and model_name == "tiny_conv":
        # the converter leaves weights under 1024 elements in float; the 2880-weight Dense is quantized
        assert any(t["dtype"] == np.int8 and len(t["shape"]) == 2 for t in rt.interp.get_tensor_details())
    ref = model.predict(x, verbose=0)
    m = compare([ref], rt.predict(x), np.argmax(ref, -1))
    assert m.cosine >= min_cos, m
    assert m.top1_agreement >= 0.9


def test_float16_halves_the_weights(tiny_conv):
    f32 = convert(tiny_conv, ConvertPlan("float32"))
    f16 = convert(tiny_conv, ConvertPlan("float16"))
    assert len(f16) < len(f32)


def test_per_channel_off_gives_one_scale(tiny_conv):
    x = np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 1)).astype(np.float32)

    def weight_scales(per_channel):
        rt = LiteRT(convert(tiny_conv, ConvertPlan("int8", "int8", per_channel=per_channel, batch=1), x))
        conv_w = [
            t
            for t in rt.interp.get_tensor_details()
            if len(t["shape"]) == 4 and t["dtype"] == np.int8 and t["shape"][0] == 8
        ]
        return len(conv_w[0]["quantization_parameters"]["scales"])

    assert weight_scales(True) == 8
    assert weight_scales(False) == 1


def test_impossible_io_type_is_refused(tiny_dense):
    with pytest.raises(ConversionError, match="'uint8' is not possible with mode 'float16'") as exc:
        convert(tiny_dense, ConvertPlan("float16", io_type="uint8"))
    assert exc.value.exit_code == 8


def test_int8_without_calibration_is_refused(tiny_dense):
    with pytest.raises(ConversionError, match="needs calibration samples"):
        convert(tiny_dense, ConvertPlan("int8", io_type="int8"), calibration=None)

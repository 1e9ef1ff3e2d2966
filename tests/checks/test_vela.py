"""Vela compiles int8 models for Ethos-U; the report's numbers are Vela's own CSV's."""

import csv

import pytest

from tests.conftest import int8_model
from toolchain.checks import vela
from toolchain.config.target import Vela
from toolchain.errors import CompatibilityError

pytestmark = pytest.mark.tf

U55 = Vela(accelerator_config="ethos-u55-128", system_config="Ethos_U55_High_End_Embedded", memory_mode="Shared_Sram")


def test_report_equals_vela_csv(tiny_conv_int8, tmp_path):
    npu = vela.compile(tiny_conv_int8, U55, tmp_path)
    with open(tmp_path / "tiny_conv_int8_summary_Ethos_U55_High_End_Embedded.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert npu["inference_ms"] == pytest.approx(float(row["inference_time"]) * 1e3)
    assert npu["sram_bytes"] == round(float(row["sram_memory_used"]) * 1024)
    assert npu["flash_bytes"] == round(float(row["off_chip_flash_memory_used"]) * 1024)
    assert npu["cycles"] == int(float(row["cycles_total"]))
    assert npu["accelerator"] == "Ethos_U55_128"
    assert npu["npu_ops"] > 0 and npu["cpu_ops"] == 0
    assert (tmp_path / "tiny_conv_int8_vela.tflite").stat().st_size > 0


def test_cpu_fallback_has_a_reason(keras, tmp_path):
    import tensorflow as tf

    model = keras.Sequential(
        [
            keras.Input((8, 8, 4)),
            keras.layers.Conv2D(8, 1),
            keras.layers.Lambda(lambda x: tf.nn.depth_to_space(x, 2)),
            keras.layers.Conv2D(4, 3),
        ]
    )
    path = tmp_path / "d2s.tflite"
    int8_model(model, path)
    npu = vela.compile(path, U55, tmp_path / "out")
    assert npu["cpu_ops"] >= 1
    assert any(f["op"] == "DEPTH_TO_SPACE" and f["reason"] for f in npu["cpu_fallbacks"]), npu["cpu_fallbacks"]


def test_bad_memory_mode_is_a_compatibility_error(tiny_conv_int8, tmp_path):
    bad = U55.model_copy(update={"memory_mode": "Dedicated_Sram"})
    with pytest.raises(CompatibilityError, match="vela refused the target's configuration") as exc:
        vela.compile(tiny_conv_int8, bad, tmp_path)
    assert exc.value.exit_code == 9

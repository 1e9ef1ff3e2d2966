"""``toolchain inspect`` on any .tflite, including one the toolchain did not build."""

import json
from importlib.util import find_spec
from pathlib import Path

import pytest

# tflite-micro's sample model, found without importing the package (the fast tier must not load it)
SINE = Path(find_spec("tflite_micro").origin).parent / "python" / "tflite_micro" / "sine_float.tflite"


def test_inspect_sample_model(run_cli):
    code, out, _ = run_cli("inspect", SINE)
    assert code == 0
    assert "FULLY_CONNECTED" in out and "serving_default_dense_input:0" in out and "float32" in out
    code, out, _ = run_cli("inspect", SINE, "--json")
    info = json.loads(out)
    assert info["ops"] == {"FULLY_CONNECTED": 3}
    assert info["inputs"][0]["shape"] == [-1, 1] and info["inputs"][0]["dtype"] == "float32"
    assert info["size_bytes"] == SINE.stat().st_size == sum(info["size_breakdown"].values())
    assert info["size_breakdown"]["weights"] == 4 * (16 + 16 * 16 + 16 + 16 + 16 + 1)


@pytest.mark.tf
def test_inspect_int8_quantization(tiny_conv_int8, run_cli):
    code, out, _ = run_cli("inspect", tiny_conv_int8, "--json")
    info = json.loads(out)
    conv_w = next(t for t in info["tensors"] if t["shape"] == [8, 3, 3, 1])
    assert conv_w["quantization"]["per_channel_axis"] == 0 and conv_w["quantization"]["channels"] == 8
    assert info["inputs"][0]["dtype"] == "int8" and "scale" in info["inputs"][0]["quantization"]
    assert info["macs"] == 6 * 6 * 8 * 9 + 288 * 10


def test_inspect_rejects_other_files(tmp_path, run_cli):
    f = tmp_path / "x.tflite"
    f.write_bytes(b"\0" * 64)
    code, _, err = run_cli("inspect", f)
    assert code == 5 and "not a TFLite flatbuffer" in err

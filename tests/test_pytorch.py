"""PyTorch models (``.pt2``): converted by litert-torch, quantized by the toolchain, validated on the real runtimes;
the refusals a user meets. A tiny CNN built here (conv, batch norm, ReLU, pool, linear), NCHW as PyTorch has it."""

import json
import sys

import pytest

from tests.conftest import write_recipe

pytestmark = pytest.mark.tf
torch = pytest.importorskip("torch", reason="the torch extra: pip install -e '.[torch]'")


class TinyCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc(torch.flatten(x, 1))


class TinyEncoder(torch.nn.Module):
    """One ``nn.TransformerEncoderLayer`` (2 heads, LayerNorm, ReLU feed-forward) over 8 tokens of 8 features."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(8, 16)
        self.pos = torch.nn.Parameter(torch.randn(1, 8, 16) * 0.02)
        self.block = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.block(self.embed(x) + self.pos).mean(1))


MAKE = """
import sys
import numpy as np, torch
sys.path.insert(0, sys.argv[2])
from tests.test_pytorch import TinyCNN
d = sys.argv[1]
torch.manual_seed(0)
net = TinyCNN().eval()
with torch.no_grad():
    net.bn.running_mean.uniform_(-0.2, 0.2)
    net.bn.running_var.uniform_(0.5, 2.0)
torch.export.save(torch.export.export(net, (torch.randn(1, 3, 8, 8),)), f"{d}/net.pt2")
rng = np.random.default_rng(0)
x = rng.normal(size=(300, 3, 8, 8)).astype(np.float32)
with torch.no_grad():
    y = net(torch.from_numpy(x)).argmax(1).numpy()  # labels the net gets right: top-1 means something
np.savez(f"{d}/nchw.npz", x=x, y=y)
np.savez(f"{d}/nhwc.npz", x=x.transpose(0, 2, 3, 1), y=y)
from tests.test_pytorch import TinyEncoder
enc = TinyEncoder().eval()
torch.export.save(torch.export.export(enc, (torch.randn(1, 8, 8),)), f"{d}/enc.pt2")
x = rng.normal(size=(300, 8, 8)).astype(np.float32)
with torch.no_grad():
    np.savez(f"{d}/tokens.npz", x=x, y=enc(torch.from_numpy(x)).argmax(1).numpy())
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Written by a child process: torch.export in a process that has imported TensorFlow can crash it."""
    import subprocess

    from tests.conftest import REPO

    d = tmp_path_factory.mktemp("pt2")
    subprocess.run([sys.executable, "-c", MAKE, str(d), str(REPO)], check=True, capture_output=True)
    (d / "junk.pt2").write_bytes(b"PK\x03\x04 not a program")
    return d


def recipe(d, model: str = "net.pt2", data: str = "nchw.npz", extra: str = "", targets: str = "[phone-cpu]"):
    return write_recipe(
        d,
        f"""
        schema_version: 1
        name: tnet
        model: {{file: {model}, classes: 10}}
        data: {{npz: {data}}}
        {extra}
        targets: {targets}
        acceptance: {{max_accuracy_drop: 5}}
        """,
    )


def test_pt2_builds_float_and_int8_on_phone_mcu_and_npu(files, run_cli, tmp_path):
    """The float32 artifact matches the PyTorch program (its own outputs are the reference); the int8 ones are
    calibrated by the toolchain; images are channels last with no TRANSPOSE but the flatten's."""
    code, out, err = run_cli(
        "build",
        recipe(files, extra="quantize: {mode: float32}"),
        "--out",
        tmp_path / "f",
        "--json",
    )
    assert code == 0, err
    (r,) = json.loads(out)["results"]
    assert r["mode"] == "float32" and r["io"]["input"]["shape"] == [1, 8, 8, 3], r["io"]
    assert r["metrics"]["cosine"] > 0.9999 and r["metrics"]["top1"] == r["metrics"]["reference_top1"] == 1.0
    assert r["ops"].get("TRANSPOSE", 0) <= 1 and r["ops"]["CONV_2D"] == 1, r["ops"]
    code, out, err = run_cli(
        "build",
        recipe(files, extra="quantize: {calibration: percentile}", targets="[phone-cpu, cortex-m7, ethos-u55-128]"),
        "--out",
        tmp_path / "q",
        "--json",
    )
    assert code == 0, err
    results = {r["target"]: r for r in json.loads(out)["results"]}
    for name, r in results.items():
        assert r["mode"] == "int8" and r["quantization"]["route"] == "flatbuffer", name
        assert r["metrics"]["top1_agreement"] >= 0.9 and r["metrics"]["snr_db"] > 15, (name, r["metrics"])
    assert results["cortex-m7"]["io"]["input"]["dtype"] == "int8"
    acc = results["ethos-u55-128"]["accelerator"]
    assert acc["ops_on"] >= acc["ops_total"] - 1, acc  # at most the flatten's TRANSPOSE on the CPU


def test_a_pytorch_transformer_builds_int8_on_phone_mcu_and_u85(files, run_cli, tmp_path):
    """nn.TransformerEncoderLayer through litert-torch: attention (BATCH_MATMUL, SOFTMAX) and the LayerNorm chain
    (MEAN, SQUARED_DIFFERENCE, RSQRT) calibrated by the toolchain; tflite-micro runs it, Vela keeps every op of it
    on an Ethos-U85."""
    targets = "[phone-cpu, cortex-m7, ethos-u85-256]"
    code, out, err = run_cli(
        "build", recipe(files, "enc.pt2", "tokens.npz", targets=targets), "--out", tmp_path / "b", "--json"
    )
    assert code == 0, err
    results = {r["target"]: r for r in json.loads(out)["results"]}
    for name, r in results.items():
        assert {"BATCH_MATMUL", "SOFTMAX", "RSQRT", "SQUARED_DIFFERENCE"} <= set(r["ops"]), (name, r["ops"])
        assert r["mode"] == "int8" and r["metrics"]["top1_agreement"] >= 0.9, (name, r["metrics"])
    acc = results["ethos-u85-256"]["accelerator"]
    assert acc["ops_on"] == acc["ops_total"] > 50, acc


@pytest.mark.parametrize(
    ("model", "data", "extra", "code", "message"),
    [
        ("junk.pt2", "nchw.npz", "", 5, "model.file: junk.pt2 is not a PyTorch ExportedProgram"),
        ("net.pt2", "nhwc.npz", "", 6, "samples of shape (8, 8, 3) are channels last (NHWC); the model takes NCHW"),
        ("net.pt2", "nchw.npz", "train: {epochs: 1}", 3, "a PyTorch (.pt2) model is used as trained"),
        ("net.pt2", "nchw.npz", "quantize: {mode: int16x8}", 9, "quantize.mode: 'int16x8' is made by the TFLite"),
    ],
)
def test_bad_pytorch_input_is_one_line_with_its_exit_code(files, run_cli, tmp_path, model, data, extra, code, message):
    rc, out, err = run_cli("build", recipe(files, model, data, extra), "--out", tmp_path / "b")
    assert rc == code and message in err, err
    assert "Traceback" not in err and not (tmp_path / "b" / "tnet" / "phone-cpu").exists()


def test_channels_last_data_is_taken_with_data_layout_nhwc(files, run_cli, tmp_path):
    body = recipe(files, data="nhwc.npz", extra="quantize: {mode: float32}")
    body.write_text(body.read_text().replace("data: {npz: nhwc.npz}", "data: {npz: nhwc.npz, layout: nhwc}"))
    rc, out, err = run_cli("build", body, "--out", tmp_path / "b", "--json")
    assert rc == 0, err
    (r,) = json.loads(out)["results"]
    assert r["metrics"]["cosine"] > 0.9999 and r["metrics"]["top1"] == 1.0, r["metrics"]


def test_a_missing_extra_names_the_pip_install(files, run_cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # as if the extra were not installed
    rc, _, err = run_cli("build", recipe(files), "--out", tmp_path / "b")
    assert rc == 21 and "needs litert_torch, not installed: pip install 'toolchain[torch]'" in err, err

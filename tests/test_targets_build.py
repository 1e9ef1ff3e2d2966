"""One tiny recipe built for every kind of target, each validated on its own runtime."""

import json

import pytest

from toolchain.checks import tflm


def by_target(record, name):
    return record.result(name)


@pytest.mark.tf
def test_each_target_gets_its_quantization(all_targets):
    record, _ = all_targets
    plans = {r.target: (r.mode, r.io_type, r.batch, r.runtime) for r in record.results}
    assert plans == {
        "phone-cpu": ("int8", "float32", None, "ai-edge-litert"),
        "phone-gpu": ("float16", "float32", 1, "ai-edge-litert"),
        "cortex-m7": ("int8", "int8", 1, "tflite-micro"),
        "ethos-u55-128": ("int8", "int8", 1, "tflite-micro"),
        "edgetpu": ("int8", "uint8", 1, "ai-edge-litert"),
    }
    assert record.passed, [r.failures for r in record.results]


@pytest.mark.tf
def test_mcu_memory_numerics_and_sources(all_targets):
    record, out = all_targets
    r = by_target(record, "cortex-m7")
    mem, details = r.memory, r.memory.details
    assert mem.arena_bytes >= 1000 and details["arena_recorded_bytes"] > 0
    assert details["arena_with_margin_bytes"] >= mem.arena_bytes * 1.1
    assert mem.ram_bytes == details["arena_with_margin_bytes"] + details["io_bytes"]
    assert mem.flash_bytes == r.size_bytes
    assert r.latency.kind == "estimate" and r.latency.source.startswith("estimate:") and r.latency.ms > 0
    assert r.runtime == "tflite-micro" and r.metrics is r.sections["tflm"].metrics
    assert r.sections["tflm"].details["vs_litert"]["top1_agreement"] >= 0.99
    assert r.reload.runtime == "tflite-micro" and r.reload.arena_bytes == details["arena_with_margin_bytes"]
    artifact = out / "tiny" / "cortex-m7" / "tiny_int8.tflite"
    assert tflm.probe(artifact, mem.arena_bytes).ok
    assert not tflm.probe(artifact, int(mem.arena_bytes * 0.9)).ok
    header = (out / "tiny" / "cortex-m7" / "model_data.h").read_text()
    assert f"kTensorArenaSize = {details['arena_with_margin_bytes']};" in header
    source = (out / "tiny" / "cortex-m7" / "model_data.cc").read_text()
    assert "alignas(16)" in source and f"g_model_data_len = {r.size_bytes};" in source


@pytest.mark.tf
def test_npu_section_from_vela(all_targets):
    record, out = all_targets
    r = by_target(record, "ethos-u55-128")
    npu = r.sections["vela"].details
    for key in ("inference_ms", "sram_bytes", "flash_bytes", "npu_ops", "cpu_ops"):
        assert key in npu
    assert npu["npu_ops"] > 0 and r.accelerator.ops_on == npu["npu_ops"]
    assert r.latency.ms == npu["inference_ms"] and r.memory.ram_bytes == npu["sram_bytes"]
    assert r.runtime == "tflite-micro" and r.reload.runtime == "tflite-micro"
    assert (out / "tiny" / "ethos-u55-128" / "tiny_int8_vela.tflite").exists()
    assert (out / "tiny" / "ethos-u55-128" / "model_data.cc").exists()


@pytest.mark.tf
def test_tpu_and_gpu_sections(all_targets):
    record, _ = all_targets
    tpu = by_target(record, "edgetpu").sections["edgetpu"].details
    assert tpu["ops_on_tpu"] >= 3 and tpu["ops_on_cpu"] == 0 and tpu["cached_param_bytes"] > 0
    assert by_target(record, "edgetpu").latency.ms == tpu["estimate_ms"]["total"]
    gpu = by_target(record, "phone-gpu").sections["gpu"].details
    assert gpu["compatible"] is True and gpu["incompatible_ops"] == []


def custom_target(targets_dir, name, **memory):
    text = (targets_dir / "cortex-m7.yaml").read_text().replace("name: cortex-m7", f"name: {name}")
    extra = "".join(f"  {k}: {v}\n" for k, v in memory.items())
    (targets_dir / f"{name}.yaml").write_text(text.replace("memory:\n", "memory:\n" + extra))


@pytest.mark.tf
def test_tflm_crash_is_a_reported_failure(tiny_recipe, tmp_path, targets_dir, run_cli):
    """A firmware arena of 256 bytes makes tflite-micro segfault: the build reports it and exits 10."""
    custom_target(targets_dir, "tiny-arena-mcu", arena_kb=0.25)
    code, out, err = run_cli(
        "build", tiny_recipe(targets="[tiny-arena-mcu]", train="train: {epochs: 1}"), "--out", tmp_path / "b", "--json"
    )
    assert code == 10
    r = json.loads(out)["results"][0]
    assert r["metrics"] is None and not r["passed"]
    assert r["failures"][0]["kind"] == "runtime"
    assert r["failures"][0]["message"].startswith(
        "tflite-micro: killed by SIGSEGV during allocate (arena 256 bytes); last op 0 (CONV_2D)"
    )
    # the headline latency is the MCU estimate, never the host LiteRT figure
    assert r["latency"]["kind"] == "estimate" and r["runtime"] == "tflite-micro"
    assert "error: tflite-micro: killed by SIGSEGV" in err


@pytest.mark.tf
def test_does_not_fit(tiny_recipe, tmp_path, targets_dir, run_cli):
    custom_target(targets_dir, "one-kb-mcu")
    (targets_dir / "one-kb-mcu.yaml").write_text(
        (targets_dir / "one-kb-mcu.yaml").read_text().replace("ram_kb: 512", "ram_kb: 1")
    )
    code, out, err = run_cli(
        "build", tiny_recipe(targets="[one-kb-mcu]", train="train: {epochs: 1}"), "--out", tmp_path / "b", "--json"
    )
    assert code == 9
    r = json.loads(out)["results"][0]
    need = r["memory"]["ram_bytes"] / 1024
    assert f"does not fit one-kb-mcu: needs {need:.0f} KB RAM, has 1 KB" in [f["message"] for f in r["failures"]]
    assert f"error: does not fit one-kb-mcu: needs {need:.0f} KB RAM, has 1 KB" in err


@pytest.mark.tf
def test_float16_on_a_microcontroller_is_refused(tiny_recipe, tmp_path, run_cli):
    code, out, err = run_cli(
        "build", tiny_recipe(quantize="mode: float16", targets="[cortex-m4]"), "--out", tmp_path / "b"
    )
    assert code == 9 and out == ""
    assert "quantize.mode: cortex-m4 cannot run 'float16' (it accepts int8)" in err


def test_targets_list_shows_every_kind(run_cli):
    from toolchain.config import list_targets, load_target

    names = ("phone-cpu", "phone-gpu", "cortex-m4", "cortex-m7", "ethos-u55-128", "ethos-u65-256", "ethos-u85-256")
    names += ("edgetpu",)
    code, out, _ = run_cli("targets", "list", "--wide")
    shown = {line.split()[0]: line.split()[1] for line in out.splitlines()}
    assert code == 0 and set(shown) == set(names) == set(list_targets())  # a new profile must be added here
    assert {shown[n] for n in names} == {"phone", "mcu", "npu", "tpu"} == {load_target(n).kind for n in names}

"""Recipe and target validation: errors name file, line and field, with the right class and exit code."""

import pytest

from tests.conftest import REPO, write_recipe
from toolchain.config import list_targets, load_recipe, load_target
from toolchain.errors import CompatibilityError, ConfigError, UnknownTargetError

GOOD = """
schema_version: 1
name: ok
model:
  application: MobileNetV2
  alpha: 0.35
  input_shape: [96, 96, 3]
data:
  builtin: digits
quantize:
  mode: int8
targets: [phone-cpu]
"""


def test_shipped_recipe_and_targets_load():
    r = load_recipe(REPO / "recipes" / "mobilenet.yaml")
    assert r.model.application == "MobileNetV2" and r.train.batchnorm_momentum == 0.9
    assert "phone-cpu" in list_targets()
    assert load_target("phone-cpu").checks == ["litert"]


def test_bad_mode_names_file_line_and_field(tmp_path):
    path = write_recipe(tmp_path, GOOD.replace("mode: int8", "mode: int4"))
    with pytest.raises(ConfigError) as exc:
        load_recipe(path)
    assert str(exc.value).startswith(f"{path}:10: quantize.mode: 'int4' is not one of ")
    assert exc.value.exit_code == 3


def test_unknown_key(tmp_path):
    path = write_recipe(tmp_path, GOOD.replace("  alpha: 0.35", "  alpha: 0.35\n  depth: 3"))
    with pytest.raises(ConfigError, match=r":6: model.depth: unknown key$"):
        load_recipe(path)


def test_wrong_type(tmp_path):
    path = write_recipe(tmp_path, GOOD.replace("alpha: 0.35", "alpha: wide"))
    with pytest.raises(ConfigError, match=r":5: model.alpha: .*'wide'"):
        load_recipe(path)


def test_malformed_yaml(tmp_path):
    path = write_recipe(tmp_path, GOOD.replace("targets: [phone-cpu]", "targets: [phone-cpu"))
    with pytest.raises(ConfigError, match=r"malformed YAML"):
        load_recipe(path)


def test_unknown_target(tmp_path):
    path = write_recipe(tmp_path, GOOD.replace("[phone-cpu]", "[phone-cpu, toaster]"))
    with pytest.raises(UnknownTargetError, match=r":11: targets.1: unknown target 'toaster'") as exc:
        load_recipe(path)
    assert exc.value.exit_code == 4


def test_missing_section_and_two_sources(tmp_path):
    with pytest.raises(ConfigError, match=r"data: required field is missing"):
        load_recipe(write_recipe(tmp_path, GOOD.replace("data:\n  builtin: digits\n", "")))
    with pytest.raises(ConfigError, match=r"data: .*exactly one of"):
        load_recipe(write_recipe(tmp_path, GOOD.replace("builtin: digits", "builtin: digits\n  npz: x.npz")))


def test_relative_paths_resolve_against_the_recipe(tmp_path):
    path = write_recipe(tmp_path, GOOD.replace("builtin: digits", "npz: data/x.npz"))
    assert load_recipe(path).data.npz == tmp_path / "data" / "x.npz"


def test_plan_defaults_to_target_and_refuses_what_target_cannot_run(tmp_path, monkeypatch):
    from toolchain.stages.plan import resolve_plan

    r = load_recipe(write_recipe(tmp_path, GOOD.replace("  mode: int8\n", "  per_channel: true\n")))
    assert resolve_plan(r, load_target("phone-cpu")).mode == "int8"
    tdir = tmp_path / "targets"
    tdir.mkdir()
    (tdir / "mcu.yaml").write_text(
        (REPO / "targets" / "phone-cpu.yaml")
        .read_text()
        .replace("name: phone-cpu", "name: mcu")
        .replace("modes: [float32, dynamic, float16, int8, int16x8]", "modes: [int8]")
    )
    monkeypatch.setattr("toolchain.config.loader.TARGETS_DIR", tdir)
    r16 = load_recipe(
        write_recipe(tmp_path, GOOD.replace("mode: int8", "mode: float16").replace("[phone-cpu]", "[mcu]"))
    )
    with pytest.raises(
        CompatibilityError, match=r":10: quantize.mode: mcu cannot run 'float16' \(it accepts int8\)"
    ) as exc:
        resolve_plan(r16, load_target("mcu"))
    assert exc.value.exit_code == 9


@pytest.mark.parametrize("path", sorted((REPO / "recipes").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_is_valid(path):
    from toolchain.stages.plan import resolve_plan

    r = load_recipe(path)
    want = r.quantize.mode or "int8"  # charlm.yaml ships int16x8 (docs/benchmarks.md says why)
    assert all(resolve_plan(r, load_target(t)).mode == want for t in r.targets)


@pytest.mark.parametrize("name", list_targets())
def test_every_shipped_target_is_valid(name):
    t = load_target(name)
    assert t.numerics.default_mode in t.numerics.modes
    assert ("vela" in t.checks) == (t.vela is not None)
    assert ("edgetpu" in t.checks) == (t.edgetpu is not None)
    assert "tflm" not in t.checks or (t.mcu is not None and t.clock_mhz)
    from toolchain import checks

    assert all(checks.get(name).name == name for name in t.checks)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("  alpha: 0.35", "  alpha: 0.35\n  clases: 3"), ":6: model.clases: unknown key (did you mean 'classes'?)"),
        (
            ("quantize:", "quantize:\n  per_chanel: true"),
            ":10: quantize.per_chanel: unknown key (did you mean 'per_channel'?)",
        ),
        (("mode: int8", "mode: int8\ntarget: [phone-cpu]"), ":11: target: unknown key (did you mean 'targets'?)"),
        (  # a compress step: the keys of the step its tag names
            ("quantize:", "compress:\n  - {step: low_rank, enrgy: 0.5}\nquantize:"),
            ":10: compress.0.low_rank.enrgy: unknown key (did you mean 'energy'?)",
        ),
        (
            ("  builtin: digits", "  builtin: digits\n  split: {evl: 0.2}"),
            ":9: data.split.evl: unknown key (did you mean 'eval'?)",
        ),
        (("  alpha: 0.35", "  alpha: 0.35\n  zzz: 3"), ":6: model.zzz: unknown key"),  # nothing close: no guess
    ],
)
def test_an_unknown_key_names_the_closest_known_one(tmp_path, change, message):
    path = write_recipe(tmp_path, GOOD.replace(*change))
    with pytest.raises(ConfigError) as exc:
        load_recipe(path)
    assert str(exc.value) == f"{path}{message}"


def test_an_unknown_key_of_a_target_profile_names_the_closest_known_one(tmp_path, monkeypatch):
    from toolchain.config import loader

    text = (REPO / "targets" / "cortex-m7.yaml").read_text().replace("batch: 1", "batch: 1\nthreds: 2")
    (tmp_path / "cortex-m7.yaml").write_text(text)
    monkeypatch.setattr(loader, "TARGETS_DIR", tmp_path)
    with pytest.raises(ConfigError, match=r"cortex-m7.yaml:8: threds: unknown key \(did you mean 'threads'\?\)$"):
        load_target("cortex-m7")

"""Checks are plug-ins: a check defined here, registered through the public registry, runs in a real build;
a check that raises (or Vela on a truncated artifact) fails only its own target."""

import dataclasses
import json

import pytest

from toolchain import checks
from toolchain.checks import Check, CheckContext, register
from toolchain.checks.vela import VelaCheck
from toolchain.errors import ConfigError
from toolchain.record import Accelerator, Section


@register
class HalfOpsCheck(Check):
    """A made-up accelerator that takes every other op."""

    name = "test-half-ops"
    provides = ("accelerator",)

    def run(self, ctx: CheckContext) -> Section:
        n = len(ctx.model.ops)
        return self.section(
            accelerator=Accelerator(name="test accelerator", ops_on=n // 2, ops_total=n),
            details={"first_op": ctx.model.ops[0].name, "samples_seen": len(ctx.x_eval)},
        )


@register
class ExplodingCheck(Check):
    name = "test-explodes"

    def run(self, ctx: CheckContext) -> Section:
        raise ValueError("the accelerator driver is on fire")


@register
class TruncatedVela(VelaCheck):
    """Vela handed half of the artifact."""

    name = "test-truncated-vela"

    def run(self, ctx: CheckContext) -> Section:
        cut = ctx.workdir / "truncated.tflite"
        cut.write_bytes(ctx.artifact[: len(ctx.artifact) // 2])
        return super().run(dataclasses.replace(ctx, artifact_path=cut))


def profile(targets_dir, name, checks_line, extra=""):
    text = (targets_dir / "ethos-u55-128.yaml").read_text().replace("name: ethos-u55-128", f"name: {name}")
    text = text.replace("checks: [litert, tflm-numerics, vela]", f"checks: {checks_line}")
    (targets_dir / f"{name}.yaml").write_text(text + extra)


def test_registry_knows_builtins_and_refuses_unknown_names():
    assert {"litert", "tflm", "tflm-numerics", "vela", "edgetpu", "gpu", "test-half-ops"} <= set(checks.names())
    assert checks.get("vela").name == "vela"
    with pytest.raises(ConfigError, match="unknown check 'nope'"):
        checks.get("nope")
    with pytest.raises(TypeError):
        register(type("Nameless", (Check,), {}))


@pytest.mark.tf
def test_a_registered_check_runs_in_a_build(tiny_recipe, tmp_path, targets_dir, run_cli):
    profile(targets_dir, "half-npu", "[litert, test-half-ops]")
    out = tmp_path / "b"
    code, stdout, err = run_cli(
        "build", tiny_recipe(targets="[half-npu]", train="train: {epochs: 1}"), "--out", out, "--json"
    )
    assert code == 0, err
    r = json.loads(stdout)["results"][0]
    section = r["sections"]["test-half-ops"]
    n = sum(r["ops"].values())
    assert section["details"]["first_op"] == "CONV_2D" and section["details"]["samples_seen"] > 0
    assert r["accelerator"] == {"name": "test accelerator", "ops_on": n // 2, "ops_total": n}
    assert json.loads((out / "tiny" / "build.json").read_text())["results"][0]["sections"]["test-half-ops"] == section
    md = (out / "tiny" / "half-npu" / "report.md").read_text()
    assert "## test-half-ops" in md and "| first_op | CONV_2D |" in md and f"{n // 2}/{n}" in md


@pytest.mark.tf
def test_unknown_check_in_a_profile_is_refused_before_any_work(tiny_recipe, tmp_path, targets_dir, run_cli):
    profile(targets_dir, "odd-npu", "[litert, warp-drive]")
    code, _, err = run_cli("build", tiny_recipe(targets="[odd-npu]"), "--out", tmp_path / "b")
    assert code == 3 and "unknown check 'warp-drive'" in err
    assert not (tmp_path / "b").exists()


@pytest.mark.tf
def test_a_check_that_raises_fails_only_its_target(tiny_recipe, tmp_path, targets_dir, run_cli):
    profile(targets_dir, "broken-npu", "[litert, test-explodes]")
    profile(targets_dir, "cut-npu", "[litert, test-truncated-vela]")
    out = tmp_path / "b"
    code, stdout, err = run_cli(
        "build",
        tiny_recipe(targets="[phone-cpu, broken-npu, cut-npu]", train="train: {epochs: 1}"),
        "--out",
        out,
        "--json",
    )
    assert code == 10
    results = {r["target"]: r for r in json.loads(stdout)["results"]}
    assert results["phone-cpu"]["passed"]
    boom = results["broken-npu"]["failures"]
    assert boom == [
        {
            "kind": "runtime",
            "check": "test-explodes",
            "message": "test-explodes: ValueError: the accelerator driver is on fire",
        }
    ]
    cut = results["cut-npu"]["failures"]
    assert (
        len(cut) == 1
        and cut[0]["kind"] == "runtime"
        and cut[0]["message"].startswith(
            (
                "test-truncated-vela: vela failed on truncated.tflite",
                "test-truncated-vela: vela crashed on truncated.tflite",
            )
        )
    )
    # LiteRT's section still stands: the same eval samples as phone-cpu, run on LiteRT
    cut_metrics = results["cut-npu"]["metrics"]
    assert results["cut-npu"]["runtime"] == "ai-edge-litert"
    assert cut_metrics["samples"] == results["phone-cpu"]["metrics"]["samples"] > 0 and cut_metrics["top1"] > 0.1
    record = json.loads((out / "tiny" / "build.json").read_text())
    assert [r["passed"] for r in record["results"]] == [True, False, False]
    assert "error: test-explodes: ValueError: the accelerator driver is on fire (+1 more, see report.md)" in err
    assert (out / "tiny" / "broken-npu" / "report.md").read_text().count("FAILED") >= 1

"""A NaN never passes: divergent training, and an artifact whose outputs are not finite, fail with exit code 17."""

import json

import numpy as np
import pytest

from toolchain.checks import Check, register

pytestmark = pytest.mark.tf


def test_training_that_diverges_names_the_epoch(tiny_recipe, tmp_path, run_cli):
    recipe = tiny_recipe(train="train: {epochs: 3, learning_rate: 1.0e+38}")
    code, out, err = run_cli("build", recipe, "--out", tmp_path / "b")
    assert code == 17 and out == ""
    assert "error: training diverged at epoch 1: loss nan; lower train.learning_rate (now 1e+38)" in err


@register
class NanOutputs(Check):
    """A runtime whose outputs are NaN on some samples (as a broken kernel would give)."""

    name = "test-nan-outputs"
    provides = ("metrics",)

    def run(self, ctx):
        from toolchain.checks.metrics import compare

        out = [r.copy() for r in ctx.reference]
        out[0][5:7] = np.nan
        ctx.outputs[self.name] = out
        return self.section(runtime="nan-runtime", metrics=compare(ctx.reference, out, ctx.y_eval))


def test_non_finite_artifact_outputs_fail_the_target(tiny_recipe, tmp_path, targets_dir, run_cli):
    text = (targets_dir / "phone-cpu.yaml").read_text().replace("name: phone-cpu", "name: nan-phone")
    (targets_dir / "nan-phone.yaml").write_text(text.replace("[litert]", "[litert, test-nan-outputs]"))
    recipe = tiny_recipe(targets="[nan-phone]", train="train: {epochs: 1}", extra="acceptance: {min_cosine: 0.5}")
    code, out, err = run_cli("build", recipe, "--out", tmp_path / "b", "--json")
    assert code == 17
    r = json.loads(out)["results"][0]
    assert not r["passed"] and r["runtime"] == "nan-runtime"
    kinds = {(f["kind"], f["check"]) for f in r["failures"]}
    assert ("nonfinite", "test-nan-outputs") in kinds and ("gate", "min_cosine") in kinds  # NaN cosine fails its gate
    message = (
        "test-nan-outputs: the artifact's outputs on nan-runtime are NaN or infinite on 2 eval samples "
        "(the first is eval sample 5)"
    )
    assert message in err

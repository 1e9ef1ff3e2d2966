"""Relation-based, online and self-distillation on the tiny conv net: each relation term is zero when the student is
the teacher and positive otherwise, the online students' losses both fall, the auxiliary heads are absent from the
artifact, the compression report shows each term per epoch, and what cannot be distilled is one line, exit 15."""

from __future__ import annotations

import json

import numpy as np
import pytest

from toolchain.config.recipe import Distill, FineTune

pytestmark = pytest.mark.tf


def test_the_loss_terms_are_zero_on_equal_inputs_and_positive_otherwise():
    from toolchain.compress.distill import fsp, fsp_loss, rkd_angle, rkd_distance

    rng = np.random.default_rng(0)
    a = rng.normal(size=(16, 6, 6, 8)).astype(np.float32)
    b = rng.normal(size=(16, 6, 6, 8)).astype(np.float32)
    for term in (rkd_distance, rkd_angle):
        assert float(term(a, a)) == pytest.approx(0, abs=1e-6) and float(term(a, b)) > 1e-3
    assert float(rkd_distance(a, 3.0 * a)) == pytest.approx(0, abs=1e-5)  # distances are normalized: scale-free
    same = fsp(a, b)
    assert tuple(same.shape) == (16, 8, 8)
    assert float(fsp_loss(same, fsp(a, b))) == 0 and float(fsp_loss(fsp(a, a), same)) > 1e-3
    by_hand = np.einsum("nhwc,nhwd->ncd", a, b) / 36
    np.testing.assert_allclose(same.numpy(), by_hand, rtol=1e-5, atol=1e-5)


def _data(n=96, seed=0):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images[:n, :, :, None] / 16.0).astype(np.float32)
    return x, d.target[:n]


def test_a_student_equal_to_its_teacher_has_zero_relation_terms(tiny_conv):
    from toolchain.compress.common import Teacher, clone
    from toolchain.compress.distill import Plan, build_trainer, targets_for, teacher_layers

    x, y = _data()
    d = Distill(
        relations=[
            {"kind": "rkd_distance", "student": ["relu"]},
            {"kind": "rkd_angle", "student": ["flatten"]},
            {"kind": "fsp", "student": ["conv", "relu"]},
        ]
    )
    teacher = Teacher.of(tiny_conv, x, teacher_layers(d))
    for student, zero in ((clone(tiny_conv), True), (None, False)):
        if student is None:  # another student: its conv weights moved
            student = clone(tiny_conv)
            w = student.get_layer("conv").get_weights()
            student.get_layer("conv").set_weights([w[0] * -1.5, w[1]])
        plan = Plan(d, student, teacher, 10)
        trainer = build_trainer([student], plan)
        targets = {k: v[:32] for k, v in targets_for(plan, y, teacher).items()}
        terms = plan.terms(targets["labels"], trainer._outs(x[:32], training=False), targets)
        values = {k: float(v) for k, (_, v) in terms.items() if k.startswith(("rkd", "fsp"))}
        assert set(values) == {"rkd_distance_0", "rkd_angle_1", "fsp_2"}
        if zero:
            assert all(v == pytest.approx(0, abs=1e-6) for v in values.values()), values
        else:
            assert all(v > 1e-4 for v in values.values()), values


def test_two_online_students_learn_from_each_other_and_both_losses_fall(tiny_conv):
    from toolchain.compress.common import clone, finetune, strategy
    from toolchain.config.recipe import Strategy

    x, y = _data(400)
    student = clone(tiny_conv)
    spec = FineTune(epochs=4, learning_rate=3e-3, distill=Distill(mode="online", students=2))
    history = finetune(student, spec, x, y, None, strategy(Strategy()), "finetune")
    for s in ("hard", "hard_1", "mutual_0", "mutual_1"):
        assert f"loss_{s}" in history, history.keys()
    for s in ("hard", "hard_1"):
        first, last = history[f"loss_{s}"][0], history[f"loss_{s}"][-1]
        assert last < 0.8 * first, (s, history[f"loss_{s}"])  # both students learn
    assert history["terms"]["mutual_1"] == 0.5 and history["accuracy"][-1] > history["accuracy"][0]


def test_self_distillation_heads_are_absent_from_the_artifact_and_terms_are_reported(tiny_recipe, tmp_path, run_cli):
    compress = (
        "compress:\n  - {step: finetune, epochs: 2, learning_rate: 0.002, distill: {mode: self, heads: [relu]}}\n"
    )
    recipe = tiny_recipe(extra=compress, targets="[cortex-m7]")
    code, out, err = run_cli("build", recipe, "--build-dir", tmp_path / "b", "--json")
    assert code == 0, err[-2000:]
    record = json.loads(out)
    (step,) = record["compression"]
    h = step["history"]
    assert set(h) >= {"loss_total", "loss_hard", "loss_head_0", "accuracy"} and len(h["loss_head_0"]) == 2
    assert h["terms"] == {"hard": 1.0, "head_0": 1.0}
    ops = record["results"][0]["ops"]
    assert ops.get("FULLY_CONNECTED") == 1 and "MEAN" not in ops  # the model's own dense; no head, no pooling
    md = (tmp_path / "b" / "tiny" / "compression.md").read_text()
    assert "| epoch | total | hard | head_0 |" in md  # each term over training


@pytest.mark.parametrize(
    ("distill", "said"),
    [
        ("{relations: [{kind: rkd_distance, student: [nope]}]}", "the teacher has no layer 'nope'"),
        ("{mode: online, students: 1}", "students must be 2 or more"),
        ("{mode: self}", "name them in distill.heads"),
        ("{mode: online, relations: [{kind: fsp, student: [conv, relu]}]}", "they go with mode offline"),
    ],
)
def test_what_cannot_be_distilled_is_one_line_exit_15(distill, said, tiny_recipe, tmp_path, run_cli):
    compress = f"compress:\n  - {{step: finetune, epochs: 1, distill: {distill}}}\n"
    code, out, err = run_cli("build", tiny_recipe(extra=compress), "--build-dir", tmp_path / "b")
    assert (code, out) == (15, "") and said in err.splitlines()[-1] and "Traceback" not in err

"""Run a recipe's compression steps in order over the trained float model; each reports what it did."""

from __future__ import annotations

import logging
import time

from toolchain.compress import cluster, filters, lowrank, prune, qat, rewrite
from toolchain.compress.common import Teacher, clone, finetune, macs_and_params, sparsity, strategy, top1
from toolchain.compress.distill import check, teacher_layers
from toolchain.config.recipe import Recipe, step_label

log = logging.getLogger(__name__)


def run(model, recipe: Recipe, data, teacher) -> tuple[object, list[dict]]:
    """``teacher`` is the float model before compression (its outputs drive distillation)."""
    scope = strategy(recipe.strategy)
    teacher_train = None
    for s in recipe.compress:  # what a distillation cannot be, before any fine-tuning
        if s.distill:
            check(s.distill, step_label(s.model_dump()))
    if any(s.distill and s.distill.mode == "offline" for s in recipe.compress):
        layers = sorted({n for s in recipe.compress if s.distill for n in teacher_layers(s.distill)})
        teacher_train = Teacher.of(teacher, data.x_train, layers)
    reports = []
    for i, step in enumerate(recipe.compress):
        label = step_label(step.model_dump())
        log.info(
            "compress %d/%d: %s (%d fine-tune epochs%s)",
            i + 1,
            len(recipe.compress),
            label,
            step.epochs,
            ", distilled" if step.distill else "",
        )
        t0 = time.perf_counter()
        before = top1(model, data.x_eval, data.y_eval)
        if step.step == "qat":
            model, report = qat.run(model, step, data, teacher_train, scope)
        elif step.step == "low_rank":
            model, report = lowrank.run(model, step, data, teacher_train, scope)
        elif step.step == "finetune":
            with scope.scope():
                model = clone(model)
            report = {"history": finetune(model, step, data.x_train, data.y_train, teacher_train, scope, "finetune")}
        elif step.step == "rewrite":
            model, report = rewrite.run(model, step, data, teacher_train, scope)
        elif step.step == "cluster":
            model, report = cluster.run(model, step, data, teacher_train, scope)
        elif step.method == "l1_filter":
            model, report = filters.run(model, step, data, teacher_train, scope)
        else:
            model, report = prune.run(model, step, data, teacher_train, scope)
        after = top1(model, data.x_eval, data.y_eval)
        report = {
            "step": step.step,
            **step.model_dump(mode="json", exclude={"step"}),
            "top1_before": before,
            "top1_after": after,
            **macs_and_params(model),
            "seconds": round(time.perf_counter() - t0, 2),
            **report,
        }
        if "sparsity" not in report:
            report["sparsity"] = sparsity(model)
        log.info(
            "compress %s: top-1 %.4f -> %.4f, %s MACs, %s parameters, sparsity %.1f%%",
            label,
            before,
            after,
            f"{report['macs']:,}",
            f"{report['params']:,}",
            100 * report["sparsity"]["overall"],
        )
        reports.append(report)
    return model, reports

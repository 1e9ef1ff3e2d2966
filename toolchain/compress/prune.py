"""Weight pruning with tensorflow-model-optimization: low-magnitude (constant or polynomial schedule) and
2:4 structured sparsity. Zeros shrink the gzip'd artifact; the interpreter does not run them faster."""

from __future__ import annotations

import math

from toolchain.compress.common import clone, finetune, reestimate_batchnorm, sparsity
from toolchain.compress.qat import tfmot
from toolchain.config.recipe import PruneStep
from toolchain.errors import CompressionError


def run(model, step: PruneStep, data, teacher_train, scope) -> tuple[object, dict]:
    if step.epochs < 1:
        raise CompressionError(f"prune {step.method}: needs at least one fine-tune epoch to apply its masks")
    sp = tfmot().sparsity.keras
    steps_per_epoch = math.ceil(len(data.x_train) / step.batch_size)
    total = step.epochs * steps_per_epoch
    frequency = max(1, min(100, steps_per_epoch // 2))
    kwargs = {}
    if step.method == "2:4":
        schedule = sp.ConstantSparsity(0.5, begin_step=0, frequency=frequency)
        kwargs["sparsity_m_by_n"] = (2, 4)
    elif step.schedule == "constant":
        schedule = sp.ConstantSparsity(step.target_sparsity, begin_step=0, frequency=frequency)
    else:  # reach the target by 3/4 of the fine-tuning, then train at that sparsity
        schedule = sp.PolynomialDecay(
            0.0, step.target_sparsity, begin_step=0, end_step=max(1, int(total * 0.75)), frequency=frequency
        )
    with scope.scope():
        try:
            pruned = sp.prune_low_magnitude(clone(model), pruning_schedule=schedule, **kwargs)
        except ValueError as exc:
            raise CompressionError(f"prune {step.method}: {str(exc).splitlines()[0]}") from None
    # tfmot wraps every layer but prunes only those with prunable weights
    # (not depthwise kernels: its registry lists none)
    wrapped = [
        layer.layer.name
        for layer in pruned.submodules
        if type(layer).__name__ == "PruneLowMagnitude" and layer.prunable_weights
    ]
    history = finetune(
        pruned, step, data.x_train, data.y_train, teacher_train, scope, f"prune {step.method}", [sp.UpdatePruningStep()]
    )
    stripped = sp.strip_pruning(pruned)
    reestimate_batchnorm(stripped, data.x_train)
    report = {
        "sparsity": sparsity(stripped),
        "pruned_layers": len(wrapped),
        "pruned_layers_sparsity": sparsity(stripped, wrapped)["overall"],
        "history": history,
    }
    if step.method == "2:4":
        report["two_of_four"] = two_of_four_share(stripped)
    return stripped, report


def two_of_four_share(model) -> float:
    """Share of pruned groups of 4 consecutive input weights that hold at most 2 non-zeros."""
    import numpy as np

    from toolchain.compress.common import kernels

    ok = total = 0
    for w in kernels(model).values():
        if w.ndim == 4 and w.shape[-1] == 1:  # depthwise kernels: no input axis to group
            continue
        # groups of 4 run along the input-channel axis (the kernel's second-to-last)
        m = np.moveaxis(w, -2, -1).reshape(-1, w.shape[-2])
        n = (m.shape[1] // 4) * 4
        if n == 0 or not np.any(m == 0):
            continue
        groups = (m[:, :n] != 0).reshape(m.shape[0], -1, 4).sum(-1)
        ok += int(np.sum(groups <= 2))
        total += groups.size
    return ok / max(1, total)

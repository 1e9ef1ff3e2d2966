"""Acceptance gates from the recipe and budgets from the target, as (ok, message) checks."""

from __future__ import annotations

from toolchain.config.recipe import Acceptance
from toolchain.config.target import Target


def fit(target: Target, ram: int | None, flash: int | None) -> list[str]:
    """The target's memory budgets: one message per budget exceeded (bytes in, KB in the message)."""
    out = []
    for what, need, has in (("RAM", ram, target.memory.ram_kb), ("flash", flash, target.memory.flash_kb)):
        if need is not None and has is not None and need > has * 1024:
            out.append(f"does not fit {target.name}: needs {need / 1024:.0f} KB {what}, has {has:.0f} KB")
    return out


def check(acceptance: Acceptance, result: dict) -> list[str]:
    """The recipe's acceptance gates: one message per failed gate (empty when all pass)."""
    failures = []
    m, ref = result["metrics"], result["reference"]
    if m is not None:  # None: the runtime could not run the model (already a failure)
        drop = (ref["top1"] - m["top1"]) * 100
        if acceptance.max_accuracy_drop is not None and drop > acceptance.max_accuracy_drop + 1e-9:
            failures.append(f"max_accuracy_drop: top-1 fell {drop:.2f} points ({ref['top1']:.4f} -> {m['top1']:.4f}), allowed {acceptance.max_accuracy_drop}")
        if acceptance.min_top1_agreement is not None and m["top1_agreement"] < acceptance.min_top1_agreement:
            failures.append(f"min_top1_agreement: {m['top1_agreement']:.4f} < {acceptance.min_top1_agreement}")
        if acceptance.min_cosine is not None and m["cosine"] < acceptance.min_cosine:
            failures.append(f"min_cosine: {m['cosine']:.4f} < {acceptance.min_cosine}")
    kb = result["size_bytes"] / 1024
    if acceptance.max_size_kb is not None and kb > acceptance.max_size_kb:
        failures.append(f"max_size_kb: artifact is {kb:.1f} KB > {acceptance.max_size_kb} KB")
    return failures

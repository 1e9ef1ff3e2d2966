"""Acceptance gates from the recipe and memory budgets from the target, as typed failures."""

from __future__ import annotations

import math

from toolchain.config.recipe import Acceptance
from toolchain.record import Failure, Memory, Metrics


def fit(target: str, memory: Memory, budget: dict[str, int | None]) -> list[Failure]:
    """The target's memory budgets: one failure per budget exceeded (bytes in, KB in the message)."""
    out = []
    for what, need, has in (
        ("RAM", memory.ram_bytes, budget.get("ram_bytes")),
        ("flash", memory.flash_bytes, budget.get("flash_bytes")),
    ):
        if need is not None and has is not None and need > has:
            out.append(
                Failure(
                    kind="fit",
                    check="fit",
                    message=f"does not fit {target}: needs {need / 1024:.0f} KB {what}, has {has / 1024:.0f} KB",
                )
            )
    return out


def check(acceptance: Acceptance, m: Metrics | None, size_bytes: int) -> list[Failure]:
    """The recipe's acceptance gates: one failure per failed gate (empty when all pass).

    A gate whose value is not a number (NaN) fails: NaN never passes a check.
    """
    failures = []

    def gate(name: str, failed: bool, message: str) -> None:
        if failed:
            failures.append(Failure(kind="gate", check=name, message=f"{name}: {message}"))

    if m is not None:  # None: the runtime could not run the model (already a failure)
        drop = (m.reference_top1 - m.top1) * 100
        if acceptance.max_accuracy_drop is not None:
            gate(
                "max_accuracy_drop",
                not drop <= acceptance.max_accuracy_drop + 1e-9,
                f"top-1 fell {drop:.2f} points ({m.reference_top1:.4f} -> {m.top1:.4f}), allowed "
                f"{acceptance.max_accuracy_drop}",
            )
        if acceptance.min_top1_agreement is not None:
            gate(
                "min_top1_agreement",
                not m.top1_agreement >= acceptance.min_top1_agreement,
                f"{m.top1_agreement:.4f} < {acceptance.min_top1_agreement}",
            )
        if acceptance.min_cosine is not None:
            gate(
                "min_cosine",
                not (math.isfinite(m.cosine) and m.cosine >= acceptance.min_cosine),
                f"{m.cosine:.4f} < {acceptance.min_cosine}",
            )
    kb = size_bytes / 1024
    if acceptance.max_size_kb is not None:
        gate("max_size_kb", kb > acceptance.max_size_kb, f"artifact is {kb:.1f} KB > {acceptance.max_size_kb} KB")
    return failures

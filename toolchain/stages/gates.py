"""Acceptance gates from the recipe and memory budgets from the target, as typed failures."""

from __future__ import annotations

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

    Gates follow the task: ``max_accuracy_drop`` and ``min_top1_agreement`` apply to classification,
    ``max_metric_drop`` to the task's headline metric, ``min_cosine`` and ``min_snr_db`` to every task with a
    reference. A gate whose value is not a number (NaN) fails: NaN never passes a check.
    """
    failures = []
    gates: list[tuple[str, float | None, float | None, bool, str]] = []  # name, value, limit, at most?, message
    if m is not None:  # None: the runtime could not run the model (already a failure)
        name, value, ref, _ = m.headline
        if m.task == "classification" and m.top1 is not None and m.reference_top1 is not None:
            drop = (m.reference_top1 - m.top1) * 100
            fell = f"top-1 fell {drop:.2f} points ({100 * m.reference_top1:.2f} % -> {100 * m.top1:.2f} %)"
            gates.append(("max_accuracy_drop", drop, acceptance.max_accuracy_drop, True, fell))
        if m.task in ("classification", "language_model"):
            gates.append(
                (
                    "min_top1_agreement",
                    m.top1_agreement,
                    acceptance.min_top1_agreement,
                    False,
                    f"agreement {_g(m.top1_agreement)}",
                )
            )
        if m.task == "language_model" and m.perplexity is not None and m.reference_perplexity:
            rise = 100 * (m.perplexity / m.reference_perplexity - 1)
            what = f"perplexity rose {rise:.2f} % ({m.reference_perplexity:.4f} -> {m.perplexity:.4f})"
            gates.append(("max_perplexity_increase", rise, acceptance.max_perplexity_increase, True, what))
        gates.append(
            (
                "max_metric_drop",
                m.drop,
                acceptance.max_metric_drop,
                True,
                f"{name} {_g(value)} vs the reference's {_g(ref)}",
            )
        )
        gates.append(("min_cosine", m.cosine, acceptance.min_cosine, False, f"cosine {_g(m.cosine)}"))
        gates.append(("min_snr_db", m.snr_db, acceptance.min_snr_db, False, f"SNR {_g(m.snr_db)} dB"))
    kb = size_bytes / 1024
    gates.append(("max_size_kb", kb, acceptance.max_size_kb, True, f"artifact is {kb:.1f} KB"))
    for name, value, limit, at_most, what in gates:
        if limit is None or value is None:
            continue
        ok = value <= limit + 1e-9 if at_most else value >= limit  # False for NaN
        if not ok:
            message = (
                f"{name}: {what}, {'allowed' if at_most else 'needs'} {'at most' if at_most else 'at least'} {limit}"
            )
            failures.append(Failure(kind="gate", check=name, message=message))
    return failures


def _g(value: float | None) -> str:
    """A measured value in a gate's message: four significant digits (NaN stays 'nan')."""
    return "none" if value is None else f"{value:.4g}"

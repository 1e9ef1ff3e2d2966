"""Two builds side by side, per target: what changed, and which change passes a regression threshold.

``--fail-on "size>+2%,arena>+0,accuracy<-0.5"``: each rule is a quantity, ``>`` or ``<``, a signed threshold and
an optional ``%`` (relative to build A; without it, the quantity's own unit). A row regresses when its change is
beyond the threshold in the rule's direction. ``accuracy`` is the task's headline metric, signed so that better is
positive (points of top-1 for classification; the metric's units otherwise); a target that build B lost, or that
passed in A and fails in B, always regresses under ``--fail-on``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from toolchain.errors import ConfigError
from toolchain.record import BuildRecord, TargetResult

DIFF_SCHEMA = "toolchain.diff/1"
#: quantity: (heading, unit)
QUANTITIES = {
    "size": ("size", "B"),
    "ram": ("RAM", "B"),
    "arena": ("arena", "B"),
    "flash": ("flash", "B"),
    "latency": ("latency", "ms"),
    "estimate": ("latency est.", "ms"),
    "accuracy": ("accuracy", "pts"),
    "accel_ops": ("ops on accel.", "ops"),
}
RULE = re.compile(r"^\s*([a-z_]+)\s*([<>])\s*([+-]?\d+(?:\.\d+)?)\s*(%?)\s*$")


@dataclass(frozen=True)
class Rule:
    quantity: str
    above: bool  # '>': regress when the change is above the threshold
    threshold: float
    relative: bool

    def __str__(self) -> str:
        return f"{self.quantity}{'>' if self.above else '<'}{self.threshold:+g}{'%' if self.relative else ''}"

    def breached(self, a: float | None, b: float | None) -> float | None:
        """The change (absolute or %) when it passes the threshold, else None."""
        if a is None or b is None:
            return None
        change = b - a
        if self.relative:
            if a == 0:
                return None if change == 0 else float("inf") * (1 if change > 0 else -1)
            change = 100 * change / abs(a)
        return change if (change > self.threshold if self.above else change < self.threshold) else None


def parse_rules(text: str) -> list[Rule]:
    rules = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = RULE.match(part)
        if not m or m.group(1) not in QUANTITIES:
            raise ConfigError(
                f"--fail-on: cannot read {part!r}: write QUANTITY>THRESHOLD or QUANTITY<THRESHOLD, optionally with %, "
                f"e.g. size>+2% (quantities: {', '.join(QUANTITIES)})"
            )
        rules.append(Rule(m.group(1), m.group(2) == ">", float(m.group(3)), m.group(4) == "%"))
    return rules


def values(r: TargetResult) -> dict[str, float | None]:
    """The quantities of one target's result (accuracy signed so that higher is better)."""
    m, mem, lat = r.metrics, r.memory, r.latency
    accuracy = None
    if m is not None and m.headline[1] is not None:
        scale = 100 if m.task == "classification" else 1
        accuracy = m.headline[1] * scale * (1 if m.headline[3] else -1)
    estimates = [s.latency.ms for s in r.sections.values() if s.latency and s.latency.kind == "estimate"]
    return {
        "size": r.size_bytes,
        "ram": mem.ram_bytes if mem else None,
        "arena": mem.arena_bytes if mem else None,
        "flash": mem.flash_bytes if mem and mem.flash_bytes is not None else r.size_bytes,
        "latency": lat.ms if lat and lat.kind == "measured" else None,
        "estimate": estimates[0] if estimates else None,
        "accuracy": accuracy,
        "accel_ops": r.accelerator.ops_on if r.accelerator else None,
    }


def diff(a: BuildRecord, b: BuildRecord, rules: list[Rule] | None = None) -> dict:
    """Per target (A's order, then B's new ones): both values of each quantity, and the rules each breaches."""
    rules = rules or []
    ra, rb = {r.target: r for r in a.results}, {r.target: r for r in b.results}
    rows = []
    for target in list(ra) + [t for t in rb if t not in ra]:
        x, y = ra.get(target), rb.get(target)
        va, vb = (values(x) if x else {}), (values(y) if y else {})
        regressions = []
        if rules and x and not y:
            regressions.append("target missing from build B")
        if rules and x and y and x.passed and not y.passed:
            regressions.append("passed in A, fails in B: " + "; ".join(f.message for f in y.failures[:2]))
        for rule in rules:
            change = rule.breached(va.get(rule.quantity), vb.get(rule.quantity))
            if change is not None:
                unit = "%" if rule.relative else f" {QUANTITIES[rule.quantity][1]}"
                regressions.append(f"{rule.quantity} {change:+.4g}{unit} (rule {rule})")
        rows.append(
            {
                "target": target,
                "a": va or None,
                "b": vb or None,
                "passed": [x.passed if x else None, y.passed if y else None],
                "mode": [x.mode if x else None, y.mode if y else None],
                "regressions": regressions,
            }
        )
    return {
        "schema": DIFF_SCHEMA,
        "a": {"recipe": a.recipe, "recipe_sha256": a.recipe_sha256, "data_digest": a.data_digest},
        "b": {"recipe": b.recipe, "recipe_sha256": b.recipe_sha256, "data_digest": b.data_digest},
        "rules": [str(r) for r in rules],
        "rows": rows,
        "regressed": any(r["regressions"] for r in rows),
    }


def cell(row: dict, q: str) -> str:
    a, b = (row[k][q] if row[k] else None for k in ("a", "b"))

    def fmt(v):
        if v is None:
            return "-"
        return f"{v:,.0f}" if QUANTITIES[q][1] in ("B", "ops") else f"{v:.4g}"

    if a is None or b is None or a == b:
        return fmt(a) if a == b else f"{fmt(a)} → {fmt(b)}"
    if q == "accuracy":
        return f"{fmt(a)} → {fmt(b)} ({b - a:+.2f})"
    pct = f" ({100 * (b - a) / abs(a):+.1f}%)" if a else ""
    return f"{fmt(a)} → {fmt(b)}{pct}"


def markdown(d: dict) -> str:
    head = ["target", *(QUANTITIES[q][0] + f" ({QUANTITIES[q][1]})" for q in QUANTITIES), "passes", "regressions"]
    lines = [
        f"# Diff: {d['a']['recipe']} → {d['b']['recipe']}",
        "",
        f"Rules: {', '.join(d['rules']) or 'none'}. Accuracy: the task's headline metric, higher is better.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in d["rows"]:
        passes = " → ".join("-" if p is None else ("yes" if p else "no") for p in row["passed"])
        cells = [row["target"], *(cell(row, q) for q in QUANTITIES), passes, "; ".join(row["regressions"]) or "-"]
        lines.append("| " + " | ".join(cells) + " |")
    verdict = "**regressed**" if d["regressed"] else "no regression"
    return "\n".join(lines) + f"\n\n{verdict}\n"


def print_table(d: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{d['a']['recipe']} → {d['b']['recipe']}" + (f"  ({', '.join(d['rules'])})" if d["rules"] else ""))
    for h in ["target", *(QUANTITIES[q][0] for q in QUANTITIES), "passes", "regressions"]:
        t.add_column(h, overflow="fold")
    for row in d["rows"]:
        passes = " → ".join("-" if p is None else ("yes" if p else "no") for p in row["passed"])
        style = "red" if row["regressions"] else None
        t.add_row(
            row["target"], *(cell(row, q) for q in QUANTITIES), passes, "; ".join(row["regressions"]), style=style
        )
    Console(width=200).print(t)

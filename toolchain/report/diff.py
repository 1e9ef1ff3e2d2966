"""Two builds side by side, per target: what changed, and which change passes a regression threshold.

``--fail-on "size>+2%,arena>+0,accuracy<-0.5"``: each rule is a quantity, ``>`` or ``<``, a signed threshold and
an optional ``%`` (relative to build A; without it, the quantity's own unit). A row regresses when its change is
beyond the threshold in the rule's direction. ``accuracy`` is the task's headline metric, signed so that better is
positive (points of top-1 for classification; the metric's units otherwise); a target that build B lost, or that
passed in A and fails in B, always regresses under ``--fail-on``, and so does a NaN (on either side) or a value B
lacks where A has one: a NaN never passes a rule. Either side may be a build root (a folder of
``<recipe>/build.json``): recipes are matched by name (``diff_paths``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from toolchain.errors import ConfigError, InputError
from toolchain.record import TASK_METRIC, BuildRecord, TargetResult, load_record
from toolchain.report import units
from toolchain.report.table import KEY, Column, box_table, terminal_width

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
        """The change (absolute or %) when it passes the threshold, else None; NaN when a value is NaN or B lacks
        the value A has: a NaN never passes a rule."""
        if (b is not None and math.isnan(b)) or (a is not None and (b is None or math.isnan(a))):
            return math.nan
        if a is None:
            return None
        change = b - a
        if self.relative:
            if a == 0:
                return None if change == 0 else float("inf") * (1 if change > 0 else -1)
            change = 100 * change / abs(a)
        return change if (change > self.threshold if self.above else change < self.threshold) else None


def parse_rules(text: str) -> list[Rule]:
    """Comma-separated rules; no rule, or an empty one (``,``, ``size>+2%,``), is refused."""
    rules = []
    for part in (p.strip() for p in text.split(",")):
        m = RULE.match(part)
        if not m or m.group(1) not in QUANTITIES:
            what = f"an empty rule in {text!r}" if not part else repr(part)
            raise ConfigError(
                f"--fail-on: cannot read {what}: write QUANTITY>THRESHOLD or QUANTITY<THRESHOLD, optionally with %, "
                f"e.g. size>+2% (quantities: {', '.join(QUANTITIES)})"
            )
        rules.append(Rule(m.group(1), m.group(2) == ">", float(m.group(3)), m.group(4) == "%"))
    return rules


def _unknown(a: float | None, b: float | None) -> str:
    """Why a rule cannot pass: a NaN, or a value B lacks."""
    if b is None:
        return "missing in B"
    return "NaN in B" if math.isnan(b) else "NaN in A"


def values(r: TargetResult) -> dict[str, float | None]:
    """The quantities of one target's result (accuracy signed so that higher is better)."""
    m, mem, lat = r.metrics, r.memory, r.latency
    accuracy = None
    if m is not None and m.headline[1] is not None:
        scale = 100 if m.task == "classification" else 1
        accuracy = m.headline[1] * scale * (1 if m.headline[3] else -1)
    estimates = [s.latency.ms for s in r.sections.values() if s.latency and s.latency.kind == "estimate"]
    accel = units.accelerator_ops(r)
    return {
        "size": r.size_bytes,
        "ram": mem.ram_bytes if mem else None,
        "arena": mem.arena_bytes if mem else None,
        "flash": mem.flash_bytes if mem and mem.flash_bytes is not None else r.size_bytes,
        "latency": lat.ms if lat and lat.kind == "measured" else None,
        "estimate": estimates[0] if estimates else None,
        "accuracy": accuracy,
        # of the artifact's ops, as inspect counts them (units.accelerator_ops)
        "accel_ops": accel[0] if accel else None,
        "accel_ops_total": accel[1] if accel else None,
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
            if change is not None and math.isnan(change):
                regressions.append(
                    f"{rule.quantity} {_unknown(va.get(rule.quantity), vb.get(rule.quantity))} (rule {rule})"
                )
            elif change is not None:
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
        "task": next((r.metrics.task for r in [*b.results, *a.results] if r.metrics), "classification"),
        "rows": rows,
        "regressed": any(r["regressions"] for r in rows),
    }


def load_side(path: Path) -> tuple[dict[str, BuildRecord], bool]:
    """One side of a diff: a build (its build.json, or the folder holding it) as {recipe: record}, False; or a
    build root (a folder of ``<recipe>/build.json``, as ``--build-dir`` holds them) as {folder: record}, True."""
    path = Path(path)
    if path.is_dir() and not (path / "build.json").exists():
        found = sorted(p.parent for p in path.glob("*/build.json"))
        if not found:
            raise InputError(f"{path}: no build record here (no build.json, nor a <recipe>/build.json in its folders)")
        return {f.name: load_record(f) for f in found}, True
    record = load_record(path)
    return {record.recipe: record}, False


def diff_paths(path_a: Path, path_b: Path, rules: list[Rule] | None = None) -> dict:
    """Two builds: ``diff``'s table. A build root on either side: the recipes of both matched by name, a diff
    each (``recipes``), and the recipes only one root has (a recipe B lost regresses under rules)."""
    a, root_a = load_side(path_a)
    b, root_b = load_side(path_b)
    if not (root_a or root_b):
        return diff(*a.values(), *b.values(), rules)
    if not root_a or not root_b:  # one build against a root: its recipe only
        a, b = ({n: r for n, r in a.items() if n in b}, b) if root_a else (a, {n: r for n, r in b.items() if n in a})
    both = [n for n in a if n in b]
    if not both:
        raise InputError(
            f"{path_a} and {path_b} have no recipe in common ({path_a}: {', '.join(a) or 'none'}; "
            f"{path_b}: {', '.join(b) or 'none'})"
        )
    recipes = {n: diff(a[n], b[n], rules) for n in both}
    only_a, only_b = [n for n in a if n not in b], [n for n in b if n not in a]
    return {
        "schema": DIFF_SCHEMA,
        "rules": [str(r) for r in rules or []],
        "recipes": recipes,
        "only_in_a": only_a,
        "only_in_b": only_b,
        "regressed": any(d["regressed"] for d in recipes.values()) or bool(rules and only_a),
    }


def regressions(d: dict) -> list[str]:
    """Each regression of a diff (``diff`` or ``diff_paths``) in one line: ``[recipe/]target: what``."""
    if "recipes" not in d:
        return [f"{r['target']}: {'; '.join(r['regressions'])}" for r in d["rows"] if r["regressions"]]
    lost = [f"{n}: recipe missing from B" for n in d["only_in_a"]] if d["rules"] else []
    return [f"{n}/{line}" for n, one in d["recipes"].items() for line in regressions(one)] + lost


#: the table's heading of each quantity (its unit in units.py's words) and, in a terminal, which it drops first
HEADINGS = {
    "size": ("size KB", KEY),
    "ram": ("RAM KB", 7),
    "arena": ("arena KB", 6),
    "flash": ("flash KB", 5),
    "latency": ("host ms", 8),
    "estimate": ("est. ms", 8),
    "accuracy": ("accuracy", 9),  # the task's headline metric: named per diff (``_heading``)
    "accel_ops": ("accel. ops", 4),
}


def _heading(d: dict, q: str) -> str:
    if q != "accuracy":
        return HEADINGS[q][0]
    return TASK_METRIC.get(d.get("task", "classification"), ("top1", True))[0].replace("top1", "top-1")


def cell(row: dict, q: str, task: str = "classification", sep: str = " → ") -> str:
    """Both values of quantity ``q`` in units.py's units, A ``sep`` B and the change (one value when equal); with
    a ``sep`` other than " → " (a line break) the change goes on a line of its own."""
    a, b = (row[k][q] if row[k] else None for k in ("a", "b"))
    total = [row[k].get("accel_ops_total") if row[k] else None for k in ("a", "b")]
    higher = TASK_METRIC.get(task, ("top1", True))[1]
    if q == "accuracy" and not higher:  # signed so that higher is better: shown as the metric itself
        a, b = (None if v is None else -v for v in (a, b))

    def fmt(v, i):
        if v is None:
            return "-"
        if QUANTITIES[q][1] == "B":
            return units.kb(v)
        if q == "accuracy":
            return units.pct(v / 100) if units.is_share(task) else f"{v:.4g}"
        if q == "accel_ops":
            return units.ops(v, total[i])
        return units.ms(v)

    if a is None or b is None or (a == b and total[0] == total[1]):
        return fmt(a, 0) if a == b else f"{fmt(a, 0)}{sep}{fmt(b, 1)}"
    if q == "accuracy":
        change = units.pts(b - a) if units.is_share(task) else f"{b - a:+.4g}"
    else:
        change = f"{100 * (b - a) / abs(a):+.1f} %" if a else ""
    return f"{fmt(a, 0)}{sep}{fmt(b, 1)}" + (f"{' ' if sep == ' → ' else chr(10)}({change})" if change else "")


def _pair(values: list, sep: str, show=str) -> str:
    """A → B of a row's mode or pass/fail (one value when both are the same)."""
    shown = ["-" if v is None else show(v) for v in values]
    return shown[0] if shown[0] == shown[1] else sep.join(shown)


def _passes(p: bool) -> str:
    return "yes" if p else "no"


def markdown(d: dict) -> str:
    head = ["target", "mode", *(_heading(d, q) for q in QUANTITIES), "passes", "regressions"]
    lines = [
        f"# Diff: {d['a']['recipe']} → {d['b']['recipe']}",
        "",
        f"Rules: {', '.join(d['rules']) or 'none'}. Accuracy: the task's headline metric (top-1 in %, its changes "
        "in points). Sizes in KB (1 KB = 1024 bytes); latency in ms, host: measured on this machine, est.: "
        "estimated for the device; accel. ops: of the artifact's ops.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in d["rows"]:
        cells = [
            row["target"],
            _pair(row["mode"], " → "),
            *(cell(row, q, d.get("task", "classification")) for q in QUANTITIES),
            _pair(row["passed"], " → ", _passes),
            "; ".join(row["regressions"]) or "-",
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    verdict = "**regressed**" if d["regressed"] else "no regression"
    return "\n".join(lines) + f"\n\n{verdict}\n"


def print_table(d: dict, wide: bool = False) -> None:
    """The diff on stdout: a changed value over three lines (A →, B, the change), at the terminal's width
    (columns dropped by priority) unless ``wide``; the regressions column only when a row has one."""
    import sys

    width = None if wide else terminal_width()
    regressed = any(row["regressions"] for row in d["rows"])
    columns = [
        Column("target"),
        Column("mode"),
        *(Column(_heading(d, q), "right", HEADINGS[q][1]) for q in QUANTITIES),
        Column("passes"),
        *([Column("regressions", wrap=True)] if regressed else []),
    ]
    rows = [
        [
            row["target"],
            _pair(row["mode"], " →\n"),
            *(cell(row, q, d.get("task", "classification"), " →\n") for q in QUANTITIES),
            _pair(row["passed"], " →\n", _passes),
            *(["; ".join(row["regressions"]) or "-"] if regressed else []),
        ]
        for row in d["rows"]
    ]
    title = f"{d['a']['recipe']} → {d['b']['recipe']}" + (f"  ({', '.join(d['rules'])})" if d["rules"] else "")
    sys.stdout.write(box_table(title, columns, rows, width))

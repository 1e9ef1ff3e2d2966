"""One model and plan across device profiles, side by side, from a build record (no stage re-runs)."""

from __future__ import annotations

from toolchain.errors import MissingBuildError
from toolchain.record import TASK_METRIC, BuildRecord, TargetResult
from toolchain.report import units
from toolchain.report.table import KEY, Column, box_table, footer, terminal_width

COMPARE_SCHEMA = "toolchain.compare/1"
#: key, heading, which way is better (None: not ranked)
COLUMNS = [
    ("target", "target", None),
    ("mode", "mode", None),
    ("size_bytes", "size KB", "min"),
    ("ram_bytes", "RAM KB", "min"),
    ("flash_bytes", "flash KB", "min"),
    ("latency_ms", "latency ms", "min"),
    ("metric", "top-1", "max"),  # the task's headline metric: heading and direction set per record
    ("metric_drop", "drop", "min"),
    ("top1_agreement", "agreement", "max"),
    ("cosine", "cosine", "max"),
    ("accelerator_share", "accel. ops", "max"),
    ("fits", "fits", None),
    ("passed", "passes", None),
]
#: which columns the terminal table drops first when it is too wide (lowest first; KEY: never)
PRIORITY = {
    "metric": 9,
    "latency_ms": 8,
    "ram_bytes": 6,
    "flash_bytes": 5,
    "accelerator_share": 4,
    "metric_drop": 3,
    "fits": 2,
    "top1_agreement": 1,
    "cosine": 0,
}
PARETO_PRIORITY = 7


def row(r: TargetResult) -> dict:
    m, lat, mem, accel = r.metrics, r.latency, r.memory, units.accelerator_ops(r)
    return {
        "target": r.target,
        "kind": r.kind,
        "runtime": r.runtime,
        "mode": r.mode,
        "size_bytes": r.size_bytes,
        "ram_bytes": mem.ram_bytes if mem else None,
        "ram_budget_bytes": r.budget.get("ram_bytes"),
        "flash_bytes": (mem.flash_bytes if mem and mem.flash_bytes is not None else r.size_bytes),
        "flash_budget_bytes": r.budget.get("flash_bytes"),
        "latency_ms": lat.ms if lat else None,
        "latency_source": lat.source if lat else "none",
        "latency_measured": bool(lat and lat.kind == "measured"),
        "metric": m.headline[1] if m else None,
        "higher_is_better": m.headline[3] if m else True,
        # classification: points of top-1 (as the gate); other tasks: the metric's own units
        "metric_drop": None if not m or m.drop is None else m.drop * (100 if m.task == "classification" else 1),
        "top1_agreement": m.top1_agreement if m else None,
        "cosine": m.cosine if m else None,
        # CPU and MCU targets have none; counted in the artifact's ops (as inspect counts them)
        "accelerator_share": accel[0] / max(1, accel[1]) if accel else None,
        "accelerator_ops": accel[0] if accel else None,
        "ops_total": accel[1] if accel else sum(r.ops.values()),
        "fits": r.fits,
        "passed": r.passed,
        "failures": [f.message for f in r.failures],
    }


def pareto(rows: list[dict]) -> list[str]:
    """Targets no other target beats on accuracy, latency and memory at once (ties are not beaten)."""

    def objectives(x):  # all minimized
        memory = x["ram_bytes"] if x["ram_bytes"] is not None else x["flash_bytes"]
        return (-x["metric"] if x.get("higher_is_better", True) else x["metric"], x["latency_ms"], memory)

    ranked = [x for x in rows if x["metric"] is not None and x["latency_ms"] is not None]
    front = []
    for a in ranked:
        oa = objectives(a)
        dominated = any(
            all(b_ <= a_ for a_, b_ in zip(oa, objectives(b), strict=True))
            and any(b_ < a_ for a_, b_ in zip(oa, objectives(b), strict=True))
            for b in ranked
            if b is not a
        )
        if not dominated:
            front.append(a["target"])
    return front


def compare(record: BuildRecord, targets: list[str] | None = None) -> dict:
    """The comparison table of ``record``'s targets (or only ``targets``, in that order)."""
    if targets:
        missing = [t for t in targets if t not in {r.target for r in record.results}]
        if missing:
            raise MissingBuildError(
                f"the build of {record.recipe} has no target {missing[0]!r} (built: "
                f"{', '.join(r.target for r in record.results)})"
            )
    chosen = [r for r in record.results if not targets or r.target in targets]
    task = next((r.metrics.task for r in record.results if r.metrics), "classification")
    table = table_of(record.recipe, record.eval_samples, task, [row(r) for r in chosen])
    where = placement(chosen)
    return table | ({"placement": where} if where else {})


def placement(results: list[TargetResult]) -> dict | None:
    """Per op type, where each NPU target's compiler put it (the artifact's ops of that type, those Vela left on
    the CPU and why), one column per target: an Ethos-U55 against an Ethos-U85 at a glance. None without one."""
    npu = [r for r in results if "vela" in r.sections and "cpu_fallbacks" in r.sections["vela"].details]
    if not npu:
        return None
    rows = []
    for op in sorted({op for r in npu for op in r.ops}):
        cells, reasons = {}, {}
        for r in npu:
            total = r.ops.get(op, 0)
            falls = [f for f in r.sections["vela"].details["cpu_fallbacks"] if f["op"] == op]
            cpu = min(len({f["tensor"] for f in falls}), total)
            cells[r.target] = {"ops": total, "npu": total - cpu, "cpu": cpu}
            if falls:
                reasons[r.target] = sorted({f["reason"] for f in falls})
        rows.append({"op": op, "targets": cells, "reasons": reasons})
    return {"targets": [r.target for r in npu], "rows": rows}


def placement_cell(c: dict) -> str:
    if not c["ops"]:
        return "-"
    return "all NPU" if not c["cpu"] else "all CPU" if not c["npu"] else f"{c['npu']} NPU, {c['cpu']} CPU"


def placement_reasons(where: dict) -> list[str]:
    """One line per (target, op) placed on the CPU: why, in Vela's words."""
    return [f"{t} {x['op']}: {'; '.join(why)}" for x in where["rows"] for t, why in x["reasons"].items()]


def compare_plans(records: dict[str, BuildRecord], targets: list[str] | None = None) -> dict:
    """Plans x targets in one table: ``records`` maps each plan (quantize mode) to the build of the recipe with
    that plan; a row is one target under one plan, labelled ``target [plan]``."""
    rows = []
    for plan, record in records.items():
        for r in record.results:
            if not targets or r.target in targets:
                rows.append(row(r) | {"target": f"{r.target} [{plan}]", "device": r.target, "plan": plan})
    first = next(iter(records.values()))
    task = next((r.metrics.task for rec in records.values() for r in rec.results if r.metrics), "classification")
    table = table_of(first.recipe.rsplit("-", 1)[0], first.eval_samples, task, rows)
    table["plans"] = list(records)
    return table


def table_of(recipe: str, eval_samples: int, task: str, rows: list[dict]) -> dict:
    name, higher = TASK_METRIC.get(task, ("top1", True))
    drop = "drop" if units.is_share(task) else f"drop ({name})"  # classification: its cells say pts
    columns = [
        (
            k,
            {"metric": name.replace("top1", "top-1"), "metric_drop": drop}.get(k, h),
            ("max" if higher else "min") if k == "metric" else b,
        )
        for k, h, b in COLUMNS
        if task == "classification" or k != "top1_agreement"
    ]
    best = {}
    for key, _, better in columns:
        values = [x[key] for x in rows if better and x[key] is not None]
        if values:
            top = min(values) if better == "min" else max(values)
            best[key] = [x["target"] for x in rows if x[key] == top]
    table = {
        "schema": COMPARE_SCHEMA,
        "recipe": recipe,
        "eval_samples": eval_samples,
        "task": task,
        "columns": [{"key": k, "heading": h, "better": b} for k, h, b in columns],
        "rows": rows,
        "best": best,
        "pareto": pareto(rows),
    }
    for x in rows:  # each value as every renderer shows it (units.py)
        x["text"] = {k: text(table, x, k) for k, _, _ in columns}
    return table


def text(table: dict, x: dict, key: str) -> str:
    """A value of ``x`` in the units every renderer uses (``units.py``)."""
    v, task = x[key], table.get("task", "classification")
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if key in ("size_bytes", "ram_bytes", "flash_bytes"):
        return units.kb(v)
    if key == "latency_ms":
        return units.latency(v, x["latency_measured"])
    if key == "metric":
        return units.metric(task, v)
    if key == "metric_drop":  # already in points for classification
        return units.pts(v) if units.is_share(task) else units.metric_delta(task, v)
    if key == "top1_agreement":
        return units.pct(v)
    if key == "cosine":
        return f"{v:.4f}"
    if key == "accelerator_share":
        return units.ops(x.get("accelerator_ops"), x.get("ops_total"))
    return str(v)


def cell(table: dict, x: dict, key: str) -> str:
    """Display text of one cell; '*' marks the best value of a column."""
    best = x["target"] in table["best"].get(key, []) and len(table["rows"]) > 1
    return text(table, x, key) + (" *" if best else "")


LEGEND = [
    "* best in column; P: on the Pareto front (accuracy vs latency vs memory)",
    "latency (host): measured on this machine, (est.): estimated; 1 KB = 1024 B",
]


def print_table(table: dict, wide: bool = False) -> None:
    """The comparison on stdout, at the terminal's width (columns dropped by priority) unless ``wide``."""
    import sys

    width = None if wide else terminal_width()
    columns = [Column("P", priority=PARETO_PRIORITY)] + [
        Column(c["heading"], "left" if c["better"] is None else "right", PRIORITY.get(c["key"], KEY))
        for c in table["columns"]
    ]
    rows = [
        ["P" if x["target"] in table["pareto"] else "", *[cell(table, x, c["key"]) for c in table["columns"]]]
        for x in table["rows"]
    ]
    title = f"{table['recipe']}: {table['eval_samples']} eval samples"
    out = box_table(title, columns, rows, width) + footer(LEGEND, width)
    where = table.get("placement")
    if where:
        cols = [Column("op")] + [Column(name, wrap=True) for name in where["targets"]]
        cells = [[x["op"], *[placement_cell(x["targets"][n]) for n in where["targets"]]] for x in where["rows"]]
        out += "\n" + box_table("Op placement on the NPU (Vela), per op type", cols, cells, width)
        out += footer([f"  {line}" for line in placement_reasons(where)], width)
    sys.stdout.write(out)


def markdown(table: dict) -> str:
    heads = ["Pareto"] + [c["heading"] for c in table["columns"]]
    lines = [
        f"# {table['recipe']}: {'plans x targets' if 'plans' in table else 'targets'} compared",
        "",
        f"{table['eval_samples']} eval samples. `*` best in column; Pareto: accuracy vs latency vs memory. "
        "Sizes in KB (1 KB = 1024 bytes); latency in ms, (host): measured on this machine, (est.): estimated for "
        "the device.",
        "",
    ]
    lines += ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for x in table["rows"]:
        cells = ["yes" if x["target"] in table["pareto"] else ""] + [
            cell(table, x, c["key"]).replace("|", "\\|") for c in table["columns"]
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Latency sources:", ""] + [f"- {x['target']}: {x['latency_source']}" for x in table["rows"]]
    where = table.get("placement")
    if where:
        lines += ["", "## Op placement on the NPU (Vela)", "", "| op | " + " | ".join(where["targets"]) + " |"]
        lines.append("|" + "---|" * (1 + len(where["targets"])))
        for x in where["rows"]:
            lines.append(
                f"| {x['op']} | " + " | ".join(placement_cell(x["targets"][n]) for n in where["targets"]) + " |"
            )
        reasons = placement_reasons(where)
        lines += ["", "Left on the CPU, and why:", ""] + [f"- {r}" for r in reasons] if reasons else []
    return "\n".join(lines) + "\n"

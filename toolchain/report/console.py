"""The summary table printed on stdout after a build."""

from __future__ import annotations

import sys

from toolchain.record import TASK_METRIC, BuildRecord
from toolchain.report import units
from toolchain.report.table import Column, box_table, plain_table, terminal_width


def _parity(task: str, m) -> str:
    if not m:
        return "-"
    if task == "classification":
        return units.pct(m.top1_agreement)
    return "-" if m.snr_db is None else f"{m.snr_db:.1f}"


def _failure(f) -> str:
    return f.kind if f.check == f.kind else f"{f.kind} {f.check}"


def print_summary(record: BuildRecord, wide: bool = False) -> None:
    """One row per target: the task's headline metric for the artifact and the reference, latency, RAM, flash,
    whether it fits, parity, result; at the terminal's width (columns dropped by priority) unless ``wide``."""
    task = next((r.metrics.task for r in record.results if r.metrics), "classification")
    name = TASK_METRIC.get(task, ("top1", True))[0].replace("top1", "top-1")
    columns = [
        Column("target"),
        Column("mode"),
        Column("size KB", "right"),
        Column(name, "right", 9),
        Column("latency ms", "right", 8),
        Column("RAM KB", "right", 7),
        Column("flash KB", "right", 6),
        Column("fits", "left", 5),
        Column(f"ref {name}", "right", 3),
        Column("agree" if task == "classification" else "SNR dB", "right", 4),
        Column("cosine", "right", 2),
        Column("result", wrap=True),
    ]
    rows = []
    for r in record.results:
        lat, m, mem = r.latency, r.metrics, r.memory
        _, value, ref, _ = m.headline if m else (None, None, None, None)
        flash = mem.flash_bytes if mem and mem.flash_bytes is not None else r.size_bytes
        result = "pass" if r.passed else "FAIL: " + "; ".join(_failure(f) for f in r.failures)
        rows.append([
            r.target,
            r.mode,
            units.kb(r.size_bytes),
            units.metric(task, value),
            units.latency(lat.ms, lat.kind == "measured") if lat else "-",
            units.kb(mem.ram_bytes if mem else None),
            units.kb(flash),
            "yes" if r.fits else "NO",
            units.metric(task, ref),
            _parity(task, m),
            "-" if not m or m.cosine is None else f"{m.cosine:.4f}",
            result,
        ])  # fmt: skip
    title = f"{record.recipe}: {task}, {record.eval_samples} eval samples"
    sys.stdout.write(box_table(title, columns, rows, None if wide else terminal_width()))


def targets_listing(rows: list[tuple[str, str, list[str], str]], wide: bool = False) -> str:
    """``targets list``: one line per profile (name, kind, checks, description) at the terminal's width (the
    description wraps under itself; the checks are dropped first) unless ``wide``."""
    columns = [Column("name"), Column("kind"), Column("checks", priority=1), Column("description", wrap=True)]
    cells = [[name, kind, ",".join(checks), description] for name, kind, checks, description in rows]
    return plain_table(columns, cells, None if wide else terminal_width())

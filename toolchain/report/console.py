"""The summary table printed on stdout after a build."""

from __future__ import annotations

import sys

from toolchain.record import TASK_METRIC, BuildRecord
from toolchain.report.table import box_table


def _num(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def print_summary(record: BuildRecord) -> None:
    """One row per target: the task's headline metric for the reference and the artifact, parity, latency, result."""
    task = next((r.metrics.task for r in record.results if r.metrics), "classification")
    name = TASK_METRIC.get(task, ("top1", True))[0].replace("top1", "top-1")
    cols = (
        "target",
        "mode",
        "size KB",
        f"ref {name}",
        name,
        "agree" if task == "classification" else "SNR dB",
        "cosine",
        "latency ms",
        "result",
    )
    rows = []
    for r in record.results:
        lat, m = r.latency, r.metrics
        latency = (
            "-"
            if lat is None or lat.ms is None
            else f"{lat.ms:.3g}"
            if lat.kind == "measured"
            else f"~{lat.ms:.3g} (est.)"
        )
        _, value, ref, _ = m.headline if m else (None, None, None, None)
        parity = (m.top1_agreement if task == "classification" else m.snr_db) if m else None
        result = "pass" if r.passed else "FAIL: " + "; ".join(f"{f.kind} {f.check}" for f in r.failures)
        rows.append([
            r.target,
            r.mode,
            f"{r.size_bytes / 1024:.1f}",
            _num(ref),
            _num(value),
            _num(parity),
            _num(m.cosine if m else None),
            latency,
            result,
        ])  # fmt: skip
    columns = [(c, "left" if c in ("target", "mode", "result") else "right") for c in cols]
    sys.stdout.write(box_table(f"{record.recipe}: {task}, {record.eval_samples} eval samples", columns, rows))

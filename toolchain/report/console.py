"""The summary table printed on stdout after a build."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from toolchain.record import BuildRecord


def print_summary(record: BuildRecord) -> None:
    table = Table(title=f"{record.recipe}: {record.eval_samples} eval samples")
    for col in ("target", "mode", "size KB", "ref top-1", "top-1", "agree", "cosine", "latency ms", "result"):
        table.add_column(col, justify="left" if col in ("target", "mode", "result") else "right")
    for r in record.results:
        lat, m = r.latency, r.metrics
        latency = (
            "-"
            if lat is None or lat.ms is None
            else f"{lat.ms:.2f}"
            if lat.kind == "measured"
            else f"~{lat.ms:.2f} (est.)"
        )
        num = lambda k, m=m: f"{getattr(m, k):.4f}" if m else "-"
        table.add_row(
            r.target,
            r.mode,
            f"{r.size_bytes / 1024:.1f}",
            num("reference_top1"),
            num("top1"),
            num("top1_agreement"),
            num("cosine"),
            latency,
            "pass" if r.passed else "FAIL: " + "; ".join(f"{f.kind} {f.check}" for f in r.failures),
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)  # piped: do not squeeze columns to 80
    console.print(table)

"""The one vocabulary of units every renderer uses (build summary, ``compare``, ``diff``, ``inspect``, report.md).

- accuracy (top-1, top-5, top-1 agreement): percent, 2 decimals: ``96.94 %``; its differences in points:
  ``+0.28 pts``. Other tasks' headline metrics (MAE, AUC, SNR, perplexity) keep their own units (4 digits).
- sizes (artifact, RAM, arena, flash): KB, where **1 KB = 1024 bytes** (the target profiles' ``ram_kb`` and
  ``flash_kb``), 1 decimal: ``618.8``.
- latency: ms, 4 significant digits and at most 3 decimals; ``(host)`` when measured on this machine (LiteRT on
  the host CPU), ``(est.)`` when estimated for the device.
- ops on an accelerator: ``n/m ops``, of the artifact's operators (the count ``inspect`` gives).
"""

from __future__ import annotations

import math

from toolchain.record import TargetResult

KB = 1024


def _finite(v: float) -> str | None:
    return None if math.isfinite(v) else ("NaN" if math.isnan(v) else f"{v}")


def kb(nbytes: float | None) -> str:
    """Bytes as KB, the number only (the heading or the caller says ``KB``)."""
    if nbytes is None:
        return "-"
    if 0 < nbytes < KB / 20:  # would round to 0.0: a few bytes, not none
        return "<0.1"
    return _finite(nbytes) or f"{nbytes / KB:,.1f}"


def kb_text(nbytes: float | None) -> str:
    return "-" if nbytes is None else f"{kb(nbytes)} KB"


def pct(share: float | None) -> str:
    """A share (0.9694) as percent: ``96.94 %``."""
    if share is None:
        return "-"
    return _finite(share) or f"{100 * share:.2f} %"


def pts(points: float | None) -> str:
    """A difference already in points (of percent): ``+0.28 pts``."""
    if points is None:
        return "-"
    return _finite(points) or f"{points:+.2f} pts"


def ms(v: float | None) -> str:
    """Milliseconds, the number only: 0.138, 1.636, 59.26, 1235."""
    if v is None:
        return "-"
    if bad := _finite(v):
        return bad
    decimals = 3 if v == 0 else max(0, min(3, 3 - math.floor(math.log10(abs(v)))))
    return f"{v:.{decimals}f}"


def latency(v: float | None, measured: bool) -> str:
    """``0.138 (host)``: measured here; ``59.26 (est.)``: estimated for the device."""
    return "-" if v is None else f"{ms(v)} ({'host' if measured else 'est.'})"


def ops(on: int | None, total: int | None) -> str:
    return "-" if on is None or total is None else f"{on}/{total} ops"


def accelerator_ops(r: TargetResult) -> tuple[int, int] | None:
    """(ops on the accelerator, the artifact's ops): the artifact's operators less those its check left on the
    CPU. Vela counts its own (lowered) operators; the CPU ones are the artifact's, so this is inspect's count."""
    a = r.accelerator
    if a is None:
        return None
    total = sum(r.ops.values()) or a.ops_total
    return total - min(total, max(0, a.ops_total - a.ops_on)), total


def is_share(task: str) -> bool:
    """Whether the task's headline metric is a share shown in percent (classification's top-1)."""
    return task == "classification"


def metric(task: str, v: float | None) -> str:
    """The task's headline metric: top-1 in percent, the others in their own units."""
    if v is None:
        return "-"
    return pct(v) if is_share(task) else (_finite(v) or f"{v:.4g}")


def metric_delta(task: str, d: float | None) -> str:
    """A difference of the headline metric in its own units (``d`` a share for classification: shown in points)."""
    if d is None:
        return "-"
    return pts(100 * d) if is_share(task) else (_finite(d) or f"{d:+.4g}")

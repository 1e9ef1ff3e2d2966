"""Markdown report of one target's result, from the typed record.

Headline values first, then one part per check section, rendered from its data: scalars as rows,
small dicts flattened one level, lists of records as tables. A new check needs no code here.
"""

from __future__ import annotations

from toolchain.config.recipe import step_label
from toolchain.record import Quantization, Section, TargetResult
from toolchain.report import units


def _row(name: str, value) -> str:
    return f"| {name} | {_fmt(value)} |"


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return {True: "yes", False: "no", None: "-"}[v]
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(rows: list[dict]) -> list[str]:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)] + [
        "| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |" for r in rows
    ]


def _data_lines(data: dict) -> tuple[list[str], list[str]]:
    """(rows of the section's table, extra tables for lists of records)."""
    rows, tables = [], []
    for k, v in data.items():
        if isinstance(v, dict) and len(v) <= 8 and all(not isinstance(x, (dict, list)) for x in v.values()):
            rows += [_row(f"{k}.{kk}", vv) for kk, vv in v.items()]
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            tables += ["", f"**{k}**", ""] + _table(v)
        elif not isinstance(v, (dict, list)):
            rows.append(_row(k, v))
    return rows, tables


def section_markdown(s: Section) -> list[str]:
    data = {}
    if s.metrics:
        data["metrics"] = s.metrics.model_dump()
    if s.latency:
        data["latency"] = {k: v for k, v in s.latency.model_dump().items() if v is not None}
    if s.memory:
        data["memory"] = {
            k: v for k, v in s.memory.model_dump(exclude={"details"}).items() if v is not None
        } | s.memory.details
    if s.accelerator:
        # the check's own count (Vela counts its lowered ops); the headline counts the artifact's
        data[f"ops on {s.accelerator.name}, as the check counts them"] = (
            f"{s.accelerator.ops_on}/{s.accelerator.ops_total}"
        )
    data.update(s.details)
    data["failures"] = [f.model_dump() for f in s.failures]
    rows, tables = _data_lines(data)
    head = [f"## {s.check}" + (f" ({s.runtime})" if s.runtime else ""), ""]
    return head + (["| field | value |", "|---|---|"] + rows if rows else []) + tables + [""]


OPTIMIZED = {
    "eq": "EasyQuant: each linear layer's input range and weight clipping chosen for the best output cosine",
    "admm": "ADMM: each linear layer's weights on the grid that reconstruct its output best",
    "adaround": "AdaRound: each weight rounded up or down, learnt to reconstruct its layer's output",
}


def _optimization_lines(o: dict) -> list[str]:
    """``quantization.optimization``: what was optimized, how long it took, each layer's output error (relative
    squared error on the calibration rows, int8 or 4-bit weights on quantized inputs) with nearest rounding and
    after."""
    rows = o.get("layers", [])
    eq = o.get("method") == "eq"
    lines = [
        f"**{OPTIMIZED.get(o.get('method'), o.get('method'))}** ({len(rows)} layers, {o.get('seconds', 0):.1f} s, "
        f"{o.get('rows')} output positions per layer). The layer's output error (relative squared error) with the "
        "quantizer's own choice and after:",
        "",
        "| layer | op | weight bits | error before | error after |"
        + (" input range kept | weights clipped |" if eq else ""),
        "|---|---|---|---|---|" + ("---|---|" if eq else ""),
    ]
    for r in rows:
        line = f"| `{r['layer']}` | {r['op']} | {r['bits']} | {r['error_before']:.3g} | {r['error_after']:.3g} |"
        if eq:
            line += f" {100 * r['input_range_share']:.0f} % | {100 * r['weights_clipped']:.2f} % |"
        lines.append(line)
    return lines + [""]


def quantization_markdown(q: Quantization, size_bytes: int) -> list[str]:
    method = q.method + (f" {q.percentile}" if q.percentile is not None else "")
    lines = [
        "## Calibration",
        "",
        f"Ranges by **{method}**, {q.activations} activations, {q.samples} calibration samples, "
        f"{q.tensors} activation tensors: {q.clipped_tensors} clip calibration values (at most "
        f"{100 * q.clipped_share_max:.3f} % of a tensor's, {100 * q.clipped_share_mean:.4f} % on average); "
        f"the calibration values span {q.utilisation_mean:.0%} of each tensor's grid on average.",
        "",
    ]
    if q.most_clipped:
        lines += ["| tensor | range | calibration min / max | values clipped |", "|---|---|---|---|"]
        lines += [
            f"| `{c.tensor}` | [{c.range[0]:.4g}, {c.range[1]:.4g}] | {c.observed[0]:.4g} / {c.observed[1]:.4g} | "
            f"{100 * c.clipped:.3f} % |"
            for c in q.most_clipped
        ]
        lines.append("")
    for x in q.inputs:
        lines += [
            f"Input `{x['input']}`: range [{x['range'][0]:.4g}, {x['range'][1]:.4g}] (int8 scale {x['scale']:.4g}; "
            f"calibration values {x['observed'][0]:.4g} / {x['observed'][1]:.4g}"
            + (f", {100 * x['clipped']:.2f} % clipped" if x["clipped"] else "")
            + ").",
            "",
        ]
    for d in q.calibration_drift:
        lines += [
            f"**Calibration data unlike the training data**, input `{d['input']}`: {d['outlying_samples']} samples "
            f"({100 * d['outlying_share']:.1f} %, first {', '.join(map(str, d['first_samples']))}) far outside the "
            f"training range [{d['training_range'][0]:.4g}, {d['training_range'][1]:.4g}] (calibration: "
            f"[{d['calibration_range'][0]:.4g}, {d['calibration_range'][1]:.4g}]): the input's scale "
            f"{d['scale_ratio']:.1f}x the training data's" + ("; dropped before calibrating." if d["dropped"] else "."),
            "",
        ]
    if q.guarded:
        lines += [
            f"**{len(q.guarded)} tensors kept minmax**: their {method} range would have clipped more than "
            "quantize.max_clipped of their calibration values:",
            "",
            "| tensor | the range it would have been | calibration min / max | would clip |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| `{c.tensor}` | [{c.range[0]:.4g}, {c.range[1]:.4g}] | {c.observed[0]:.4g} / {c.observed[1]:.4g} | "
            f"{100 * c.clipped:.2f} % |"
            for c in q.guarded
        ]
        lines.append("")
    for ops, what in (
        (q.float_ops, "Kept in float (quantize.float_layers)"),
        (q.int16_ops, "16-bit activations (quantize.int16_layers)"),
        (q.int4_ops, "4-bit weights (quantize.int4_layers)"),
    ):
        if ops:
            lines += [f"{what}: {len(ops)} ops: " + ", ".join(f"`{o}`" for o in ops), ""]
    if q.int4_selection:
        lines += _int4_selection_lines(q.int4_selection)
    if q.optimization:
        lines += _optimization_lines(q.optimization)
    if q.int8_bytes:
        lines += [
            f"Cost of the exceptions: {(size_bytes - q.int8_bytes) / units.KB:+,.1f} KB against the same ranges all "
            f"in int8 ({units.kb_text(q.int8_bytes)}); their latency is this report's, the all-int8 plan's is the plan "
            "search's first rung (or `toolchain compare --plans`).",
            "",
        ]
    if q.equalization:
        e = q.equalization
        skipped = "; ".join(f"{n} {why}" for why, n in e.get("skipped", {}).items()) or "none"
        lines += [
            f"Cross-layer equalization: {len(e.get('pairs', []))} layer pairs (channel range spread, median: "
            f"{e.get('range_ratio_before', 0):.1f}x before, {e.get('range_ratio_after', 0):.1f}x after), "
            f"{e.get('absorbed', 0)} channels' bias absorbed; skipped: {skipped}.",
            "",
        ]
    if q.smoothing:
        lines += [
            f"SmoothQuant (alpha {q.smoothing['alpha']}): activation channel range (largest channel maximum over the "
            "median one) before -> after, per layer:",
            "",
            "| layer | into | range before | range after | max before | max after |",
            "|---|---|---|---|---|---|",
            *(
                f"| {r['layer']} | {', '.join(r['into'])} | {r['channel_range_before']:.1f}x | "
                f"{r['channel_range_after']:.1f}x | {r['max_before']:.4g} | {r['max_after']:.4g} |"
                for r in q.smoothing["layers"]
            ),
            "",
        ]
    if q.bias_correction:
        c = q.bias_correction
        lines += [
            f"Bias correction: {c['layers']} layers (mean shift removed {c['mean_abs_shift']:.3g}, largest "
            f"{c['max_abs_shift']:.3g}); {c['skipped']} layers without a bias left alone.",
            "",
        ]
    return lines


def _int4_selection_lines(s: dict) -> list[str]:
    kept = [r for r in s["candidates"] if r["chosen"]]
    return [
        f"4-bit weights chosen by measurement (quantize.int4_select: at most {s['max_drop']} points of top-1 on "
        f"{s['samples']} calibration samples against {s['against']}, and the output at least {s['min_snr_db']} dB "
        f"SNR against all-int8's): {len(kept)} of {len(s['candidates'])} candidates, {units.kb(s['int8_bytes'])} -> "
        f"{units.kb_text(s['bytes'])}, calibration top-1 {units.pct(s['int8_top1'])} -> {units.pct(s['top1'])}"
        + (f", output SNR {s['snr_db']:.1f} dB" if s.get("snr_db") is not None else "")
        + ". Least sensitive first:",
        "",
        "| op output | alone: KB saved | alone: output SNR dB | with it: top-1 | with it: SNR dB | 4-bit |",
        "|---|---|---|---|---|---|",
        *(
            f"| `{r['op']}` | {units.kb(r['saved_bytes'])} | {r['snr_db']:.1f} | {units.pct(r['top1_with'])} | "
            f"{r['snr_with_db']:.1f} | {'yes' if r['chosen'] else 'no'} |"
            for r in s["candidates"]
        ),
        "",
    ]


_SHARES = ("top5", "top1_agreement")  # shown in percent
_EXTRA_METRICS = {
    "top5": "top-5",
    "top1_agreement": "top-1 agreement with the reference (a language model: the next token, every step)",
    "r2": "R²",
    "reference_r2": "R² of the reference",
    "rmse_labels": "RMSE against the labels",
    "mean_error": "mean reconstruction error",
    "cosine": "cosine similarity to the reference",
    "snr_db": "SNR against the reference (dB, lowest output)",
}


def _metric_rows(m) -> list[str]:
    """The metrics table's rows for the task's numbers: headline, its reference, the other metrics, samples."""
    if not m:
        return [_row("metrics", "none: the runtime could not run the artifact")]
    name, value, ref, higher = m.headline
    name = name.replace("top1", "top-1")
    rows = [_row("task", m.task)]
    if value is not None:
        drop = m.drop
        by = "" if drop is None else units.metric_delta(m.task, abs(drop)).lstrip("+")
        delta = "" if drop is None else f" ({by} {'worse' if drop > 0 else 'better'} than the reference)"
        rows.append(_row(f"{name} ({'higher' if higher else 'lower'} is better)", units.metric(m.task, value) + delta))
    if ref is not None:
        rows.append(_row(f"{name} of the float reference", units.metric(m.task, ref)))
    rows += [
        _row(label, units.pct(v) if k in _SHARES else f"{v:.6g}")
        for k, label in _EXTRA_METRICS.items()
        if (v := getattr(m, k)) is not None
    ]
    if m.rmse is not None:
        rows.append(_row("RMSE / max abs error vs the reference", f"{m.rmse:.6f} / {m.max_abs:.6f}"))
    if m.per_class:
        rows.append(_row("per-class accuracy", ", ".join(units.pct(a) for a in m.per_class)))
    rows.append(_row("eval samples", m.samples))
    return rows


def _device_rows(r: TargetResult) -> list[str]:
    """The metrics table's rows for the device: latency, RAM and flash against the budget, accelerator share."""
    rows, lat, mem = [], r.latency, r.memory
    if lat and lat.ms is not None:
        measured = lat.kind == "measured"
        spread = (
            f" (median; p90 {units.ms(lat.p90)} ms, {lat.threads} threads, measured {lat.measured_at})"
            if measured
            else ""
        )
        label = "latency (host: measured on this machine)" if measured else "latency (estimate)"
        rows.append(_row(label, f"{units.ms(lat.ms)} ms{spread} — {lat.source}"))
    if mem:
        for name, v, b in (
            ("RAM", mem.ram_bytes, r.budget.get("ram_bytes")),
            ("flash", mem.flash_bytes, r.budget.get("flash_bytes")),
        ):
            if v is not None:
                budget = f" of {units.kb_text(b)}" if b else ""
                rows.append(_row(name, f"{units.kb_text(v)}{budget} ({v:,} bytes)"))
        d = mem.details
        if "kv_cache_bytes" in d:  # a decoder language model
            rows.append(
                _row(
                    f"KV cache at the full context ({d['context']} tokens)",
                    f"{d['kv_cache_bytes']:,} bytes ({d['kv_cache_bytes_per_token']:,} a token; RAM above: cache + "
                    "model)",
                )
            )
            if d.get("max_context") is not None:
                rows.append(
                    _row(
                        "longest context whose cache fits the RAM",
                        f"{d['max_context']:,} tokens (the model's positions: {d['context']})",
                    )
                )
    if r.accelerator:
        on, total = units.accelerator_ops(r)
        rows.append(_row("ops on the accelerator", f"{units.ops(on, total)} of the artifact ({r.accelerator.name})"))
    return rows


def _plan_search_lines(rungs: list[dict], task: str) -> list[str]:
    """The ``quantize.mode: auto`` rungs tried, one table row each."""
    lines = ["## Plan search (quantize.mode: auto)", "", "| plan | result | metric | drop | size KB | latency ms |"]
    lines.append("|---|---|---|---|---|---|")
    for p in rungs:
        lat = "-" if p["latency_ms"] is None else units.latency(p["latency_ms"], p["latency_kind"] == "measured")
        verdict = "meets the gates" if p["passed"] else "fails: " + "; ".join(p["failures"])[:160]
        lines.append(
            f"| {p['plan']} | {verdict} | {units.metric(task, p['metric'])} | {units.metric_delta(task, p['drop'])} | "
            f"{units.kb(p['size_bytes'])} | {lat} |"
        )
    lines.append("")
    return lines


def target_markdown(recipe: str, r: TargetResult) -> str:
    """A target's ``report.md``: headline, metrics table, each check's section, plan search, quantization,
    operators and gates."""
    lines = [
        f"# {recipe} on {r.target}",
        "",
        f"**{'PASSED' if r.passed else 'FAILED'}** — `{r.artifact}` ({r.mode}, I/O {r.io_type}), checks: "
        f"{', '.join(r.checks)}; "
        f"metrics from {r.runtime or 'no runtime'}.",
        "",
        "| metric | value |",
        "|---|---|",
        _row("size", f"{units.kb_text(r.size_bytes)} ({r.size_bytes:,} bytes; 1 KB = 1024 bytes)"),
    ]
    lines += _metric_rows(r.metrics)
    lines += _device_rows(r)
    lines.append("")
    for s in r.sections.values():
        lines += section_markdown(s)
    if r.plan_search:
        lines += _plan_search_lines(r.plan_search, r.metrics.task if r.metrics else "classification")
    if r.quantization:
        lines += quantization_markdown(r.quantization, r.size_bytes)
    lines += ["## Operators", "", "| op | count |", "|---|---|"]
    lines += [_row(op, n) for op, n in sorted(r.ops.items())]
    lines += ["", "## Gates", ""]
    lines += [f"- FAILED [{f.kind}] {f.message}" for f in r.failures] or ["- all gates passed"]
    return "\n".join(lines) + "\n"


def compression_markdown(recipe: str, steps: list[dict]) -> str:
    """The compression steps of a build: what each did (scalars), per-layer tables (factorized ranks, unique
    values, channels removed) and the fine-tuning curves' first and last values."""
    lines = [f"# {recipe}: compression", ""]
    for i, step in enumerate(steps, 1):
        rows, tables = _data_lines({k: v for k, v in step.items() if k != "history"})
        for k, v in step.items():  # per-layer dicts too long for rows: a two-column table
            if isinstance(v, dict) and len(v) > 8 and all(not isinstance(x, (dict, list)) for x in v.values()):
                tables += ["", f"**{k}**", ""] + _table([{"layer": kk, k: vv} for kk, vv in v.items()])
        history = step.get("history", {})
        for k, v in history.items():
            if isinstance(v, list) and v and all(isinstance(x, float) for x in v):
                rows.append(_row(f"fine-tune {k} (first -> last of {len(v)} epochs)", f"{v[0]:.4g} -> {v[-1]:.4g}"))
        lines += [f"## {i}. {step_label(step)}", "", "| field | value |", "|---|---|", *rows, *tables, ""]
        lines += _terms_table(history)
    return "\n".join(lines)


def _terms_table(history: dict) -> list[str]:
    """The distillation's loss terms epoch by epoch (the toolchain's own step reports each: ``loss_<term>``), with
    each term's weight in the total."""
    names = [k for k in history if k.startswith("loss_") and isinstance(history[k], list)]
    if not names:
        return []
    weights = history.get("terms", {})
    heads = [n[5:] for n in names]
    lines = ["**loss terms per epoch** (weights: " + ", ".join(f"{n} {w:g}" for n, w in weights.items()) + ")", ""]
    lines += ["| epoch | " + " | ".join(heads) + " |", "|" + "---|" * (len(heads) + 1)]
    for e in range(len(history[names[0]])):
        lines.append(f"| {e + 1} | " + " | ".join(f"{history[n][e]:.4g}" for n in names) + " |")
    return lines + [""]

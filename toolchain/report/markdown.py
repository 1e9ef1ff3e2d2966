"""Markdown report of one target's result."""

from __future__ import annotations


def _row(name: str, value) -> str:
    return f"| {name} | {value} |"


def target_markdown(recipe: str, r: dict) -> str:
    m, ref, lat = r["metrics"], r["reference"], r["latency_ms"]
    nan = float("nan")
    m = m or {"top1": nan, "top1_agreement": nan, "cosine": nan, "rmse": nan, "max_abs": nan, "samples": 0}
    lines = [
        f"# {recipe} on {r['target']}",
        "",
        f"**{'PASSED' if r['passed'] else 'FAILED'}** — `{r['artifact']}` ({r['mode']}, I/O {r['io_type']}), validated on {r['runtime']}.",
        "",
        "| metric | value |",
        "|---|---|",
        _row("size", f"{r['size_bytes']:,} bytes ({r['size_bytes'] / 1024:.1f} KB)"),
        _row("top-1 (float reference)", f"{ref['top1']:.4f}"),
        _row("top-1 (artifact)", f"{m['top1']:.4f} ({(m['top1'] - ref['top1']) * 100:+.2f} points)"),
        _row("top-1 agreement with reference", f"{m['top1_agreement']:.4f}"),
        _row("cosine similarity of outputs", f"{m['cosine']:.6f}"),
        _row("RMSE / max abs error", f"{m['rmse']:.6f} / {m['max_abs']:.6f}"),
        _row("eval samples", m["samples"]),
    ]
    if "median" in lat:
        lines.append(_row("latency median / p90", f"{lat['median']:.3f} / {lat['p90']:.3f} ms ({lat['source']}, {lat.get('threads', 1)} threads)"))
    if "estimate" in lat:
        lines.append(_row("latency", f"{lat['estimate']:.3f} ms ({lat['source']})"))
    if r.get("metrics_vs_litert"):
        v = r["metrics_vs_litert"]
        lines.append(_row("tflite-micro vs LiteRT", f"agreement {v['top1_agreement']:.4f}, cosine {v['cosine']:.6f}, max abs {v['max_abs']:.6f}"))
    for section in ("memory", "npu", "edgetpu", "gpu"):
        for k, v in (r.get(section) or {}).items():
            if not isinstance(v, (dict, list)):
                lines.append(_row(f"{section}.{k}", f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else v))
    if r.get("npu", {}).get("cpu_fallbacks"):
        lines += ["", "## Ops Vela left on the CPU", ""] + [f"- {f['op']} `{f['tensor']}`: {f['reason']}" for f in r["npu"]["cpu_fallbacks"]]
    if r.get("edgetpu"):
        lines += ["", "## Edge TPU placement", "", "| # | op | on | reason |", "|---|---|---|---|"]
        lines += [f"| {p['index']} | {p['op']} | {p['on']} | {p['reason']} |" for p in r["edgetpu"]["placement"]]
    if r.get("gpu", {}).get("incompatible_ops"):
        lines += ["", "## Ops the GPU delegate does not take", ""] + [f"- #{i['index']} {i['op']}: {i['reason']}" for i in r["gpu"]["incompatible_ops"]]
    lines += ["", "## Operators", "", "| op | count |", "|---|---|"]
    lines += [_row(op, n) for op, n in sorted(r["ops"].items())]
    lines += ["", "## Gates", ""]
    lines += [f"- FAILED {f}" for f in r["failures"]] or ["- all gates passed"]
    return "\n".join(lines) + "\n"

"""The comparison as one self-contained HTML page: the table and matplotlib plots inlined, no network."""

from __future__ import annotations

import base64
import io
from html import escape

from toolchain.report.compare import cell


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _plots(table: dict) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table["rows"]
    out = []
    fig, ax = plt.subplots(figsize=(6.4, 4))
    heading = next(c["heading"] for c in table["columns"] if c["key"] == "metric")
    scale = 100 if table.get("task", "classification") == "classification" else 1
    for x in rows:
        if x["metric"] is None or x["latency_ms"] is None:
            continue
        y, outline = x["metric"] * scale, "black" if x["target"] in table["pareto"] else "none"
        ax.scatter(x["latency_ms"], y, marker="o" if x["latency_measured"] else "^", s=60, edgecolors=outline)
        ax.annotate(x["target"], (x["latency_ms"], y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("latency per inference, ms (o measured on host, ^ estimate)")
    ax.set_ylabel(f"{heading}{' %' if scale == 100 else ''}")
    ax.set_title(f"{heading} vs latency (outlined: Pareto front)")
    ax.grid(alpha=0.3)
    out.append(("Accuracy vs latency", _png(fig)))
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, (used, budget, title) in zip(
        axes, (("ram_bytes", "ram_budget_bytes", "RAM"), ("flash_bytes", "flash_budget_bytes", "flash")), strict=True
    ):
        names = [x["target"] for x in rows]
        share = [(x[used] / x[budget] * 100) if x[used] is not None and x[budget] else 0 for x in rows]
        colors = ["tab:red" if s > 100 else "tab:green" for s in share]
        ax.barh(names, share, color=colors)
        ax.axvline(100, color="black", linestyle="--", linewidth=1)
        for i, x in enumerate(rows):
            label = (
                f"{x[used] / 1024:,.0f} / {x[budget] / 1024:,.0f} KB" if x[used] is not None and x[budget] else "n/a"
            )
            ax.text(max(share[i], 0) + 2, i, label, va="center", fontsize=7)
        ax.set_xlabel(f"{title} used, % of the target's budget")
        ax.set_title(f"{title} vs budget")
        ax.set_xlim(0, max(120, max(share, default=0) * 1.35))
    fig.tight_layout()
    out.append(("Memory vs budget per target", _png(fig)))
    plt.close(fig)
    return out


CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f0f0f0}td.l{text-align:left}
td.best{font-weight:bold;background:#e6f4e6}tr.pareto td:first-child{border-left:4px solid #2a7}
.fail{color:#b00}img{max-width:100%;margin:1em 0}small{color:#666}"""


def render(table: dict) -> str:
    heads = "".join(f"<th>{escape(c['heading'])}</th>" for c in table["columns"])
    body = []
    for x in table["rows"]:
        cells = []
        for c in table["columns"]:
            classes = ["l"] if c["better"] is None else []
            if x["target"] in table["best"].get(c["key"], []) and len(table["rows"]) > 1:
                classes.append("best")
            if c["key"] in ("fits", "passed") and not x[c["key"]]:
                classes.append("fail")
            cells.append(f'<td class="{" ".join(classes)}">{escape(cell(table, x, c["key"]).removesuffix(" *"))}</td>')
        cls = "pareto" if x["target"] in table["pareto"] else ""
        body.append(f'<tr class="{cls}">{"".join(cells)}</tr>')
    failures = "".join(f"<li>{escape(x['target'])}: {escape(f)}</li>" for x in table["rows"] for f in x["failures"])
    sources = "".join(f"<li>{escape(x['target'])}: {escape(x['latency_source'])}</li>" for x in table["rows"])
    plots = "".join(
        f'<h2>{escape(title)}</h2><img alt="{escape(title)}" src="data:image/png;base64,{data}">'
        for title, data in _plots(table)
    )
    where = table.get("placement")
    placed = ""
    if where:
        from toolchain.report.compare import placement_cell, placement_reasons

        head = "".join(f"<th>{escape(t)}</th>" for t in where["targets"])
        rows = "".join(
            f'<tr><td class="l">{escape(x["op"])}</td>'
            + "".join(f"<td>{escape(placement_cell(x['targets'][t]))}</td>" for t in where["targets"])
            + "</tr>"
            for x in where["rows"]
        )
        why = "".join(f"<li>{escape(r)}</li>" for r in placement_reasons(where))
        placed = (
            f'<h2>Op placement on the NPU (Vela)</h2><table id="placement"><thead><tr><th>op</th>{head}</tr></thead>'
            f"<tbody>{rows}</tbody></table>" + (f"<h3>Left on the CPU, and why</h3><ul>{why}</ul>" if why else "")
        )
    recipe = escape(table["recipe"])
    what = "plans x targets" if "plans" in table else "targets"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{recipe}: {what} compared</title><style>{CSS}</style></head>
<body><h1>{recipe}: {what} compared</h1>
<p><small>{table["eval_samples"]} eval samples. Bold: best in column.
Green left edge: Pareto front (accuracy vs latency vs memory).
Pareto front: {escape(", ".join(table["pareto"]))}.</small></p>
<table id="comparison"><thead><tr>{heads}</tr></thead><tbody>{"".join(body)}</tbody></table>
<h3>Latency sources</h3><ul>{sources}</ul>
{f'<h3 class="fail">Failures</h3><ul>{failures}</ul>' if failures else ""}
{placed}
{plots}
</body></html>
"""

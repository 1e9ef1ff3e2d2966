"""The comparison as one self-contained HTML page: the table and matplotlib plots inlined, no network."""

from __future__ import annotations

import base64
import io
import math
from html import escape

from toolchain.report.compare import cell


def pyplot():
    """matplotlib's pyplot, drawing off-screen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


#: where a point's label may go, tried in turn: offset in points, alignment; then further up or down, joined to its
#: point by a thin line (points in a row at one height: many targets at the same top-1)
OFFSETS = [
    ((6, 4), "left", "bottom"),
    ((-6, 4), "right", "bottom"),
    ((6, -4), "left", "top"),
    ((-6, -4), "right", "top"),
    ((0, 8), "center", "bottom"),
    ((0, -8), "center", "top"),
] + [
    ((dx, sign * dy), ha, "bottom" if sign > 0 else "top")
    for dy in range(18, 120, 12)
    for sign in (1, -1)
    for dx, ha in ((0, "center"), (10, "left"), (-10, "right"))
]


def label_box(t, renderer):
    """An annotation's own text box, without the line to its point."""
    from matplotlib.text import Text

    t.update_positions(renderer)
    return Text.get_window_extent(t, renderer)


def place_labels(ax, points: list[tuple[float, float]], labels: list[str], fontsize: float = 8) -> None:
    """Annotate each point with its label where it stays inside the axes and overlaps no label placed before it
    (the first place inside the axes when none is free). Call once the figure's layout is final."""
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    taken = []
    for xy, label in zip(points, labels, strict=True):
        tried = []
        for offset, ha, va in OFFSETS:
            far = abs(offset[1]) > 8
            t = ax.annotate(
                label,
                xy,
                textcoords="offset points",
                xytext=offset,
                ha=ha,
                va=va,
                fontsize=fontsize,
                arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.5, "shrinkA": 0} if far else None,
            )
            t.set_bbox({"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.7})
            box = label_box(t, renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(b) for b in taken):
                break
            tried.append((not inside, t, box))
            t.remove()
        else:
            _, t, box = min(tried, key=lambda x: x[0])
            ax.add_artist(t)
        taken.append(box)


def _log_ticks(ax, lo: float, hi: float) -> None:
    """A log x-axis labelled in plain numbers: 1, 2, 5 per decade (0.5, 1, 2, 5, 10 ms), 1 per decade when wide."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    subs = (1.0, 2.0, 5.0) if math.log10(hi / lo) <= 4 else (1.0,)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs=tuple(range(2, 10))))
    ax.xaxis.set_minor_formatter(NullFormatter())


def scatter(table: dict):
    """The headline metric against latency, one labelled point per target (o measured, ^ estimated, outlined on
    the Pareto front), every label inside the axes."""
    from matplotlib.lines import Line2D

    plt = pyplot()
    heading = next(c["heading"] for c in table["columns"] if c["key"] == "metric")
    scale = 100 if table.get("task", "classification") == "classification" else 1
    rows = [
        x
        for x in table["rows"]
        if x["metric"] is not None
        and x["latency_ms"] is not None
        and math.isfinite(x["metric"])
        and math.isfinite(x["latency_ms"])
        and x["latency_ms"] > 0
    ]
    fig, ax = plt.subplots(figsize=(7.5, 4))
    points = [(x["latency_ms"], x["metric"] * scale) for x in rows]
    for x, (lat, y) in zip(rows, points, strict=True):
        outline = "black" if x["target"] in table["pareto"] else "none"
        ax.scatter(lat, y, marker="o" if x["latency_measured"] else "^", s=60, edgecolors=outline, linewidths=1.5)
    ax.set_xscale("log")
    if points:  # room for the labels: a factor of 2.5 each side on x, 15 % of the span (at least 0.5) on y
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.set_xlim(min(xs) / 2.5, max(xs) * 2.5)
        pad = max(0.15 * (max(ys) - min(ys)), 0.5 if scale == 100 else 0.05 * max(map(abs, ys)) or 0.01)
        ax.set_ylim(min(ys) - pad, max(ys) + pad)
        _log_ticks(ax, min(xs) / 2.5, max(xs) * 2.5)
    ax.set_xlabel("latency per inference, ms (log scale)")
    ax.set_ylabel(f"{heading}{' %' if scale == 100 else ''}")
    ax.set_title(f"{heading} vs latency")
    ax.grid(alpha=0.3, which="both")
    grey = {"linestyle": "", "markersize": 8, "color": "grey"}
    ax.legend(
        handles=[
            Line2D([], [], marker="o", label="measured on this host", **grey),
            Line2D([], [], marker="^", label="estimated for the device", **grey),
            Line2D(
                [],
                [],
                marker="o",
                markerfacecolor="none",
                markeredgecolor="black",
                label="Pareto front",
                **{**grey, "color": "black"},
            ),
        ],
        loc="upper left",
        bbox_to_anchor=(1.02, 1),
        borderaxespad=0,
        fontsize=8,
    )
    fig.tight_layout()
    fig.canvas.draw()
    place_labels(ax, points, [x["target"] for x in rows])
    return fig


def memory_bars(table: dict):
    """RAM and flash used per target as a share of its budget; a bar too small to see gets a minimum width, and
    each is labelled with the sizes and the share."""
    from toolchain.report.units import kb, pct

    plt = pyplot()
    rows = table["rows"]
    names = [x["target"] for x in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.5 * len(rows) + 1.6))
    pairs = (("ram_bytes", "ram_budget_bytes", "RAM"), ("flash_bytes", "flash_budget_bytes", "flash"))
    for ax, (used, budget, title) in zip(axes, pairs, strict=True):
        known = [x[used] is not None and bool(x[budget]) for x in rows]
        share = [x[used] / x[budget] * 100 if ok else 0.0 for x, ok in zip(rows, known, strict=True)]
        right = max(120, max(share, default=0) * 1.1)
        width = [max(s, right * 0.02) if ok else 0 for s, ok in zip(share, known, strict=True)]  # visible
        ax.barh(names, width, color=["tab:red" if s > 100 else "tab:green" for s in share])
        ax.axvline(100, color="black", linestyle="--", linewidth=1)
        ax.set_xlim(0, right)
        ax.invert_yaxis()
        ax.set_xlabel(f"{title} used, % of the target's budget")
        ax.set_title(f"{title} vs budget")
    fig.tight_layout()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax, (used, budget, _) in zip(axes, pairs, strict=True):
        frame = ax.get_window_extent(renderer)
        for i, (x, bar) in enumerate(zip(rows, ax.patches, strict=True)):
            label = (
                f"{kb(x[used])} / {kb(x[budget])} KB, {pct(x[used] / x[budget])}"
                if bar.get_width()
                else ("not measured" if x[used] is None else f"{kb(x[used])} KB, no budget")
            )
            end = bar.get_width()
            t = ax.annotate(label, (end, i), textcoords="offset points", xytext=(3, 0), va="center", fontsize=7)
            if t.get_window_extent(renderer).x1 > frame.x1:  # no room right of the bar: inside its end
                t.remove()
                ax.annotate(
                    label,
                    (end, i),
                    textcoords="offset points",
                    xytext=(-3, 0),
                    ha="right",
                    va="center",
                    fontsize=7,
                    color="white",
                )
    return fig


def _plots(table: dict) -> list[tuple[str, str]]:
    plt = pyplot()
    out = []
    for title, draw in (("Accuracy vs latency", scatter), ("Memory vs budget per target", memory_bars)):
        fig = draw(table)
        out.append((title, _png(fig)))
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

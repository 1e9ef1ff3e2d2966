"""The search record (``toolchain.search/1``) as tables on stdout and one self-contained HTML page: per target
the Pareto front of the feasible trials (the point to ship first) and a plot of every trial."""

from __future__ import annotations

from html import escape

from toolchain.report import units
from toolchain.report.table import Column, box_table, footer, terminal_width


def _metric(trial: dict) -> str:
    r = trial.get("result") or {}
    v = r.get("metric")
    if v is None:
        return "-"
    return units.pct(v) if r.get("task", "classification") == "classification" else f"{v:.4g}"


def _latency(trial: dict) -> str:
    r = trial.get("result") or {}
    return units.latency(r.get("latency_ms"), r.get("latency_kind") == "measured") if r else "-"


def _params(trial: dict) -> str:
    from toolchain.search.space import short

    return short(trial.get("params") or {})


COLUMNS = [
    Column("#", "right"),
    Column("point", wrap=True),
    Column("top-1", "right"),  # the headline metric (top-1 for a classifier)
    Column("latency ms", "right"),
    Column("RAM KB", "right", priority=3),
    Column("flash KB", "right", priority=2),
    Column("arena KB", "right", priority=1),
]


def _row(trial: dict, best: int | None) -> list[str]:
    r = trial.get("result") or {}
    mark = "*" if trial["number"] == best else ""
    return [
        f"{trial['number']}{mark}",
        _params(trial),
        _metric(trial),
        _latency(trial),
        units.kb(r.get("ram_bytes")),
        units.kb(r.get("flash_bytes")),
        units.kb(r.get("arena_bytes")),
    ]


def why(trial: dict) -> str:
    """Why a trial is not a candidate: its failure or pruning, else the constraints it breaks (the gates by name)."""
    if trial.get("reason"):
        return trial["reason"]
    over = [k for k, v in (trial.get("constraints") or {}).items() if v > 0]
    failures = (trial.get("result") or {}).get("failures") or []
    said = [k for k in over if k != "gates"] + ([f.split(":")[0] for f in failures] if "gates" in over else [])
    return ", ".join(said)


def summary(t: dict) -> str:
    c = t["counts"]
    return f"{c['finished']} trials finished: {c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed" + (
        f" ({c['interrupted']} interrupted, run again)" if c.get("interrupted") else ""
    )


def text(record: dict, wide: bool = False) -> str:
    """Per target: the front, best first (marked *), or the closest trial when none is feasible."""
    width = None if wide else terminal_width()
    out = []
    for t in record["targets"]:
        by = {x["number"]: x for x in t["trials"]}
        if t["front"]:
            title = f"{record['recipe']} on {t['target']}: Pareto front, {len(t['front'])} of the feasible trials"
            rows = [_row(by[n], t["best"]) for n in t["front"]]
            notes = [summary(t), f"* the point to ship: trial {t['best']} (--write-best writes its recipe)"]
        else:
            title = f"{record['recipe']} on {t['target']}: no trial met the constraints"
            closest = by.get(t["closest"]) if t["closest"] is not None else None
            rows = [_row(closest, None)] if closest else []
            why = ", ".join(f"{k} {v:+.3g}" for k, v in (closest or {}).get("constraints", {}).items() if v > 0)
            notes = [summary(t)] + ([f"closest: trial {closest['number']}, over by {why}"] if closest else [])
        out.append(box_table(title, COLUMNS, rows, width) + footer(notes, width))
    return "\n".join(out)


CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f0f0f0}td.l{text-align:left}
tr.front td{background:#eef7ee}tr.best td{font-weight:bold}img{max-width:100%}"""


def figure(record: dict, t: dict):
    """The headline metric against latency: every complete trial (o feasible, x not), the front joined by a line
    and numbered, the best one starred."""
    from matplotlib.lines import Line2D

    from toolchain.report.html import _log_ticks, place_labels, pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4))
    done = [x for x in t["trials"] if x["state"] == "complete" and x.get("result")]
    pts = {
        x["number"]: (x["result"]["latency_ms"], 100 * x["result"]["metric"])
        for x in done
        if x["result"].get("latency_ms") and x["result"].get("metric") is not None
    }
    for x in done:
        if x["number"] in pts:
            lat, y = pts[x["number"]]
            if x["feasible"]:
                ax.scatter(lat, y, marker="o", s=30, color="tab:blue", alpha=0.6)
            else:
                ax.scatter(lat, y, marker="x", s=30, color="tab:grey", alpha=0.6)
    front = [n for n in t["front"] if n in pts]
    if front:
        line = sorted(pts[n] for n in front)
        ax.plot([p[0] for p in line], [p[1] for p in line], color="tab:green", linewidth=1, zorder=1)
        ax.scatter([pts[n][0] for n in front], [pts[n][1] for n in front], s=60, facecolors="none", edgecolors="k")
    if t["best"] in pts:
        ax.scatter(*pts[t["best"]], marker="*", s=160, color="tab:orange", edgecolors="k", zorder=3)
    ax.set_xscale("log")
    if pts:
        xs, ys = [p[0] for p in pts.values()], [p[1] for p in pts.values()]
        ax.set_xlim(min(xs) / 2, max(xs) * 2)
        pad = max(0.15 * (max(ys) - min(ys)), 0.5)
        ax.set_ylim(min(ys) - pad, max(ys) + pad)
        _log_ticks(ax, min(xs) / 2, max(xs) * 2)
    ax.set_xlabel("latency per inference, ms (log scale)")
    ax.set_ylabel("top-1 %")
    ax.set_title(f"{t['target']}: every trial, the front joined")
    ax.grid(alpha=0.3, which="both")
    handles = [
        Line2D([], [], marker="o", linestyle="", color="tab:blue", label="feasible"),
        Line2D([], [], marker="x", linestyle="", color="tab:grey", label="over a constraint"),
        Line2D([], [], marker="o", linestyle="-", color="tab:green", markerfacecolor="none", label="Pareto front"),
        Line2D([], [], marker="*", linestyle="", color="tab:orange", markersize=10, label="the point to ship"),
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, fontsize=8)
    fig.tight_layout()
    fig.canvas.draw()
    place_labels(ax, [pts[n] for n in front], [f"#{n}" for n in front])
    return fig


def html(record: dict) -> str:
    from toolchain.report.html import _png, pyplot

    parts = []
    for t in record["targets"]:
        fig = figure(record, t)
        plot = _png(fig)
        pyplot().close(fig)
        rows = []
        front = set(t["front"])
        for x in sorted(t["trials"], key=lambda x: x["number"]):
            cls = " ".join(c for c, on in (("front", x["number"] in front), ("best", x["number"] == t["best"])) if on)
            cells = _row(x, t["best"]) + [x["state"], "yes" if x["feasible"] else "no", why(x)]
            rows.append(
                f'<tr class="{cls}">'
                + "".join(f'<td class="{"l" if i in (1, 9) else ""}">{escape(c)}</td>' for i, c in enumerate(cells))
                + "</tr>"
            )
        heads = "".join(f"<th>{escape(c.header)}</th>" for c in COLUMNS) + "<th>state</th><th>feasible</th><th>why</th>"
        parts.append(
            f"<h2>{escape(t['target'])}</h2><p>{escape(summary(t))}; study <code>{escape(t['study'])}</code></p>"
            f'<img alt="{escape(t["target"])}: trials" src="data:image/png;base64,{plot}">'
            f'<table class="trials" id="trials-{escape(t["target"])}"><thead><tr>{heads}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>"
        )
    name = escape(record["recipe"])
    limits = ", ".join(f"{k} {v}" for k, v in record["constraints"].items()) or "the targets' budgets and gates only"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{name}: search</title><style>{CSS}</style></head>
<body><h1>{name}: device-constrained search</h1>
<p>Objectives: {escape(", ".join(record["objectives"]))}; constraints: {escape(limits)}; sampler
{escape(record["sampler"])} (seed {record["seed"]}); storage <code>{escape(record["storage"])}</code>.
Rows in green are on the Pareto front of the feasible trials; bold is the point to ship (the most accurate).</p>
{"".join(parts)}</body></html>
"""


def status_text(recipe, db, names: dict[str, str]) -> str:
    """``search --status``: each target's study from the database alone: trials by state, the best so far."""
    import optuna
    from optuna.trial import TrialState

    from toolchain.search import pareto, storage

    spec = recipe.search
    have = set(optuna.get_all_study_names(storage=db))
    cols = [Column("target"), Column("finished", "right"), Column("complete", "right"), Column("pruned", "right")]
    cols += [Column("failed", "right"), Column("running", "right"), Column("best so far", wrap=True)]
    rows = []
    for target, name in names.items():
        if name not in have:
            rows.append([target, "0", "0", "0", "0", "0", "not started"])
            continue
        study = optuna.load_study(study_name=name, storage=db)
        c = storage.counts(study)
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        pts = [
            pareto.Point(
                t.number, dict(zip(spec.objectives, t.values, strict=False)), dict(t.constraints), {}, t.user_attrs
            )
            for t in done
        ]
        best = pareto.best(pts, spec.objectives)
        said = "no feasible trial yet"
        if best is not None:
            r = best.extra.get("result") or {}
            kind = "host" if r.get("latency_kind") == "measured" else "est."
            said = f"#{best.number} {_metric(best.extra)}, {units.ms(r.get('latency_ms'))} ms ({kind})"
        rows.append(
            [
                target,
                *(str(c[k]) for k in ("finished", "complete", "pruned", "failed", "running")),
                said,
            ]
        )
    width = terminal_width()
    return box_table(f"{recipe.name}: search status", cols, rows, width) + footer(
        [f"studies: {', '.join(names.values())}"], width
    )

"""The per-layer diagnosis as Markdown and as one self-contained HTML page (error along depth, plotted)."""

from __future__ import annotations

from html import escape

from toolchain.report.html import _png, place_labels, pyplot

TOP = 10
#: what the fix ranking uses, said on the page
RANKING = (
    "Expected gain: the share of the model's int8 error a fix removes, from each layer's measured isolated error. "
    "To first order the layers' relative errors (1 / isolated per-channel SNR) add up along the network, so a "
    "layer's share of their sum is what fixing it entirely removes; 16-bit activations remove its output's "
    "rounding (0.29 steps of its isolated RMSE), per-channel weights or equalization the rest (the weights' grid), "
    "a float layer all of it. A culprit holds 10 % or more of the error; ops whose grid TFLite fixes (softmax) hold "
    "none."
)


def _what(f) -> str:
    return f["what"] if isinstance(f, dict) else f


def _fix(f) -> str:
    """A fix with its expected gain (when the diagnosis ranked it)."""
    gain = f.get("gain") if isinstance(f, dict) else None
    return _what(f) + ("" if gain is None else f" (expected gain {100 * gain:.1f} %)")


def needs_fix(d: dict) -> bool:
    return d.get("verdict", {}).get("needs_fix", True)


def _share(x: dict) -> str:
    return "-" if x.get("share") is None else f"{100 * x['share']:.1f} %"


def _db(v) -> str:
    return "-" if v is None else ("inf" if v == float("inf") else f"{v:.1f}")


def rows(d: dict) -> list[list[str]]:
    """The layer table's cells; the fix column only when a layer needs one, filled on the culprits."""
    out = []
    fixing, ranked = needs_fix(d), "verdict" in d
    for rank, x in enumerate(d["layers"], 1):
        acc = x["accumulated"] or {}
        fix = _fix(x["fixes"][0]) if x["fixes"] and (x.get("culprit") or not ranked) else "-"
        out.append(
            [
                str(rank),
                x["layer"] or "-",
                x["op"],
                str(x["depth"]),
                _db(x["isolated"]["channel_snr_db"]),
                _db(x["isolated"]["snr_db"]),
                _db(acc.get("snr_db")),
                f"{x['isolated']['rmse_steps']:.2f}",
                f"[{x['range'][0]:.3g}, {x['range'][1]:.3g}]",
                f"{100 * x['clipped']:.3f} %",
                "-" if x["weight_spread"] is None else f"{x['weight_spread']:.0f}x",
                _share(x),
                *([fix] if fixing else []),
            ]
        )
    return out


def headings(d: dict) -> list[str]:
    return HEADINGS + (["best fix (expected gain, % of the int8 error)"] if needs_fix(d) else [])


def ranked_fixes(d: dict, n: int = 5, everywhere: bool = False) -> list[tuple[dict, dict]]:
    """(layer, fix) over the culprits (``everywhere``: all layers), largest expected gain first."""
    pool = [x for x in d["layers"] if everywhere or x.get("culprit")]
    pairs = [(x, f) for x in pool for f in x["fixes"] if isinstance(f, dict) and f["gain"] > 0]
    return sorted(pairs, key=lambda p: -p[1]["gain"])[:n]


HEADINGS = [
    "rank",
    "Keras layer",
    "op",
    "depth",
    "isolated channel SNR dB",
    "isolated SNR dB",
    "accumulated SNR dB",
    "isolated RMSE (steps)",
    "activation range",
    "clipped",
    "weight spread",
    "share of the int8 error",
]


#: ops that large-model quantization work names sensitive, by role (MEAN joins the LayerNorm chain when its layer
#: also computes RSQRT or SQUARED_DIFFERENCE: otherwise it is a pooling)
ROLES = {
    "SOFTMAX": "softmax",
    "RSQRT": "LayerNorm chain",
    "SQUARED_DIFFERENCE": "LayerNorm chain",
    "GELU": "GELU",
    "BATCH_MATMUL": "attention matmul",
}


def sensitive(d: dict) -> list[dict]:
    """Per role present in the model: how many ops, and the worst one by isolated SNR with its overall rank."""
    norm_layers = {x["layer"] for x in d["layers"] if x["op"] in ("RSQRT", "SQUARED_DIFFERENCE") and x["layer"]}
    found: dict[str, dict] = {}
    for rank, x in enumerate(d["layers"], 1):
        role = ROLES.get(x["op"]) or ("LayerNorm chain" if x["op"] == "MEAN" and x["layer"] in norm_layers else None)
        if role is None:
            continue
        r = found.setdefault(role, {"role": role, "ops": 0, "worst": x, "rank": rank})
        r["ops"] += 1
    return sorted(found.values(), key=lambda r: r["rank"])


def _verdict(d: dict) -> list[str]:
    """The headline, the largest gain there is anyway when no layer needs a fix, and what the ranking uses."""
    v = d.get("verdict")
    if v is None:
        return []
    out = [v["headline"]]
    best = ranked_fixes(d, 1, everywhere=True)
    if not v["needs_fix"] and best:
        x, f = best[0]
        out.append(
            f"Were the remaining loss wanted back anyway, the largest expected gain: {_what(f)} on "
            f"{x['layer'] or x['tensor']} ({100 * f['gain']:.1f} % of the int8 error)."
        )
    return [*out, RANKING]


def markdown(d: dict) -> str:
    heads = headings(d)
    lines = [
        f"# Why int8 loses accuracy: {d['recipe']} on {d['target']}",
        "",
        *[f"**{t}**" if i == 0 else t for i, t in enumerate(_verdict(d))],
        "",
        f"{d['plan']}; {d['samples']} eval samples. Ranked by the layer's own (isolated) error, per-channel SNR "
        "averaged; accumulated SNR is the error of the whole int8 chain up to that layer. RMSE in steps of the "
        "output's grid (rounding alone: 0.29).",
        "",
    ]
    for x in d.get("calibration_drift", []):  # the culprit before any layer: the input's own scale
        lines += [
            f"**Culprit: the input `{x['input']}`'s scale is set by {x['outlying_samples']} calibration samples** "
            f"({100 * x['outlying_share']:.1f} %; first {', '.join(map(str, x['first_samples']))}) far outside the "
            f"training data's range [{x['training_range'][0]:.4g}, {x['training_range'][1]:.4g}]: "
            f"{x['scale_ratio']:.1f}x the training data's scale, so every layer sees a coarse input. Fix: "
            "`data.calibration.drop_outliers: true` (or clean the set); `strict: true` refuses such a set.",
            "",
        ]
    lines += [
        "| " + " | ".join(heads) + " |",
        "|" + "---|" * len(heads),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows(d)[:TOP]]
    roles = sensitive(d)
    if roles:
        fixing = needs_fix(d)
        lines += [
            "",
            "## Sensitive ops",
            "",
            "The ops quantization work on attention models names sensitive, by their measured isolated error (the "
            "worst of each kind and its rank above):",
            "",
            "| kind | ops | worst layer | its rank | isolated SNR dB |" + (" best fix |" if fixing else ""),
            "|---|---|---|---|---|" + ("---|" if fixing else ""),
        ]
        for r in roles:
            x = r["worst"]
            lines.append(
                f"| {r['role']} | {r['ops']} | {x['layer'] or x['tensor']} ({x['op']}) | {r['rank']} | "
                f"{_db(x['isolated']['snr_db'])} |" + (f" {_fix(x['fixes'][0])} |" if fixing else "")
            )
    if "verdict" not in d:  # an unranked diagnosis: the worst three's fixes
        lines += ["", "## Fixes for the worst three", ""]
        lines += [
            f"- **{x['layer'] or x['tensor']}** ({x['op']}): " + "; ".join(map(_what, x["fixes"]))
            for x in d["layers"][:3]
        ]
    elif needs_fix(d) and (pairs := ranked_fixes(d)):
        lines += ["", "## Fixes by expected gain", ""]
        lines += [f"- {_fix(f)}: **{x['layer'] or x['tensor']}** ({x['op']})" for x, f in pairs]
    return "\n".join(lines) + "\n"


def marked(d: dict) -> list[tuple[int, dict]]:
    """The layers the depth plot names, with their rank: the culprits, else the worst three."""
    ranked = list(enumerate(d["layers"], 1))
    return [(r, x) for r, x in ranked if x.get("culprit")][:TOP] or ranked[:3]


def figure(d: dict):
    """Isolated and accumulated SNR along depth; the marked layers numbered by rank at their points (each number
    inside the axes, none overlapping) and named in the legend."""
    from matplotlib.lines import Line2D

    plt = pyplot()
    layers = sorted(d["layers"], key=lambda x: x["depth"])
    fig, ax = plt.subplots(figsize=(9, 3.8))
    ax.plot(
        [x["depth"] for x in layers],
        [x["isolated"]["channel_snr_db"] for x in layers],
        "o-",
        markersize=4,
        label="isolated, per-channel SNR",
    )
    acc = [(x["depth"], x["accumulated"]["snr_db"]) for x in layers if x["accumulated"]]
    if acc:
        ax.plot(*zip(*acc, strict=True), "s--", markersize=3, label="accumulated SNR")
    named = marked(d)
    points = [(x["depth"], x["isolated"]["channel_snr_db"]) for _, x in named]
    if points:
        ax.scatter(*zip(*points, strict=True), s=70, facecolors="none", edgecolors="tab:red", zorder=3)
    ax.margins(x=0.04, y=0.15)
    ax.set_xlabel("depth (quantized op)")
    ax.set_ylabel("SNR (dB)")
    ax.set_title("int8 error along depth")
    handles, _ = ax.get_legend_handles_labels()
    ring = {"linestyle": "", "marker": "o", "markerfacecolor": "none", "markeredgecolor": "tab:red"}
    names = [Line2D([], [], label=f"#{r} {x['layer'] or x['tensor'][:32]} ({x['op']})", **ring) for r, x in named]
    ax.legend(handles=handles + names, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.canvas.draw()
    place_labels(ax, points, [f"#{r}" for r, _ in named])
    return fig


def _plot(d: dict) -> str:
    fig = figure(d)
    png = _png(fig)
    pyplot().close(fig)
    return png


def html(d: dict) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headings(d))
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows(d))
    title = f"Why int8 loses accuracy: {d['recipe']} on {d['target']}"
    said = _verdict(d)
    verdict = (f"<p id='verdict'><strong>{escape(said[0])}</strong></p>" if said else "") + "".join(
        f"<p><small>{escape(t)}</small></p>" for t in said[1:]
    )
    fixes = ""
    if needs_fix(d) and "verdict" in d:
        items = "".join(
            f"<li>{escape(_fix(f))}: <b>{escape(x['layer'] or x['tensor'])}</b> ({escape(x['op'])})</li>"
            for x, f in ranked_fixes(d)
        )
        fixes = f"<h2>Fixes by expected gain</h2><ol id='fixes'>{items}</ol>" if items else ""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}img{max-width:100%}"
        "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}</style></head><body>"
        f"<h1>{escape(title)}</h1>{verdict}<p>{escape(d['plan'])}; {d['samples']} eval samples.</p>"
        f"<img alt='error along depth' src='data:image/png;base64,{_plot(d)}'>{fixes}"
        f"<table id='layers'><tr>{head}</tr>{body}</table></body></html>\n"
    )

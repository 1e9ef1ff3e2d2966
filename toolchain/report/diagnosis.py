"""The per-layer diagnosis as Markdown and as one self-contained HTML page (error along depth, plotted)."""

from __future__ import annotations

from html import escape

from toolchain.report.html import _png

TOP = 10


def _db(v) -> str:
    return "-" if v is None else ("inf" if v == float("inf") else f"{v:.1f}")


def rows(d: dict) -> list[list[str]]:
    out = []
    for rank, x in enumerate(d["layers"], 1):
        acc = x["accumulated"] or {}
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
                x["fixes"][0],
            ]
        )
    return out


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
    "first fix",
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


def markdown(d: dict) -> str:
    lines = [
        f"# Why int8 loses accuracy: {d['recipe']} on {d['target']}",
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
        "| " + " | ".join(HEADINGS) + " |",
        "|" + "---|" * len(HEADINGS),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows(d)[:TOP]]
    roles = sensitive(d)
    if roles:
        lines += [
            "",
            "## Sensitive ops",
            "",
            "The ops quantization work on attention models names sensitive, by their measured isolated error (the "
            "worst of each kind and its rank above):",
            "",
            "| kind | ops | worst layer | its rank | isolated SNR dB | first fix |",
            "|---|---|---|---|---|---|",
        ]
        for r in roles:
            x = r["worst"]
            lines.append(
                f"| {r['role']} | {r['ops']} | {x['layer'] or x['tensor']} ({x['op']}) | {r['rank']} | "
                f"{_db(x['isolated']['snr_db'])} | {x['fixes'][0]} |"
            )
    lines += ["", "## Fixes for the worst three", ""]
    for x in d["layers"][:3]:
        lines.append(f"- **{x['layer'] or x['tensor']}** ({x['op']}): " + "; ".join(x["fixes"]))
    return "\n".join(lines) + "\n"


def _plot(d: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted(d["layers"], key=lambda x: x["depth"])
    depth = [x["depth"] for x in layers]
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    ax.plot(depth, [x["isolated"]["channel_snr_db"] for x in layers], "o-", label="isolated, per-channel SNR")
    acc = [(x["depth"], x["accumulated"]["snr_db"]) for x in layers if x["accumulated"]]
    if acc:
        ax.plot(*zip(*acc, strict=True), "s--", label="accumulated SNR")
    for x in d["layers"][:3]:
        ax.annotate(x["layer"] or str(x["depth"]), (x["depth"], x["isolated"]["channel_snr_db"]), fontsize=8)
    ax.set_xlabel("depth (quantized op)")
    ax.set_ylabel("SNR (dB)")
    ax.set_title("int8 error along depth")
    ax.legend()
    ax.grid(alpha=0.3)
    png = _png(fig)
    plt.close(fig)
    return png


def html(d: dict) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in HEADINGS)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows(d))
    title = f"Why int8 loses accuracy: {d['recipe']} on {d['target']}"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}</style></head><body>"
        f"<h1>{escape(title)}</h1><p>{escape(d['plan'])}; {d['samples']} eval samples.</p>"
        f"<img alt='error along depth' src='data:image/png;base64,{_plot(d)}'>"
        f"<table id='layers'><tr>{head}</tr>{body}</table></body></html>\n"
    )

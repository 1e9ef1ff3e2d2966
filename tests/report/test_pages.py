"""The HTML pages' plots: the compare page's scatter and memory bars on a real build record (every label inside its
plot, plain log ticks, a real legend, a visible bar for a 100 MB budget; the page in headless Chromium), and the
diagnosis page (no fix when the artifact is within its gate, fixes only on the culprits, by expected gain; the
depth plot's labels inside the axes, none overlapping)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from dataclasses import asdict
from html import escape
from itertools import combinations

import numpy as np
import pytest

from tests.cli.test_cli import FIXTURES, MOBILENET, build_folder
from toolchain.quantize.diagnose import FIXED_RANGE, Error, LayerDiagnosis, rank_fixes, verdict
from toolchain.record import BuildRecord
from toolchain.report import diagnosis as page
from toolchain.report import html
from toolchain.report.compare import compare


def inside(box, frame) -> bool:
    return frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1


def check_labels(fig, ax, expected: set[str]) -> list:
    """The annotations of ``ax`` are ``expected``, each inside the axes, no two overlapping; the figure's drawn
    content lies inside the figure. Returns the annotations' boxes."""
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    texts = {t.get_text(): html.label_box(t, renderer) for t in ax.texts}  # a label, not its leader line
    assert set(texts) == expected
    for label, box in texts.items():
        assert inside(box, frame), (label, box, frame)
    for (a, x), (b, y) in combinations(texts.items(), 2):
        assert not x.overlaps(y), (a, b)
    tight = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)
    assert inside(tight, fig.bbox), (tight, fig.bbox)
    return list(texts.values())


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    html.pyplot().close("all")


@pytest.fixture(scope="module")
def table():
    return compare(BuildRecord.model_validate(json.loads((FIXTURES / "build-v2.json").read_text())))


def test_the_scatter_keeps_every_label_inside_with_plain_ticks_and_a_legend(table):
    fig = html.scatter(table)
    ax = fig.axes[0]
    check_labels(fig, ax, {"phone-cpu", "cortex-m7", "ethos-u55-128", "edgetpu"})
    lo, hi = ax.get_xlim()
    ticks = {t.get_text() for t, v in zip(ax.get_xticklabels(), ax.get_xticks(), strict=True) if lo <= v <= hi}
    assert {"0.1", "0.2", "0.5", "1", "2", "5", "10", "20", "50"} <= ticks, ticks  # not only 10^0, 10^1
    bottom, top = ax.get_ylim()
    for x in table["rows"]:  # padding: no point within 10 % of the axis height from its top or bottom
        y = 100 * x["metric"]
        assert bottom + 0.1 * (top - bottom) < y < top - 0.1 * (top - bottom), (x["target"], y, bottom, top)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["measured on this host", "estimated for the device", "Pareto front"]
    assert "^" not in ax.get_xlabel() and "outlined" not in ax.get_title()


def test_a_bar_of_a_100_mb_budget_is_visible_and_labelled(table):
    fig = html.memory_bars(table)
    renderer = fig.canvas.get_renderer()
    ram, flash = fig.axes
    rows = [x["target"] for x in table["rows"]]
    assert table["rows"][0]["flash_budget_bytes"] == 100 * 1024 * 1024
    for ax in (ram, flash):
        frame = ax.get_window_extent(renderer)
        for t in ax.texts:
            assert inside(t.get_window_extent(renderer), frame), t.get_text()
    widths = {name: bar.get_window_extent(renderer).width for name, bar in zip(rows, flash.patches, strict=True)}
    assert widths["phone-cpu"] >= 5 and widths["edgetpu"] >= 5, widths  # 0.6 % of the budget, still seen
    assert widths["cortex-m7"] > 5 * widths["phone-cpu"]  # 30 % of its budget: the scale is kept
    labels = [t.get_text() for t in flash.texts]
    assert labels[0] == "618.8 / 102,400.0 KB, 0.60 %", labels
    assert [t.get_text() for t in ram.texts][0] == "not measured"  # phone-cpu: no RAM figure


def chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed")
def test_the_compare_page_renders_in_headless_chromium(tmp_path, run_cli):
    """The page of a real build record: the plots are inlined at a width the window shows whole, and the
    screenshot is the window's size and not blank."""
    import base64
    import re

    from PIL import Image

    b = build_folder(tmp_path)
    code, out, err = run_cli("compare", MOBILENET, "--build-dir", b, "--format", "html")
    assert code == 0, err
    path = b / "mobilenet" / "compare.html"
    assert out.strip() == str(path)
    plots = [base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", path.read_text())]
    assert len(plots) == 2
    width, height = 1400, 2200
    for data in plots:
        w, _ = png_size(data)
        assert w <= width - 64, w  # shown whole, not clipped or scaled (2em margins)
    shot = tmp_path / "page.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
    flags += ["--disable-background-networking", "--disable-component-update", f"--user-data-dir={tmp_path / 'p'}"]
    subprocess.run(
        [chromium(), *flags, f"--window-size={width},{height}", f"--screenshot={shot}", path.as_uri()],
        capture_output=True,
        timeout=120,
    )
    image = Image.open(shot).convert("RGB")
    assert image.size == (width, height)
    colors = image.getcolors(maxcolors=1 << 20)
    assert len(colors) > 200  # plots and a table, not a blank page
    assert max(n for n, _ in colors) < 0.95 * width * height


# the diagnosis page, from diagnoses the real ranking builds


def layers(planted: dict[int, tuple[float, float, float]] | None = None, n=30, per_channel=True, seed=3):
    """A MobileNet-like chain of ``n`` quantized ops and a softmax, each 33-45 dB isolated and near rounding;
    ``planted``: depth -> (isolated SNR dB, RMSE steps, weight spread) of a culprit."""
    rng, planted, out = np.random.default_rng(seed), planted or {}, []
    for depth in range(n):
        op = ("CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "ADD")[depth % 4]
        snr, rmse, spread = float(rng.uniform(33, 45)), float(rng.uniform(0.29, 0.45)), float(rng.uniform(2, 8))
        snr, rmse, spread = planted.get(depth, (snr, rmse, spread))
        out.append(
            LayerDiagnosis(
                depth=depth,
                tensor=f"block_{depth}/convolution",
                layer=f"block_{depth}_project",
                op="CONV_2D" if depth in planted else op,
                isolated=Error(snr + 1, snr, 0.999, rmse),
                accumulated=Error(snr - 0.3 * depth, snr - 0.3 * depth, 0.99, rmse),
                range=[-1.0, 1.0],
                observed=[-1.0, 1.0],
                clipped=0.0,
                headroom=1.5,
                weight_spread=spread,
            )
        )
    sm = Error(20.0, 30.0, 0.99, 0.4)
    out.append(LayerDiagnosis(n, "Identity", "predictions", "SOFTMAX", sm, None, [0, 1], [0, 1], 0.0, 1.0, None))
    rank_fixes(out, "minmax", per_channel, can_float=False)
    return sorted(out, key=lambda d: (d.op in FIXED_RANGE, d.isolated.channel_snr_db))


def diagnosis(found: list[LayerDiagnosis], drop: float | None, allowed: float | None = 1.5) -> dict:
    return {
        "recipe": "mobilenet",
        "target": "cortex-m7",
        "plan": "int8, minmax ranges, asymmetric activations, per-channel weights",
        "samples": 64,
        "verdict": verdict(found, drop, allowed),
        "layers": [asdict(d) for d in found],
        "calibration_drift": [],
    }


def table_rows(md: str) -> list[str]:
    """The layer table's heading and rows (the sections after it left out)."""
    return [line for line in md.split("\n## ")[0].splitlines() if line.startswith("| ") and "---" not in line]


def test_no_layer_needs_a_fix_when_the_artifact_is_within_its_gate():
    """31 layers, none standing out, on an artifact 0.28 points below float (gate 1.5): a headline says so, and no
    row offers a fix."""
    d = diagnosis(layers(), 0.28)
    assert d["verdict"]["needs_fix"] is False and not any(x["culprit"] for x in d["layers"])
    md = page.markdown(d)
    headline = "No layer needs a fix: the int8 artifact's top-1 is 0.28 points below float (the gate allows 1.5)."
    assert f"**{headline}**" in md
    rows = table_rows(md)
    assert rows[0].startswith("| rank | Keras layer |") and "fix" not in rows[0]
    assert len(rows) == 1 + page.TOP and not any("16-bit" in r or "fix" in r for r in rows)
    assert "## Fixes" not in md and page.RANKING in md
    text = page.html(d)
    assert f"<p id='verdict'><strong>{escape(headline)}</strong></p>" in text
    assert "best fix" not in text and "16-bit activations for this layer (mode" not in text.split("<table")[1]
    # a gate missed by a hair, or a NaN drop, is never within it
    assert verdict(layers(), 1.51, 1.5)["needs_fix"] and verdict(layers(), float("nan"), 1.5)["needs_fix"]
    assert "not a number" in verdict(layers(), float("nan"), 1.5)["headline"]
    assert not verdict(layers(), 0.3, None)["needs_fix"]  # no gate: under 0.5 points is negligible
    nothing = verdict(layers(), None, 1.5)  # not measured (toolchain diagnose) and no culprit
    assert not nothing["needs_fix"] and "not measured here" in nothing["headline"]


def test_an_artifact_over_its_gate_with_no_culprit_gets_a_model_wide_fix():
    """Within the drop but failing the agreement gate (a real 3-epoch MobileNet on cortex-m7): a fix is needed, no
    layer stands out, so the headline names a model-wide one and no row or list repeats a per-layer fix."""
    failed = ("min_top1_agreement: 0.9136, needs at least 0.96",)
    d = {**diagnosis(layers(), 0.28), "verdict": verdict(layers(), 0.28, 1.5, failed=failed)}
    assert d["verdict"]["needs_fix"] is True
    assert d["verdict"]["headline"].startswith(f"The int8 artifact fails its gate ({failed[0]}); no single layer")
    assert "a model-wide fix: mode: int16x8, or quantization-aware training" in d["verdict"]["headline"]
    md = page.markdown(d)
    assert all(r.endswith("| - |") for r in table_rows(md)[1:]) and "## Fixes" not in md
    assert "<ol id='fixes'>" not in page.html(d)


def test_fixes_go_on_the_culprits_only_largest_expected_gain_first():
    """Two culprits on an artifact over its gate: one whose error is its weights' grid (RMSE 3 steps, channel
    ranges 60x apart, per-tensor weights), one whose error is rounding (0.30 steps). Per-channel weights come first
    on the first, 16-bit activations on the second; the page's fix list orders them by the measured shares."""
    found = layers({7: (14.0, 3.0, 60.0), 19: (16.0, 0.30, 3.0)}, per_channel=False)
    by_depth = {x.depth: x for x in found}
    weights, rounding = by_depth[7], by_depth[19]
    noise = [10 ** (-x.isolated.channel_snr_db / 10) for x in found if x.op != "SOFTMAX"]  # its grid is fixed
    assert weights.share == pytest.approx(10**-1.5 / sum(noise)) and weights.share > rounding.share > 0.1
    assert found[-1].op == "SOFTMAX" and found[-1].share == 0 and not found[-1].culprit
    assert [x.depth for x in found if x.culprit] == [7, 19]
    assert weights.fixes[0].what.startswith("per_channel: true, or equalize: true (channel weight ranges spread 60x")
    assert weights.fixes[0].gain == pytest.approx(weights.share * (1 - 1 / (12 * 9)) * (1 - 1 / 60))
    assert rounding.fixes[0].what.startswith("16-bit activations")
    assert rounding.fixes[0].gain == pytest.approx(rounding.share / (12 * 0.09))
    for x in found:
        assert [f.gain for f in x.fixes] == sorted((f.gain for f in x.fixes), reverse=True)
    d = diagnosis(found, 3.1)
    assert d["verdict"]["headline"] == (
        "The int8 artifact loses 3.10 points of top-1 (the gate allows 1.5): fix block_7_project, "
        "block_19_project first, largest expected gain first."
    )
    md = page.markdown(d)
    rows = table_rows(md)
    assert rows[0].endswith("| best fix (expected gain, % of the int8 error) |")
    fixed = [r.split(" | ")[1] for r in rows[1:] if not r.endswith("| - |")]
    assert fixed == ["block_7_project", "block_19_project"]  # every other row: no fix
    assert "Expected gain: the share of the model's int8 error a fix removes" in md  # what the ranking uses
    listed = md.split("## Fixes by expected gain")[1].strip().splitlines()
    assert listed[0].startswith("- per_channel: true") and listed[0].endswith("**block_7_project** (CONV_2D)")
    assert listed[1].startswith("- 16-bit activations") and listed[1].endswith("**block_19_project** (CONV_2D)")
    gains = [float(line.split("(expected gain ")[1].split(" %")[0]) for line in listed]
    assert gains == sorted(gains, reverse=True) and gains[0] == round(100 * weights.fixes[0].gain, 1)
    assert "<ol id='fixes'><li>per_channel: true" in page.html(d)


def test_the_depth_plot_numbers_neighbouring_culprits_without_overlap():
    """Five culprits side by side in depth, at nearly the same SNR: each numbered inside the axes, no two numbers
    overlapping, each named in the legend."""
    found = layers({d: (15.0 + 0.2 * d, 1.0, 4.0) for d in range(10, 15)})
    d = diagnosis(found, 2.0)
    ranks = [r for r, x in enumerate(d["layers"], 1) if x["culprit"]]
    assert ranks == [1, 2, 3, 4, 5]
    fig = page.figure(d)
    ax = fig.axes[0]
    check_labels(fig, ax, {f"#{r}" for r in ranks})
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[2:] == [f"#{r} block_{10 + r - 1}_project (CONV_2D)" for r in ranks]
    # no culprit: the worst three are numbered, nothing else
    calm = page.figure(diagnosis(layers(), 0.28))
    check_labels(calm, calm.axes[0], {"#1", "#2", "#3"})

"""The search's outputs from a stored record (``toolchain.search/1``): the front table at 80 columns, the page's
plot (every label inside the axes, none overlapping; the front joined) and the page in headless Chromium. No
TensorFlow."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.conftest import REPO
from tests.report.test_pages import check_labels, chromium
from toolchain.report import search as page

RECORD = json.loads((REPO / "tests" / "fixtures" / "search-v1.json").read_text())


@pytest.fixture(autouse=True)
def _close():
    yield
    from toolchain.report.html import pyplot

    pyplot().close("all")


def test_the_front_table_fits_80_columns_best_first(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    text = page.text(RECORD)
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    for t in RECORD["targets"]:
        if t["front"]:
            rows = [line for line in text.splitlines() if line.startswith("│") and line.split("│")[1].strip()]
            firsts = [line.split("│")[1].strip() for line in rows]
            assert f"{t['best']}*" in firsts  # the point to ship, marked
            assert f"* the point to ship: trial {t['best']}" in text


def test_the_plot_labels_the_front_inside_the_axes():
    for t in RECORD["targets"]:
        fig = page.figure(RECORD, t)
        ax = fig.axes[0]
        check_labels(fig, ax, {f"#{n}" for n in t["front"]})  # the front's trials, numbered
        legend = [x.get_text() for x in ax.get_legend().get_texts()]
        assert legend == ["feasible", "over a constraint", "Pareto front", "the point to ship"]


def test_every_trial_is_a_row_of_the_page_with_why_it_is_not_a_candidate():
    html = page.html(RECORD)
    for t in RECORD["targets"]:
        body = html.split(f'id="trials-{t["target"]}"')[1].split("</table>")[0]
        assert body.count("<tr") == 1 + len(t["trials"])
        for x in t["trials"]:
            if x["state"] == "complete" and not x["feasible"]:
                assert page.why(x) and page.why(x) in body  # the constraint or gate it breaks


@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed")
def test_the_page_renders_in_headless_chromium(tmp_path):
    from PIL import Image

    path = tmp_path / "search.html"
    path.write_text(page.html(RECORD))
    shot = tmp_path / "page.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
    flags += ["--disable-background-networking", "--disable-component-update", f"--user-data-dir={tmp_path / 'p'}"]
    subprocess.run(
        [chromium(), *flags, "--window-size=1300,1600", f"--screenshot={shot}", path.as_uri()],
        capture_output=True,
        timeout=120,
    )
    image = Image.open(shot).convert("RGB")
    assert image.size == (1300, 1600)
    colors = image.getcolors(maxcolors=1 << 20)
    assert len(colors) > 200 and max(n for n, _ in colors) < 0.95 * 1300 * 1600  # plots and tables, not blank
    shutil.rmtree(tmp_path / "p", ignore_errors=True)

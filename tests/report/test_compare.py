"""Side-by-side comparison of targets: best per column, Pareto front, and a self-contained HTML page."""

import json
import shutil
import subprocess

import pytest

from toolchain.report.compare import compare, pareto
from toolchain.report.html import render


@pytest.mark.tf
def test_best_values_and_pareto(all_targets):
    record, _ = all_targets
    table = compare(record)
    rows = {x["target"]: x for x in table["rows"]}
    assert set(rows) == {"phone-cpu", "phone-gpu", "cortex-m7", "ethos-u55-128", "edgetpu"}
    smallest = min(x["size_bytes"] for x in table["rows"])
    assert all(rows[t]["size_bytes"] == smallest for t in table["best"]["size_bytes"])
    assert rows["phone-gpu"]["mode"] == "float16" and "size_bytes" in table["best"]
    assert rows["cortex-m7"]["ram_bytes"] == record.result("cortex-m7").memory.ram_bytes
    assert rows["ethos-u55-128"]["accelerator_share"] == 1.0 and rows["phone-cpu"]["accelerator_share"] is None
    assert rows["cortex-m7"]["latency_measured"] is False and rows["phone-cpu"]["latency_measured"] is True
    front = table["pareto"]
    assert front

    # every target off the front is beaten by one on it in all three objectives
    def obj(x):
        return (-x["metric"], x["latency_ms"], x["ram_bytes"] if x["ram_bytes"] is not None else x["flash_bytes"])

    for x in table["rows"]:
        if x["target"] not in front:
            assert any(all(a <= b for a, b in zip(obj(rows[f]), obj(x), strict=True)) for f in front), x["target"]


def test_pareto_on_known_points():
    rows = [
        {"target": "a", "metric": 0.9, "latency_ms": 1.0, "ram_bytes": 100, "flash_bytes": 0},
        {"target": "b", "metric": 0.8, "latency_ms": 2.0, "ram_bytes": 200, "flash_bytes": 0},  # beaten by a
        {"target": "c", "metric": 0.95, "latency_ms": 5.0, "ram_bytes": 300, "flash_bytes": 0},  # most accurate
        {"target": "d", "metric": 0.9, "latency_ms": 1.0, "ram_bytes": 100, "flash_bytes": 0},  # tie with a
    ]
    assert pareto(rows) == ["a", "c", "d"]


@pytest.mark.tf
def test_html_escapes_names_and_is_self_contained(all_targets):
    record, _ = all_targets
    table = compare(record)
    table["rows"][0] = {**table["rows"][0], "target": "<script>alert(1)</script>"}
    page = render(table)
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("data:image/png;base64,") == 2
    assert "http://" not in page and "https://" not in page


def chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.tf
@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed")
def test_page_shows_the_table_in_headless_chromium(all_targets, tmp_path, run_cli):
    record, out = all_targets
    recipe = record.recipe_file
    code, stdout, _ = run_cli("compare", recipe, "--format", "html", "--build-dir", out)
    assert code == 0
    page = out / "tiny" / "compare.html"
    assert stdout.strip() == str(page)
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        [chromium(), *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    assert '<table id="comparison">' in dom
    for target in ("phone-cpu", "cortex-m7", "ethos-u55-128", "edgetpu"):
        assert f">{target}</td>" in dom
    shot = tmp_path / "page.png"
    subprocess.run(
        [chromium(), *flags, "--window-size=1400,1400", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.stat().st_size > 20_000  # a rendered page with plots, not a blank one
    from tests.report.test_pages import check_labels
    from toolchain.report.html import scatter

    fig = scatter(compare(record))  # the page's scatter: every target's label inside the axes, none overlapping
    check_labels(fig, fig.axes[0], {"phone-cpu", "phone-gpu", "cortex-m7", "ethos-u55-128", "edgetpu"})


@pytest.mark.tf
def test_compare_json_and_md(all_targets, run_cli):
    record, out = all_targets
    code, stdout, _ = run_cli("compare", record.recipe_file, "--format", "json", "--build-dir", out)
    assert code == 0
    table = json.loads(stdout)
    assert table["schema"] == "toolchain.compare/1" and len(table["rows"]) == 5
    code, stdout, _ = run_cli(
        "compare",
        record.recipe_file,
        "--format",
        "md",
        "--build-dir",
        out,
        "--target",
        "cortex-m7",
        "--target",
        "edgetpu",
    )
    assert code == 0 and stdout.count("\n| ") == 3 and (out / "tiny" / "compare.md").exists()


@pytest.mark.tf
def test_plans_are_compared_in_one_table(tiny_recipe, tmp_path, run_cli):
    """--plans builds the recipe once per plan (each target that runs it) and shows plan x target with a front."""
    recipe = tiny_recipe(targets="[phone-cpu, cortex-m7]", train="train: {epochs: 2}")
    code, out, err = run_cli(
        "compare", recipe, "--plans", "int8,float16", "--build-dir", tmp_path / "b", "--format", "json"
    )
    assert code == 0, err
    table = json.loads(out)
    assert table["plans"] == ["int8", "float16"]
    labels = [x["target"] for x in table["rows"]]
    assert labels == ["phone-cpu [int8]", "cortex-m7 [int8]", "phone-cpu [float16]"]  # cortex-m7 runs int8 only
    assert [x["mode"] for x in table["rows"]] == ["int8", "int8", "float16"]
    assert table["pareto"] and set(table["pareto"]) <= set(labels)
    assert "cortex-m7" in err and "skips" in err
    assert (tmp_path / "b" / "tiny-float16" / "build.json").exists()


@pytest.mark.tf
def test_plans_must_be_quantize_modes(tiny_recipe, tmp_path, run_cli):
    code, _, err = run_cli("compare", tiny_recipe(), "--plans", "int8,int4", "--build-dir", tmp_path / "b")
    assert code == 3 and "--plans: 'int4' is not a quantize mode" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_op_placement_puts_two_npus_side_by_side():
    """Per op type, each Ethos-U target's ops on the NPU and on the CPU (from Vela's fallbacks, one per ofm) with
    Vela's reasons; a U55 that leaves an op on the CPU beside a U85 that keeps it. Other targets get no column."""
    import copy
    from pathlib import Path

    from toolchain.record import BuildRecord
    from toolchain.report.compare import markdown

    data = json.loads((Path(__file__).parents[1] / "fixtures" / "build-v2.json").read_text())
    u55 = next(r for r in data["results"] if r["target"] == "ethos-u55-128")
    u85 = copy.deepcopy(u55) | {"target": "ethos-u85-256"}
    u55["ops"] = u85["ops"] = {"FULLY_CONNECTED": 3, "GELU": 2, "SOFTMAX": 1}
    why = "Input(s) and Output tensors must not be greater than 4D"
    u55["sections"]["vela"]["details"]["cpu_fallbacks"] = [
        {"op": "GELU", "tensor": "a", "reason": why},
        {"op": "GELU", "tensor": "a", "reason": "a second reason for the same op"},
        {"op": "GELU", "tensor": "b", "reason": why},
        {"op": "FULLY_CONNECTED", "tensor": "c", "reason": "Weights tensor must be constant"},
    ]
    data["results"].append(u85)
    table = compare(BuildRecord.model_validate(data))
    where = table["placement"]
    assert where["targets"] == ["ethos-u55-128", "ethos-u85-256"]
    rows = {x["op"]: x for x in where["rows"]}
    assert rows["GELU"]["targets"]["ethos-u55-128"] == {"ops": 2, "npu": 0, "cpu": 2}
    assert rows["GELU"]["targets"]["ethos-u85-256"] == {"ops": 2, "npu": 2, "cpu": 0}
    assert rows["FULLY_CONNECTED"]["targets"]["ethos-u55-128"] == {"ops": 3, "npu": 2, "cpu": 1}
    assert rows["GELU"]["reasons"] == {"ethos-u55-128": sorted([why, "a second reason for the same op"])}
    md = markdown(table)
    assert "| GELU | all CPU | all NPU |" in md and "| FULLY_CONNECTED | 2 NPU, 1 CPU | all NPU |" in md
    assert f"- ethos-u55-128 GELU: {why}; a second reason for the same op" in md
    assert 'id="placement"' in render(table) and "placement" not in compare(
        BuildRecord.model_validate(data), ["phone-cpu"]
    )

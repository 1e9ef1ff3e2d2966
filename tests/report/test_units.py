"""One vocabulary of units (toolchain/report/units.py) in every renderer: the same record gives the same strings in
the build summary, compare (table, md, json), diff (table, md) and report.md."""

import json

import pytest

from tests.conftest import REPO
from toolchain.record import load_record, parse_record
from toolchain.report import compare, diff, units
from toolchain.report.console import print_summary
from toolchain.report.markdown import target_markdown

RECORD = REPO / "tests" / "fixtures" / "build-v2.json"


def test_the_units():
    assert units.pct(0.96944) == "96.94 %" and units.pts(0.278) == "+0.28 pts" and units.pts(-2.5) == "-2.50 pts"
    assert units.kb(631616) == "616.8" and units.kb_text(2048 * 1024) == "2,048.0 KB"  # 1 KB = 1024 bytes
    assert [units.ms(v) for v in (0.13836, 0.00493, 1.63637, 59.2607, 1234.7)] == [
        "0.138",
        "0.005",
        "1.636",
        "59.26",
        "1235",  # 4 significant digits, at most 3 decimals
    ]
    assert units.latency(0.13836, True) == "0.138 (host)" and units.latency(59.26, False) == "59.26 (est.)"
    assert units.metric("classification", 0.9749) == "97.49 %" and units.metric("regression", 0.25) == "0.25"
    assert units.metric_delta("classification", -0.0028) == "-0.28 pts" and units.pct(float("nan")) == "NaN"


def test_accelerator_ops_are_counted_in_the_artifact_s_ops():
    """Vela counts 129 of its own (lowered) ops on the NPU; the artifact has 65, all on the NPU: inspect's count."""
    r = load_record(RECORD).result("ethos-u55-128")
    assert (r.accelerator.ops_on, r.accelerator.ops_total) == (129, 129) and sum(r.ops.values()) == 65
    assert units.accelerator_ops(r) == (65, 65)
    half = r.model_copy(update={"accelerator": r.accelerator.model_copy(update={"ops_on": 119})})  # 10 on the CPU
    assert units.accelerator_ops(half) == (55, 65)


def _renderings(capsys) -> dict[str, str]:
    record = load_record(RECORD)
    data = json.loads(RECORD.read_text())
    m7 = next(r for r in data["results"] if r["target"] == "cortex-m7")
    m7["metrics"]["top1"] -= 0.025  # build B: 2.5 points worse on cortex-m7
    m7["size_bytes"] += 10 * 1024
    changed = parse_record(data)
    out = {}
    print_summary(record, wide=True)
    out["summary"] = capsys.readouterr().out
    table = compare.compare(record)
    compare.print_table(table, wide=True)
    out["compare table"] = capsys.readouterr().out
    out["compare md"] = compare.markdown(table)
    out["compare json"] = json.dumps([x["text"] for x in json.loads(json.dumps(table))["rows"]])  # as shown
    d = diff.diff(record, changed)
    diff.print_table(d, wide=True)
    out["diff table"] = capsys.readouterr().out
    out["diff md"] = diff.markdown(d)
    # report.md's headline table (the sections after it show each check's own data, e.g. Vela's op count)
    out["report.md"] = "".join(target_markdown(record.recipe, r).split("\n## ")[0] for r in record.results)
    return out


@pytest.mark.parametrize(
    ("strings", "renderers"),
    [
        # cortex-m7's top-1, size and estimated latency; phone-cpu's latency measured on this host
        (["97.49 %", "616.8", "59.26", "0.138"], "all"),
        (["59.26 (est.)", "0.138 (host)"], ["summary", "compare table", "compare md", "compare json"]),
        (
            ["65/65 ops", "67/67 ops"],
            ["compare table", "compare md", "compare json", "diff table", "diff md", "report.md"],
        ),
        (["+0.28 pts"], ["compare table", "compare md", "compare json"]),  # cortex-m7's drop from the reference
        (["0.28 pts worse than the reference"], ["report.md"]),
        (["94.99 %", "-2.50 pts", "626.8"], ["diff table", "diff md"]),  # B's top-1, the change, B's size
    ],
)
def test_every_renderer_says_the_same_numbers_in_the_same_units(strings, renderers, capsys):
    out = _renderings(capsys)
    for name, text in out.items():
        if renderers == "all" or name in renderers:
            for s in strings:
                assert s in text, f"{s!r} not in the {name}"


def test_no_renderer_shows_a_share_raw_or_an_accelerator_count_of_its_own(capsys):
    for name, text in _renderings(capsys).items():
        assert "0.9749" not in text and "0.9721" not in text, name  # top-1 as a share
        assert "129" not in text, name  # Vela's count of its own ops
        if name != "report.md":  # report.md gives the bytes too, next to the KB
            assert "631,616" not in text and "633,656" not in text, name
    assert "worse than the reference by" not in _renderings(capsys)["report.md"]

"""Every table of the CLI at 80 columns, on one real build: nothing wider, no key cell cut to '…'."""

import json
import shutil
from pathlib import Path

import pytest

from toolchain.report import units


def box_rows(text: str) -> list[dict[str, str]]:
    """The rows of the first box table in ``text``, header -> cell (a wrapped row's lines joined)."""
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("┃"))
    headers = [h.strip() for h in lines[head].strip("┃").split("┃")]
    key = headers.index("target") if "target" in headers else 0  # empty on a wrapped row's next lines
    rows: list[list[str]] = []
    for line in lines[head + 2 :]:
        if not line.startswith("│"):
            break
        cells = [c.strip() for c in line.strip("│").split("│")]
        if cells[key] or not rows:
            rows.append(cells)
        else:  # the continuation of a wrapped row
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells, strict=True)]
    return [dict(zip(headers, r, strict=True)) for r in rows]


def fits(text: str, width: int = 80) -> None:
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width, text


@pytest.mark.tf
def test_summary_compare_diff_targets_and_inspect_fit_80_columns(all_targets, tmp_path, run_cli, monkeypatch):
    record, out = all_targets
    monkeypatch.setenv("COLUMNS", "80")
    results = {r.target: r for r in record.results}

    again = tmp_path / "again"  # a copy of the build (and its cache): the build reuses it and prints its summary
    shutil.copytree(out, again, ignore=shutil.ignore_patterns(".lock*", ".tmp"))
    code, summary, err = run_cli("build", record.recipe_file, "--build-dir", again)
    assert code == 0, err
    fits(summary)
    rows = box_rows(summary)
    assert [x["target"] for x in rows] == list(results)
    for x in rows:
        r = results[x["target"]]
        assert (x["mode"], x["size KB"], x["result"]) == (r.mode, units.kb(r.size_bytes), "pass")
        assert x["top-1"] == units.pct(r.metrics.top1) and x["latency ms"].endswith(("(host)", "(est.)"))
    assert rows[0]["latency ms"].endswith("(host)")  # phone-cpu: LiteRT on this machine

    code, table, _ = run_cli("compare", record.recipe_file, "--build-dir", out)
    assert code == 0
    fits(table)
    rows = box_rows(table)
    assert [(x["target"], x["mode"], x["size KB"].removesuffix(" *"), x["passes"]) for x in rows] == [
        (r.target, r.mode, units.kb(r.size_bytes), "yes") for r in record.results
    ]
    assert "hidden to fit 80 columns:" in table
    code, wide, _ = run_cli("compare", record.recipe_file, "--build-dir", out, "--wide")
    assert code == 0 and "hidden" not in wide and {"RAM KB", "accel. ops", "cosine"} <= set(box_rows(wide)[0])

    worse = tmp_path / "worse" / "tiny"  # build B: cortex-m7 10 % bigger and 3 points worse
    worse.mkdir(parents=True)
    data = json.loads((out / "tiny" / "build.json").read_text())
    m7 = next(r for r in data["results"] if r["target"] == "cortex-m7")
    m7["size_bytes"] = int(m7["size_bytes"] * 1.1)
    m7["metrics"]["top1"] -= 0.03
    (worse / "build.json").write_text(json.dumps(data))
    code, table, err = run_cli("diff", out / "tiny", worse, "--fail-on", "size>+2%,accuracy<-0.5")
    assert code == 20 and "cortex-m7" in err
    fits(table)
    rows = {x["target"]: x for x in box_rows(table)}
    assert list(rows) == list(results) and all(x["passes"] == "yes" for x in rows.values())
    size = rows["cortex-m7"]["size KB"]
    assert size.startswith(units.kb(results["cortex-m7"].size_bytes) + " →") and size.endswith("(+10.0 %)")
    assert "rule size>+2%" in rows["cortex-m7"]["regressions"] and rows["edgetpu"]["regressions"] == "-"

    code, listing, _ = run_cli("targets", "list")
    assert code == 0
    fits(listing)
    names = [line.split()[0] for line in listing.splitlines() if not line.startswith(" ")]
    assert {"phone-cpu", "cortex-m7", "ethos-u55-128", "ethos-u85-256", "edgetpu"} <= set(names)

    artifact = Path(results["ethos-u55-128"].artifact)
    code, inspection, _ = run_cli("inspect", artifact)
    assert code == 0
    fits(inspection)
    head = inspection.split("size breakdown")[0]
    n = sum(results["ethos-u55-128"].ops.values())
    assert str(artifact) in "".join(head.splitlines())  # the path folded over lines, whole
    size = artifact.stat().st_size
    assert f"{units.kb_text(size)} ({size:,} bytes)" in " ".join(head.split()) and f"{n} ops" in " ".join(head.split())
    on = units.accelerator_ops(results["ethos-u55-128"])[0]
    accel = {x["target"]: x["accel. ops"] for x in box_rows(wide)}
    assert accel["ethos-u55-128"].startswith(f"{on}/{n} ops")  # compare counts the ops inspect counts

"""The typed build record, its migration, exit codes, gates and reports: from small JSON fixtures, no TensorFlow."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from toolchain.config.recipe import Acceptance
from toolchain.errors import CompatibilityError, GateFailure, InputError, RuntimeValidationError
from toolchain.record import BuildRecord, Failure, Memory, Metrics, json_schema, load_record, parse_record
from toolchain.report.compare import compare
from toolchain.report.markdown import target_markdown
from toolchain.stages import gates

FIXTURES = Path(__file__).parent / "fixtures"


def v2() -> dict:
    return json.loads((FIXTURES / "build-v2.json").read_text())


def test_v1_records_are_migrated():
    r = load_record(FIXTURES / "build-v1.json")
    assert isinstance(r, BuildRecord) and r.schema_ == "toolchain.build/2" and r.passed
    phone, mcu, npu, tpu = (r.result(t) for t in ("phone-cpu", "cortex-m7", "ethos-u55-128", "edgetpu"))
    assert phone.latency.kind == "measured" and phone.latency.ms == phone.latency.median
    assert mcu.latency.kind == "estimate" and mcu.memory.arena_bytes == 210288
    assert mcu.metrics.reference_top1 == pytest.approx(0.9777, abs=1e-4)
    assert npu.memory.ram_bytes == npu.sections["vela"].details["sram_bytes"] and npu.accelerator.share == 1.0
    assert tpu.accelerator.ops_on == tpu.sections["edgetpu"].details["ops_on_tpu"]


def test_v1_failure_strings_get_kinds():
    data = json.loads((FIXTURES / "build-v1.json").read_text())
    data["results"][1]["failures"] = [
        "tflite-micro: killed by SIGSEGV",
        "does not fit cortex-m7: needs 9 KB RAM, has 1 KB",
        "max_size_kb: artifact is 617.2 KB > 1 KB",
    ]
    kinds = [(f.kind, f.check) for f in parse_record(data).results[1].failures]
    assert kinds == [("runtime", "tflm"), ("fit", "fit"), ("gate", "max_size_kb")]


def test_v2_round_trips_and_unknown_schemas_are_refused():
    r = parse_record(v2())
    assert parse_record(json.loads(r.to_json())) == r
    old, new = v2()["results"][1]["metrics"], json.loads(r.to_json())["results"][1]["metrics"]
    assert {k: new[k] for k in old} == old  # a record of an earlier /2 writer reads with its values kept
    with pytest.raises(InputError, match="unknown record schema 'toolchain.build/9'"):
        parse_record({**v2(), "schema": "toolchain.build/9"})
    with pytest.raises(InputError, match="malformed build record"):
        parse_record({**v2(), "results": [{"target": "x"}]})


@pytest.mark.parametrize(
    "kinds, error, code",
    [
        (["gate"], GateFailure, 11),
        (["runtime", "gate"], RuntimeValidationError, 10),
        (["gate", "compat"], CompatibilityError, 9),
        (["runtime", "fit"], CompatibilityError, 9),
    ],
)
def test_exit_code_comes_from_the_most_basic_failure_kind(kinds, error, code):
    data = v2()
    data["results"][0]["failures"] = [{"kind": k, "check": k, "message": f"{k} failed"} for k in kinds]
    err = parse_record(data).failure_error()
    assert type(err) is error and err.exit_code == code
    assert str(err).endswith(f"(+{len(kinds) - 1} more, see report.md)") == (len(kinds) > 1)
    assert parse_record(v2()).failure_error() is None


def test_gates_fail_on_nan_and_name_the_gate():
    m = Metrics(
        top1=math.nan, reference_top1=0.9, top1_agreement=math.nan, cosine=math.nan, rmse=0, max_abs=0, samples=10
    )
    failed = gates.check(Acceptance(max_accuracy_drop=1.0, min_top1_agreement=0.9, min_cosine=0.99), m, 1000)
    assert [f.check for f in failed] == ["max_accuracy_drop", "min_top1_agreement", "min_cosine"]
    good = Metrics(top1=0.895, reference_top1=0.9, top1_agreement=0.95, cosine=0.999, rmse=0, max_abs=0, samples=10)
    assert gates.check(Acceptance(max_accuracy_drop=1.0, min_top1_agreement=0.9, min_cosine=0.99), good, 1000) == []
    assert gates.check(Acceptance(max_accuracy_drop=0.4), good, 1000)[0].message.startswith(
        "max_accuracy_drop: top-1 fell 0.50 points"
    )


def test_fit_gate_uses_the_headline_memory():
    failures = gates.fit(
        "mcu", Memory(ram_bytes=300 * 1024, flash_bytes=10), {"ram_bytes": 256 * 1024, "flash_bytes": None}
    )
    assert failures == [Failure(kind="fit", check="fit", message="does not fit mcu: needs 300 KB RAM, has 256 KB")]


def test_markdown_report_shows_headline_and_every_section():
    r = parse_record(v2()).result("ethos-u55-128")
    md = target_markdown("mobilenet", r)
    assert "**PASSED**" in md and "checks: litert, tflm-numerics, vela" in md
    for check in r.checks:
        assert f"## {check}" in md
    assert f"| latency (estimate) | {r.latency.ms:.3f} ms" in md
    assert f"{r.accelerator.ops_on}/{r.accelerator.ops_total}" in md
    r.failures = [Failure(kind="fit", check="fit", message="does not fit x: needs 9 KB RAM, has 1 KB")]
    assert "- FAILED [fit] does not fit x" in target_markdown("mobilenet", r)


def test_compare_reads_the_record():
    table = compare(parse_record(v2()))
    rows = {x["target"]: x for x in table["rows"]}
    assert rows["cortex-m7"]["latency_measured"] is False and rows["phone-cpu"]["latency_measured"] is True
    assert rows["ethos-u55-128"]["accelerator_share"] == 1.0 and rows["cortex-m7"]["accelerator_share"] is None
    assert rows["cortex-m7"]["ram_budget_bytes"] == 512 * 1024


def test_committed_json_schema_is_generated():
    assert (REPO / "docs" / "build-record.schema.json").read_text() == json_schema(), (
        "regenerate it: python -m toolchain.record > docs/build-record.schema.json"
    )


def test_compare_from_a_build_folder_needs_no_tensorflow(tmp_path):
    """compare reads build.json only: no stage runs, TensorFlow is never imported."""
    build = tmp_path / "b" / "mobilenet"
    build.mkdir(parents=True)
    shutil.copy(FIXTURES / "build-v2.json", build / "build.json")
    code = (
        "import sys; from toolchain.cli.main import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
        "    assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n    raise"
    )
    cmd = [
        sys.executable,
        "-c",
        code,
        "compare",
        str(REPO / "recipes" / "mobilenet.yaml"),
        "--build-dir",
        str(tmp_path / "b"),
        "--format",
        "json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [x["target"] for x in json.loads(proc.stdout)["rows"]] == [
        "phone-cpu",
        "cortex-m7",
        "ethos-u55-128",
        "edgetpu",
    ]


def test_compare_without_a_build_says_so(tmp_path, run_cli):
    code, out, err = run_cli("compare", REPO / "recipes" / "mobilenet.yaml", "--build-dir", tmp_path / "nothing")
    assert code == 16 and out == ""
    assert "no build of mobilenet in" in err and "pass --build" in err and err.count("\n") == 1
    assert not (tmp_path / "nothing").exists()  # nothing was built or written


def test_readme_exit_code_table_is_generated_from_errors():
    from toolchain.errors import exit_code_table

    assert exit_code_table() in (REPO / "README.md").read_text(), "regenerate it: python -m toolchain.errors"

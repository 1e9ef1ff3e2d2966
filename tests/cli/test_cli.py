"""The CLI in-process (``toolchain.cli.main.main``) for everything that needs no TensorFlow: help, usage
errors, recipe and target commands, diff and compare on the JSON fixtures, exit codes of main's own handlers."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal

import pytest
import yaml

from tests.config.test_recipe import GOOD
from tests.conftest import REPO, write_recipe
from toolchain.cli.main import cli
from toolchain.config import list_targets, load_target

FIXTURES = REPO / "tests" / "fixtures"
MOBILENET = REPO / "recipes" / "mobilenet.yaml"
COMMANDS = [
    "build",
    "compare",
    "diagnose",
    "diff",
    "inspect",
    "package",
    "recipe",
    "recipe check",
    "search",
    "targets",
    "targets list",
    "targets show",
    "verify",
]


def walk(group, prefix=()):
    for name, command in group.commands.items():
        yield " ".join((*prefix, name))
        if hasattr(command, "commands"):
            yield from walk(command, (*prefix, name))


def command(path: str):
    c = cli
    for part in path.split():
        c = c.commands[part]
    return c


def test_the_help_tests_cover_every_command():
    assert sorted(walk(cli)) == COMMANDS


@pytest.mark.parametrize("path", COMMANDS)
def test_help_of_every_command(path, run_cli):
    code, out, err = run_cli(*path.split(), "--help")
    assert code == 0 and err == ""
    assert out.startswith(f"Usage: toolchain {path} ")
    first = command(path).help.split("\n")[0].strip()
    assert " ".join(first.split()[:4]) in " ".join(out.split())


def test_help_of_the_group_lists_every_command(run_cli):
    code, out, _ = run_cli("-h")
    assert code == 0 and out.startswith("Usage: toolchain [OPTIONS] COMMAND [ARGS]...")
    listed = [line.split()[0] for line in out.split("Commands:\n")[1].splitlines() if line.strip()]
    assert listed == sorted(cli.commands)


def test_hidden_aliases_of_the_build_folder_option_stay_out_of_help(run_cli):
    _, out, _ = run_cli("build", "--help")
    assert "--build-dir" in out and "--out" not in out and "-o," not in out


def test_version(run_cli):
    from importlib.metadata import version

    code, out, _ = run_cli("--version")
    assert code == 0 and out == f"toolchain, version {version('toolchain')}\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["frobnicate"], "No such command 'frobnicate'"),
        (["build"], "Missing argument 'RECIPE'"),
        (["recipe", "check"], "Missing argument 'FILES...'"),
        (["targets", "show"], "Missing argument 'NAME'"),
        (["build", "x.yaml", "--bogus"], "No such option '--bogus'"),
        (["build", "x.yaml", "-j", "0"], "Invalid value for '-j' / '--jobs'"),
        (["diff", "a", "b", "--format", "xml"], "Invalid value for"),
        (["compare", "x.yaml", "--format", "pdf"], "'pdf' is not one of"),
        (["diff", "/nonexistent/a", "/nonexistent/b"], "'/nonexistent/a' does not exist"),
        (["diagnose", "x.yaml", "--samples", "0"], "Invalid value for '--samples'"),
        (["recipe", "check", "x.yaml", "-q"], "No such option '-q'"),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join(v)[:40],
)
def test_usage_errors_exit_2_in_one_error_line(args, message, run_cli):
    code, out, err = run_cli(*args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert err.rstrip().endswith("--help')") and "Traceback" not in err and "Usage:" not in err


def test_recipe_check_prints_each_targets_plan(run_cli):
    code, out, err = run_cli("recipe", "check", MOBILENET)
    r = yaml.safe_load(MOBILENET.read_text())
    assert code == 0
    assert out.startswith(f"{MOBILENET}: ok (mobilenet; ")
    assert [p.split(":")[0] for p in out.split("; ", 1)[1].rstrip(")\n").split(", ")] == r["targets"]


def test_recipe_check_of_several_files_stops_at_the_first_bad_one(tmp_path, run_cli):
    good = write_recipe(tmp_path, GOOD, "good.yaml")
    bad = write_recipe(tmp_path, GOOD.replace("mode: int8", "mode: int4"), "bad.yaml")
    never = write_recipe(tmp_path, GOOD, "never.yaml")
    code, out, err = run_cli("recipe", "check", good, bad, never)
    assert code == 3
    assert out == f"{good}: ok (ok; phone-cpu: int8)\n"
    assert err.startswith(f"error: {bad}:10: quantize.mode: 'int4' is not one of ") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (("  alpha: 0.35", "  alpha: 0.35\n  depth: 3"), ":6: model.depth: unknown key"),
        (("alpha: 0.35", "alpha: wide"), ":5: model.alpha:"),
        (("targets: [phone-cpu]", "targets: [phone-cpu"), "malformed YAML"),
        (("quantize:\n  mode: int8", "quantize:\n  mode: int8\n  mode: int8"), ":11: duplicate key 'mode'"),
    ],
    ids=["unknown-key", "wrong-type", "malformed", "duplicate-key"],
)
def test_recipe_check_errors_name_file_and_line_and_exit_3(tmp_path, run_cli, change, where):
    path = write_recipe(tmp_path, GOOD.replace(*change))
    code, out, err = run_cli("recipe", "check", path)
    assert code == 3 and out == ""
    assert err.startswith(f"error: {path}") and where in err
    assert "run with -v" not in err and err.count("\n") == 1  # the hint is for internal errors only


def test_a_missing_recipe_file_exits_22(tmp_path, run_cli):
    code, _, err = run_cli("recipe", "check", tmp_path / "missing.yaml")
    assert code == 22 and f"{tmp_path / 'missing.yaml'}" in err and "file not found" in err


def test_an_unknown_target_in_a_recipe_exits_4_with_its_line(tmp_path, run_cli):
    path = write_recipe(tmp_path, GOOD.replace("[phone-cpu]", "[phone-cpu, toaster]"))
    code, out, err = run_cli("recipe", "check", path)
    assert code == 4 and out == ""
    assert f"{path}:11: targets.1: unknown target 'toaster'" in err
    assert "(known: " + ", ".join(list_targets()) + ")" in err


@pytest.mark.parametrize(
    "args",
    [
        ["targets", "show", "toaster"],
        ["build", str(MOBILENET), "--target", "toaster", "--build-dir", "{tmp}/b"],
    ],
    ids=["targets-show", "build"],
)
def test_an_unknown_target_on_the_command_line_exits_4(args, tmp_path, run_cli):
    code, out, err = run_cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert code == 4 and out == ""
    assert "unknown target 'toaster'" in err and err.count("\n") == 1
    assert not (tmp_path / "b").exists()  # refused before any work


def test_compare_of_an_unknown_target_exits_4(tmp_path, run_cli):
    b = build_folder(tmp_path)
    code, out, err = run_cli("compare", MOBILENET, "--build-dir", b, "--target", "toaster")
    assert code == 4 and out == "" and "unknown target 'toaster'" in err


def test_compare_of_a_target_the_build_lacks_exits_16(tmp_path, run_cli):
    b = build_folder(tmp_path)
    code, out, err = run_cli("compare", MOBILENET, "--build-dir", b, "--target", "cortex-m4")
    assert code == 16 and out == ""
    assert (
        "the build of mobilenet has no target 'cortex-m4' (built: phone-cpu, cortex-m7, ethos-u55-128, edgetpu)" in err
    )


def test_targets_list_shows_each_profiles_name_kind_and_checks(run_cli):
    code, out, _ = run_cli("targets", "list", "--wide")  # one line a profile (at 80 columns descriptions wrap)
    rows = [line.split(None, 3) for line in out.splitlines()]
    assert code == 0 and len(rows) == len(list_targets()) >= 8
    for name, kind, checks, description in rows:
        t = load_target(name)
        assert (kind, checks.split(","), description) == (t.kind, list(t.checks), t.description)


def test_targets_show_prints_the_whole_profile_as_yaml(run_cli):
    for name in ("phone-cpu", "ethos-u85-256"):
        code, out, _ = run_cli("targets", "show", name)
        shown = yaml.safe_load(out)
        t = load_target(name)
        assert code == 0 and shown["name"] == name and shown["kind"] == t.kind and shown["checks"] == list(t.checks)
        assert shown["schema_version"] == 1 and shown["numerics"]["default_mode"] == t.numerics.default_mode


def test_targets_dir_option_resolves_profiles_elsewhere(tmp_path, run_cli, monkeypatch):
    from toolchain.config import loader

    monkeypatch.setattr(loader, "TARGETS_DIR", loader.TARGETS_DIR)  # restored after the test
    folder = tmp_path / "profiles"
    folder.mkdir()
    text = (REPO / "targets" / "cortex-m7.yaml").read_text().replace("name: cortex-m7", "name: my-board")
    (folder / "my-board.yaml").write_text(text)
    code, out, _ = run_cli("--targets-dir", folder, "targets", "list", "--wide")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["my-board"]
    code, _, err = run_cli("--targets-dir", tmp_path / "nope", "targets", "list")
    assert code == 3 and "--targets-dir" in err and "not a folder" in err


# diff and compare on the JSON fixtures


def build_folder(tmp_path, name="b", fixture="build-v2.json", change=None):
    """A build folder holding a fixture record (as BUILD_DIR/mobilenet/build.json), optionally changed."""
    record = json.loads((FIXTURES / fixture).read_text())
    if change:
        change(record)
    folder = tmp_path / name / "mobilenet"
    folder.mkdir(parents=True)
    (folder / "build.json").write_text(json.dumps(record))
    return tmp_path / name


def bigger_m7(record):
    r = next(r for r in record["results"] if r["target"] == "cortex-m7")
    r["size_bytes"] = int(r["size_bytes"] * 1.1)


def test_diff_of_a_build_with_itself_is_clean(tmp_path, run_cli):
    a = build_folder(tmp_path)
    code, out, err = run_cli("diff", a / "mobilenet", FIXTURES / "build-v2.json", "--format", "json")
    table = json.loads(out)
    assert code == 0 and table["regressed"] is False
    assert [r["target"] for r in table["rows"]] == ["phone-cpu", "cortex-m7", "ethos-u55-128", "edgetpu"]
    assert all(r["a"]["size"] == r["b"]["size"] and r["regressions"] == [] for r in table["rows"])


def test_diff_reads_a_v1_record_against_a_v2_one(run_cli):
    code, out, _ = run_cli("diff", FIXTURES / "build-v1.json", FIXTURES / "build-v2.json", "--format", "json")
    table = json.loads(out)
    assert code == 0 and table["a"]["recipe"] == table["b"]["recipe"] == "mobilenet"
    assert len(table["rows"]) == 4


def test_diff_fail_on_exits_20_and_names_the_regressed_target(tmp_path, run_cli):
    b = build_folder(tmp_path, change=bigger_m7)
    code, out, err = run_cli("diff", FIXTURES / "build-v2.json", b / "mobilenet", "--fail-on", "size>+2%")
    assert code == 20 and "cortex-m7" in out
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ") and "regressed against" in line and "cortex-m7: size" in line
    assert "phone-cpu" not in line and "edgetpu" not in line


def test_diff_under_the_threshold_or_without_rules_is_0(tmp_path, run_cli):
    b = build_folder(tmp_path, change=bigger_m7)
    assert run_cli("diff", FIXTURES / "build-v2.json", b / "mobilenet", "--fail-on", "size>+20%")[0] == 0
    code, out, _ = run_cli("diff", FIXTURES / "build-v2.json", b / "mobilenet", "--format", "json")
    rows = {r["target"]: r for r in json.loads(out)["rows"]}
    assert code == 0 and rows["cortex-m7"]["b"]["size"] == int(rows["cortex-m7"]["a"]["size"] * 1.1)


def test_diff_a_pass_turned_into_a_fail_regresses(tmp_path, run_cli):
    def fail_edgetpu(record):
        r = next(r for r in record["results"] if r["target"] == "edgetpu")
        r["passed"] = False
        r["failures"] = [{"kind": "gate", "check": "max_size_kb", "message": "max_size_kb: too big"}]
        record["passed"] = False

    b = build_folder(tmp_path, change=fail_edgetpu)
    code, _, err = run_cli("diff", FIXTURES / "build-v2.json", b / "mobilenet", "--fail-on", "size>+50%")
    assert code == 20 and "edgetpu" in err.strip().splitlines()[-1]


def test_diff_markdown_has_one_row_per_target(run_cli):
    code, out, _ = run_cli("diff", FIXTURES / "build-v2.json", FIXTURES / "build-v2.json", "--format", "md")
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| target")]
    assert code == 0 and [r.split("|")[1].strip() for r in rows] == [
        "phone-cpu",
        "cortex-m7",
        "ethos-u55-128",
        "edgetpu",
    ]


@pytest.mark.parametrize("rule", ["size>>2", "speed>1", "size=2", "accuracy<-x"])
def test_diff_bad_fail_on_exits_3_in_one_line(rule, run_cli):
    code, out, err = run_cli("diff", FIXTURES / "build-v2.json", FIXTURES / "build-v2.json", "--fail-on", rule)
    assert code == 3 and out == "" and err.startswith("error: --fail-on: cannot read") and err.count("\n") == 1


def test_diff_of_a_file_that_is_not_a_record_exits_5(tmp_path, run_cli):
    (tmp_path / "build.json").write_text("[1, 2]")
    code, _, err = run_cli("diff", tmp_path / "build.json", FIXTURES / "build-v2.json")
    assert code == 5 and err.startswith(f"error: {tmp_path / 'build.json'}: not a build record (a JSON object")


def test_compare_json_from_a_build_folder(tmp_path, run_cli):
    b = build_folder(tmp_path)
    code, out, _ = run_cli("compare", MOBILENET, "--build-dir", b, "--format", "json")
    table = json.loads(out)
    assert code == 0 and [r["target"] for r in table["rows"]] == ["phone-cpu", "cortex-m7", "ethos-u55-128", "edgetpu"]


def test_compare_only_the_named_targets(tmp_path, run_cli):
    b = build_folder(tmp_path)
    args = ("compare", MOBILENET, "--build-dir", b, "--format", "json")
    code, out, _ = run_cli(*args, "--target", "edgetpu", "--target", "cortex-m7")
    assert code == 0 and sorted(r["target"] for r in json.loads(out)["rows"]) == ["cortex-m7", "edgetpu"]


def test_compare_md_is_printed_and_written_beside_the_record(tmp_path, run_cli):
    b = build_folder(tmp_path)
    code, out, _ = run_cli("compare", MOBILENET, "--build-dir", b, "--format", "md")
    written = (b / "mobilenet" / "compare.md").read_text()
    assert code == 0 and out == written + "\n"
    targets, placement = written.split("## Op placement on the NPU (Vela)")
    rows = [line.split(" | ")[1] for line in targets.splitlines() if line.startswith("| ")]
    assert rows == ["target", "phone-cpu", "cortex-m7", "ethos-u55-128", "edgetpu"]
    assert "| op | ethos-u55-128 |" in placement and "| CONV_2D | all NPU |" in placement


def test_compare_of_a_damaged_record_is_not_an_internal_error(tmp_path, run_cli):
    b = tmp_path / "b" / "mobilenet"
    b.mkdir(parents=True)
    (b / "build.json").write_text("{truncated")
    code, out, err = run_cli("compare", MOBILENET, "--build-dir", tmp_path / "b")
    assert code == 5 and out == "" and err.startswith(f"error: {b / 'build.json'}: cannot read the build record: ")


def test_inspect_of_a_missing_file_exits_5(tmp_path, run_cli):
    code, out, err = run_cli("inspect", tmp_path / "none.tflite")
    assert code == 5 and out == "" and f"{tmp_path / 'none.tflite'}: cannot read" in err


# main's own handlers: verbosity, interrupts, file-system errors, bugs


def boom(monkeypatch, exc):
    """Make ``targets list`` raise ``exc`` (or call it, if it is a function)."""

    def raise_it(*args, **kwargs):
        if callable(exc) and not isinstance(exc, BaseException) and not isinstance(exc, type):
            exc()
        raise exc

    monkeypatch.setattr("toolchain.config.list_targets", raise_it)


def test_traceback_only_with_v(tmp_path, run_cli):
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 1\nname: x\nmodel: [\n")
    code, _, quiet = run_cli("recipe", "check", bad)
    assert code == 3 and "Traceback" not in quiet and "run with -v" not in quiet and quiet.count("\n") == 1
    code, _, loud = run_cli("-v", "recipe", "check", bad)
    assert code == 3 and "Traceback (most recent call last)" in loud and "ConfigError" in loud
    assert loud.strip().splitlines()[-1].startswith("error: ") and "run with -v" not in loud


def test_a_bug_is_one_line_internal_error_exit_1_and_raises_with_v(monkeypatch, run_cli):
    boom(monkeypatch, ZeroDivisionError("division by zero"))
    code, out, err = run_cli("targets", "list")
    assert (code, out) == (1, "")
    assert err == "error: internal error: ZeroDivisionError: division by zero (run with -v for the traceback)\n"
    from toolchain.cli.main import main

    with pytest.raises(ZeroDivisionError):
        main(["-v", "targets", "list"])


def test_ctrl_c_exits_130(monkeypatch, run_cli):
    boom(monkeypatch, KeyboardInterrupt())
    code, out, err = run_cli("targets", "list")
    assert (code, out, err.strip()) == (130, "", "aborted")


def test_sigterm_exits_143_and_the_handler_is_restored(monkeypatch, run_cli):
    before = signal.getsignal(signal.SIGTERM)
    boom(monkeypatch, lambda: os.kill(os.getpid(), signal.SIGTERM))
    code, out, err = run_cli("targets", "list")
    assert (code, out, err) == (143, "", "terminated\n")
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_full_disk_is_a_filesystem_error_exit_19(monkeypatch, run_cli):
    boom(monkeypatch, OSError(errno.ENOSPC, "No space left on device", "/out/x.tflite"))
    code, _, err = run_cli("targets", "list")
    assert code == 19
    assert err == "error: cannot write /out/x.tflite: No space left on device\n"


def test_another_os_error_is_an_internal_error(monkeypatch, run_cli):
    boom(monkeypatch, OSError(errno.ECONNREFUSED, "Connection refused"))
    code, _, err = run_cli("targets", "list")
    assert code == 1 and err.startswith("error: internal error: ConnectionRefusedError")


def test_the_exit_code_of_every_error_class_is_distinct():
    from toolchain import errors

    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.ToolchainError)]
    codes = [c.exit_code for c in classes if c is not errors.ToolchainError]
    assert len(codes) >= 18 and len(set(codes)) == len(codes) and set(codes) <= set(range(3, 26))


def test_compare_without_a_build_and_with_a_copy_of_the_shipped_recipe(tmp_path, run_cli):
    recipe = tmp_path / "mobilenet.yaml"
    shutil.copy(MOBILENET, recipe)
    b = build_folder(tmp_path)
    code, out, _ = run_cli("compare", recipe, "--build-dir", b, "--format", "json")
    assert code == 0 and len(json.loads(out)["rows"]) == 4


def test_a_sigterm_wrapped_by_a_library_still_exits_143(monkeypatch, capfd):
    """TensorFlow turns an exception raised in a callback it runs into its own error: the signal decides."""
    import toolchain.cli.main as m

    def wrapped(**kwargs):
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler raises Terminated at the next bytecode
            signal.pause()  # not reached
        except m.Terminated as exc:
            raise RuntimeError("tensorflow: an error occurred in a callback") from exc

    monkeypatch.setattr(m.cli, "main", wrapped)
    with pytest.raises(SystemExit) as exc:
        m.main(["build", "x.yaml"])
    assert exc.value.code == 143 and capfd.readouterr().err.strip() == "terminated"


def test_an_error_without_a_signal_is_still_an_internal_error(monkeypatch, capfd):
    import toolchain.cli.main as m

    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(m.cli, "main", broken)
    with pytest.raises(SystemExit) as exc:
        m.main(["build", "x.yaml"])
    assert exc.value.code == 1 and "internal error: RuntimeError: boom" in capfd.readouterr().err

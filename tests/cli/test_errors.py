"""Crashes and silent acceptance turned into one error line with its own exit code, through the CLI: crafted
.tflite files (bad indices, huge declared tensors), empty --plans / --fail-on, NaN against a diff rule, build
roots in diff, click's usage errors, control characters in messages, -v anywhere, a two-output classifier."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.cli.test_cli import FIXTURES, MOBILENET, build_folder
from tests.conftest import write_recipe
from toolchain.tflite_model import MAX_DECLARED_BYTES, GraphBuilder

V2 = FIXTURES / "build-v2.json"


def float_graph(shape=(1, 4), between=None) -> GraphBuilder:
    """x -> RESHAPE -> (a tensor of shape ``between``) -> RESHAPE -> y, all float32."""
    g = GraphBuilder()
    x = g.tensor(list(shape), "float32", name="x")
    mid = g.tensor(list(between or shape), "float32", name="huge")
    y = g.tensor(list(shape), "float32", name="y")
    g.op("RESHAPE", [x], [mid])
    g.op("RESHAPE", [mid], [y])
    return g


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


# crafted .tflite files


def _opcode(g):
    g._ops[0].opcodeIndex = 5


def _op_input(g):
    g._ops[1].inputs = [7]


def _op_output(g):
    g._ops[0].outputs = [-1]  # -1 is an optional input left out, never an output


def _buffer(g):
    g._tensors[0].buffer = 9


@pytest.mark.parametrize(
    ("edit", "outputs", "message"),
    [
        (_opcode, [2], "operator 0: opcode index 5 does not exist (the model has 1 operator codes)"),
        (_op_input, [2], "operator 1 (RESHAPE) inputs: tensor 7 does not exist (the subgraph has 3 tensors)"),
        (_op_output, [2], "operator 0 (RESHAPE) outputs: tensor -1 does not exist (the subgraph has 3 tensors)"),
        (None, [3], "the subgraph's outputs: tensor 3 does not exist (the subgraph has 3 tensors)"),
        (_buffer, [2], "tensor 0: buffer 9 does not exist (the model has 1 buffers)"),
    ],
    ids=["opcode", "op-input", "op-output", "graph-output", "buffer"],
)
def test_inspect_of_an_out_of_range_index_is_one_line_exit_5(edit, outputs, message, tmp_path, run_cli):
    g = float_graph()
    if edit:
        edit(g)
    path = tmp_path / "m.tflite"
    path.write_bytes(g.to_bytes([0], outputs))
    code, out, err = run_cli("inspect", path)
    assert (code, out) == (5, "")
    assert one_line(err) == f"error: {path}: {message}\n"


# Run by a small Python process: a child forked straight from pytest (hundreds of MB, TensorFlow loaded) would
# start with pytest's pages resident, and Linux keeps that high-water mark across exec.
_MEASURE = """import os, subprocess, sys
with open(sys.argv[1], "w") as o, open(sys.argv[2], "w") as e:
    proc = subprocess.Popen(sys.argv[4:], stdout=o, stderr=e)
    _, status, usage = os.wait4(proc.pid, 0)
open(sys.argv[3], "w").write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


def _maxrss_mb(args: list[str], cwd) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m toolchain ARGS`` in a fresh process; its own peak resident memory in MB (``wait4``)."""
    out, err, rc = cwd / "stdout", cwd / "stderr", cwd / "rc"
    cmd = [sys.executable, "-c", _MEASURE, out, err, rc, sys.executable, "-m", "toolchain", *args]
    subprocess.run(cmd, cwd=cwd, check=True, timeout=300)
    code, kb = map(int, rc.read_text().split())
    return subprocess.CompletedProcess(args, code, out.read_text(), err.read_text()), kb / 1024


def test_a_tensor_of_2_31_floats_is_refused_before_anything_allocates_it(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(float_graph(between=[2, 2**30]).to_bytes([0], [2]))  # 2^31 floats: 8 GiB, in 424 bytes
    assert model.stat().st_size < 14_000
    said = "tensor 1 'huge' declares shape [2, 1073741824] of float32: 8,589,934,592 bytes, over the 2,147,483,648"
    proc, mb = _maxrss_mb(["inspect", str(model)], tmp_path)
    assert (proc.returncode, proc.stdout) == (5, "") and mb < 500, (proc.stderr, mb)
    assert one_line(proc.stderr).startswith(f"error: {model}: {said}")

    recipe = write_recipe(
        tmp_path,
        f"""
        schema_version: 1
        name: huge
        model: {{file: {model}}}
        data: {{builtin: digits}}
        targets: [phone-cpu]
        """,
    )
    proc, mb = _maxrss_mb(["build", str(recipe), "--build-dir", str(tmp_path / "b")], tmp_path)
    assert (proc.returncode, proc.stdout) == (5, "") and mb < 500, (proc.stderr, mb)
    assert one_line(proc.stderr).startswith(f"error: model.file: {model}: {said}")
    assert not (tmp_path / "b" / "huge").exists()


def test_activations_over_the_bound_in_all_are_refused_naming_the_largest(tmp_path, run_cli):
    g = GraphBuilder()
    quarter = [MAX_DECLARED_BYTES // 4 // 4]  # float32: a quarter of the bound each
    ts = [g.tensor(quarter, "float32", name=f"t{i}") for i in range(5)]
    for a, b in zip(ts, ts[1:], strict=False):
        g.op("RESHAPE", [a], [b])
    path = tmp_path / "m.tflite"
    path.write_bytes(g.to_bytes([ts[0]], [ts[-1]]))
    code, _, err = run_cli("inspect", path)
    assert code == 5
    assert one_line(err).startswith(f"error: {path}: the non-constant tensors declare 2,684,354,560 bytes in all")
    assert "(the largest: tensor 0 't0', shape [134217728] of float32)" in err


def test_a_model_under_the_bound_still_inspects(tmp_path, run_cli):
    path = tmp_path / "m.tflite"
    path.write_bytes(float_graph(between=[1, 2**20]).to_bytes([0], [2]))
    code, out, _ = run_cli("inspect", path, "--json")
    assert code == 0 and json.loads(out)["tensors"][1]["shape"] == [1, 2**20]


# compare --plans and diff --fail-on: empty lists, NaN


@pytest.mark.parametrize("plans", [",", "", "int8,", " , int8"])
def test_compare_of_an_empty_plan_is_a_usage_error(plans, tmp_path, run_cli):
    code, out, err = run_cli("compare", MOBILENET, "--plans", plans, "--build-dir", tmp_path / "b")
    assert (code, out) == (2, "")
    assert one_line(err).startswith(f"error: Invalid value for '--plans': {plans!r} has an empty plan")
    assert err.rstrip().endswith("(see 'toolchain compare --help')")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("rules", [",", "", "size>+2%,", "size>+2%,,arena>+0"])
def test_diff_of_no_rule_or_an_empty_rule_is_refused(rules, run_cli):
    code, out, err = run_cli("diff", V2, V2, "--fail-on", rules)
    assert (code, out) == (3, "")
    assert one_line(err).startswith(f"error: --fail-on: cannot read an empty rule in {rules!r}: write QUANTITY>")


def _top1(target: str, value):
    def change(record):
        next(r for r in record["results"] if r["target"] == target)["metrics"]["top1"] = value

    return change


@pytest.mark.parametrize(("value", "said"), [(float("nan"), "NaN in B"), (None, "missing in B")])
def test_a_nan_or_a_lost_value_fails_a_diff_rule(value, said, tmp_path, run_cli):
    b = build_folder(tmp_path, change=_top1("cortex-m7", value))
    code, out, err = run_cli("diff", V2, b / "mobilenet", "--fail-on", "accuracy<-0.5", "--format", "json")
    rows = {r["target"]: r for r in json.loads(out)["rows"]}
    assert code == 20 and rows["cortex-m7"]["regressions"] == [f"accuracy {said} (rule accuracy<-0.5)"]
    assert all(not r["regressions"] for t, r in rows.items() if t != "cortex-m7")
    assert one_line(err).rstrip().endswith(f"cortex-m7: accuracy {said} (rule accuracy<-0.5)")
    code, _, err = run_cli("diff", b / "mobilenet", b / "mobilenet", "--fail-on", "accuracy<-0.5")
    assert code == (20 if value is not None else 0)  # NaN against NaN fails too; nothing against nothing passes


# diff of build roots


def _add_recipe(root, name):
    record = json.loads(V2.read_text())
    record["recipe"] = name
    (root / name).mkdir()
    (root / name / "build.json").write_text(json.dumps(record))


def test_diff_of_two_build_roots_matches_recipes_by_name(tmp_path, run_cli):
    from tests.cli.test_cli import bigger_m7

    a, b = build_folder(tmp_path, "a"), build_folder(tmp_path, "b", change=bigger_m7)
    _add_recipe(a, "old")
    _add_recipe(b, "new")
    code, out, err = run_cli("diff", a, b, "--format", "json")
    table = json.loads(out)
    assert code == 0, err
    assert (list(table["recipes"]), table["only_in_a"], table["only_in_b"]) == (["mobilenet"], ["old"], ["new"])
    m7 = next(r for r in table["recipes"]["mobilenet"]["rows"] if r["target"] == "cortex-m7")
    assert m7["b"]["size"] == int(m7["a"]["size"] * 1.1)

    code, out, _ = run_cli("diff", a, b, "--format", "md")
    assert code == 0 and out.count("# Diff: mobilenet → mobilenet") == 1
    assert f"only in {a}: old\nonly in {b}: new\n" in out

    code, _, err = run_cli("diff", a, b, "--fail-on", "size>+2%")
    assert code == 20
    assert one_line(err) == (
        f"error: {b} regressed against {a}: mobilenet/cortex-m7: size +10% (rule size>+2%) | old: recipe missing "
        "from B\n"
    )


def test_diff_of_a_build_against_a_root_and_of_a_root_with_itself(tmp_path, run_cli):
    a = build_folder(tmp_path, "a")
    _add_recipe(a, "other")
    code, out, _ = run_cli("diff", V2, a, "--format", "json", "--fail-on", "size>+0")
    table = json.loads(out)
    assert code == 0 and list(table["recipes"]) == ["mobilenet"] and table["only_in_b"] == []
    code, out, _ = run_cli("diff", a, a, "--format", "json", "--fail-on", "size>+0")
    assert code == 0 and list(json.loads(out)["recipes"]) == ["mobilenet", "other"]
    code, out, _ = run_cli("diff", a / "mobilenet", V2, "--format", "json")  # two builds: the table as before
    assert code == 0 and "rows" in json.loads(out) and "recipes" not in json.loads(out)


def test_diff_of_roots_without_a_common_recipe_or_of_an_empty_folder(tmp_path, run_cli):
    a = tmp_path / "a"
    a.mkdir()
    _add_recipe(a, "one")
    b = tmp_path / "b"
    b.mkdir()
    _add_recipe(b, "two")
    code, out, err = run_cli("diff", a, b)
    assert (code, out) == (5, "")
    assert one_line(err) == f"error: {a} and {b} have no recipe in common ({a}: one; {b}: two)\n"
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli("diff", tmp_path / "empty", b)
    assert code == 5 and one_line(err).startswith(f"error: {tmp_path / 'empty'}: no build record here (no build.json")


# click's usage errors, control characters, -v anywhere, no hint for a user's error


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["build", "x.yaml", "-j", "0"], "Invalid value for '-j' / '--jobs': 0 is not in the range x>=1."),
        (["build", "{tmp}"], "Invalid value for 'RECIPE': File '{tmp}' is a directory."),
        (["inspect", "{tmp}"], "Invalid value for 'MODEL': File '{tmp}' is a directory."),
        (["frobnicate"], "No such command 'frobnicate'."),
    ],
    ids=["jobs-0", "build-dir", "inspect-dir", "command"],
)
def test_a_usage_error_is_one_error_line_exit_2(args, message, tmp_path, run_cli):
    code, out, err = run_cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    command = "toolchain" if args == ["frobnicate"] else f"toolchain {args[0]}"
    assert (code, out) == (2, "")
    assert one_line(err) == f"error: {message.replace('{tmp}', str(tmp_path))} (see '{command} --help')\n"


def test_a_newline_or_escape_in_a_path_stays_on_one_line(tmp_path, run_cli):
    path = tmp_path / "a\nb\x1b[31m.yaml"
    code, _, err = run_cli("recipe", "check", path)
    assert code == 22
    assert one_line(err) == f"error: {tmp_path}/a\\nb\\x1b[31m.yaml: file not found\n"


def test_v_counts_after_the_command_and_a_users_error_has_no_hint(tmp_path, run_cli):
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 1\nname: x\nmodel: [\n")
    code, _, quiet = run_cli("recipe", "check", bad)
    assert code == 3 and "run with -v" not in one_line(quiet)
    for args in (("recipe", "check", bad, "-v"), ("recipe", "--verbose", "check", bad)):
        code, _, loud = run_cli(*args)
        assert code == 3 and "Traceback (most recent call last)" in loud and "ConfigError" in loud, args
        assert loud.strip().splitlines()[-1] == quiet.strip()
    code, _, err = run_cli("recipe", "check", "--", "-v")  # after '--' it is an argument, a file name
    assert code == 22 and one_line(err) == "error: -v: file not found\n"


# a classifier with two outputs, trained from the recipe


@pytest.mark.tf
def test_a_two_output_classifier_trained_from_the_recipe_is_refused(tmp_path, keras, run_cli):
    x = keras.Input((8, 8, 1), name="x")
    h = keras.layers.Flatten()(x)
    two = [keras.layers.Dense(10, activation="softmax", name=n)(h) for n in ("first", "second")]
    keras.Model(x, two, name="twohead").save(tmp_path / "m.keras")
    recipe = write_recipe(
        tmp_path,
        f"""
        schema_version: 1
        name: two
        model: {{file: {tmp_path / "m.keras"}, classes: 10}}
        data: {{builtin: digits}}
        train: {{epochs: 1}}
        targets: [phone-cpu]
        """,
    )
    code, out, err = run_cli("build", recipe, "--build-dir", tmp_path / "b")
    assert (code, out) == (5, "")
    assert one_line(err.splitlines()[-1] + "\n") == (
        "error: train: a classification model trained from the recipe must have one output; twohead has 2 "
        "(first, second): train it outside the toolchain and build it without 'train'\n"
    )
    assert not (tmp_path / "b" / "two" / "phone-cpu").exists()

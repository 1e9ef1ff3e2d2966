"""The summary table is drawn without rich, in the shape rich draws it: the same bytes for the same cells."""

import io

import pytest

from tests.conftest import REPO
from toolchain.record import load_record
from toolchain.report.table import box_table


def _rich(title: str, columns: list[tuple[str, str]], rows: list[list[str]]) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for header, justify in columns:
        table.add_column(header, justify=justify)
    for row in rows:
        table.add_row(*row)
    out = io.StringIO()
    Console(file=out, width=200).print(table)
    return out.getvalue()


CASES = [
    ("t", [("a", "left")], [["x"]]),
    ("two", [("a", "left"), ("b", "right")], [["1", "22"], ["333", "4"]]),
    ("odd", [("target", "left"), ("ms", "right")], [["phone-cpu", "~59.3 (est.)"], ["m7", "-"]]),
    ("no rows", [("x", "right"), ("y", "left")], []),
]


@pytest.mark.parametrize(("title", "columns", "rows"), CASES, ids=[c[0] for c in CASES])
def test_box_table_draws_what_rich_draws(title, columns, rows):
    assert box_table(title, columns, rows) == _rich(title, columns, rows)


def test_a_title_wider_than_the_table_stays_on_one_line():
    text = box_table("a long title over a narrow table", [("a", "left")], [["1"]])
    assert text.splitlines()[0] == "a long title over a narrow table" and text.splitlines()[1] == "┏━━━┓"


@pytest.mark.parametrize("fixture", ["build-v1.json", "build-v2.json"])
def test_the_build_summary_is_rich_s_table_of_the_record(fixture, capsys):
    from toolchain.report.console import print_summary

    record = load_record(REPO / "tests" / "fixtures" / fixture)
    print_summary(record, wide=True)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 + len(record.results) and lines[2].startswith("┃ target")
    assert [line.split("│")[1].strip() for line in lines[4:-1]] == [r.target for r in record.results]
    assert len({len(line) for line in lines}) == 1  # every line as wide as the table


# fitting the terminal: wrapping, then dropping columns by priority

from toolchain.report.table import KEY, Column, layout, plain_table, terminal_width  # noqa: E402

SYNTHETIC = [
    Column("target"),
    Column("mode"),
    Column("low", "right", priority=1),
    Column("high", "right", priority=3),
    Column("mid", "right", priority=2),
    Column("result", wrap=True),
]
ROWS = [
    ["ethos-u55-128 [int16x8]", "int16x8", "1234567", "7654321", "55555", "pass"],
    ["cortex-m7", "int8", "1", "2", "3", "FAIL: gate max_accuracy_drop; fit; runtime tflm crashed in allocate"],
]


def _headers(text: str) -> list[str]:
    return [h.strip() for h in next(line for line in text.splitlines() if line.startswith("┃")).strip("┃").split("┃")]


def test_columns_are_dropped_lowest_priority_first_and_named_in_the_footer():
    full = box_table("t", SYNTHETIC, ROWS)
    assert _headers(full) == ["target", "mode", "low", "high", "mid", "result"]
    widest = max(len(line) for line in full.splitlines())
    text = box_table("t", SYNTHETIC, ROWS, width=widest - 1)  # one character short: the result wraps first
    assert _headers(text) == ["target", "mode", "low", "high", "mid", "result"]
    assert all(len(line) <= widest - 1 for line in text.splitlines()) and "hidden" not in text
    text = box_table("t", SYNTHETIC, ROWS, width=70)
    lines = text.splitlines()
    assert _headers(text) == ["target", "mode", "high", "result"]  # low (1) then mid (2) went
    assert lines[-1] == "hidden to fit 70 columns: low, mid (--wide shows all)"
    assert all(len(line) <= 70 for line in lines) and "…" not in text
    body = [line for line in lines if line.startswith("│")]
    assert body[0].startswith("│ ethos-u55-128 [int16x8] │ int16x8 │")  # key cells whole
    result = " ".join(line.split("│")[-2].strip() for line in body[1:])
    assert result == ROWS[1][-1] and len(body) > len(ROWS)  # wrapped over lines, every word kept


def test_key_columns_are_never_dropped_nor_cut_even_when_they_do_not_fit():
    text = box_table("t", SYNTHETIC, ROWS, width=20)
    assert _headers(text) == ["target", "mode", "result"]
    assert "ethos-u55-128 [int16x8]" in text and "int16x8" in text
    assert " ".join(text.split()).endswith("┘ hidden to fit 20 columns: low, high, mid (--wide shows all)")


def test_a_folding_column_breaks_words_without_spaces():
    cols = [Column("#", "right"), Column("name", fold=True)]
    name = "sequential/dense_1/MatMul;sequential/dense_1/Relu;sequential/dense_1/BiasAdd"
    text = box_table("tensors", cols, [["8", name]], width=40)
    assert all(len(line) <= 40 for line in text.splitlines())
    assert "".join(line.split("│")[2].strip() for line in text.splitlines() if line.startswith("│")) == name


def test_layout_of_a_wide_table_keeps_every_column_at_full_width():
    lay = layout(SYNTHETIC, ROWS, None, lambda n: 3 * n + 1)
    assert lay.dropped == [] and lay.widths == [23, 7, 7, 7, 5, len(ROWS[1][-1])]
    assert [c.priority for c in lay.columns][:2] == [KEY, KEY]


def test_plain_table_wraps_the_last_column_under_itself():
    cols = [Column("name"), Column("kind"), Column("checks", priority=1), Column("description", wrap=True)]
    rows = [["cortex-m7", "mcu", "litert,tflm", "Cortex-M7 MCU, 512 KB RAM, 2 MB flash, 216 MHz, tflite-micro"]]
    lines = plain_table(cols, rows, width=50).splitlines()
    assert lines[0].startswith("cortex-m7  mcu  litert,tflm  Cortex-M7") and all(len(x) <= 50 for x in lines)
    indent = lines[0].index("Cortex-M7")
    assert all(x.startswith(" " * indent) and x[indent] != " " for x in lines[1:])
    assert " ".join(x.strip() for x in [lines[0][indent:], *lines[1:]]) == rows[0][3]
    narrow = plain_table(cols, rows, width=30)
    assert "litert,tflm" not in narrow and " ".join(narrow.split()).endswith(
        "hidden to fit 30 columns: checks (--wide shows all)"
    )
    assert plain_table(cols, rows).splitlines() == ["  ".join(rows[0])]


def test_the_width_is_columns_else_80_off_a_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "123")
    assert terminal_width() == 123
    monkeypatch.delenv("COLUMNS")
    assert terminal_width() == 80  # pytest's stdout is no terminal

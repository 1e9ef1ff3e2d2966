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
    print_summary(record)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 + len(record.results) and lines[2].startswith("┃ target")
    assert [line.split("│")[1].strip() for line in lines[4:-1]] == [r.target for r in record.results]
    assert len({len(line) for line in lines}) == 1  # every line as wide as the table

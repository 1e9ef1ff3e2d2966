"""Text tables that fit the terminal: box-drawn (the shape rich's default table prints, without loading rich: the
build's summary is on the path of every warm rebuild, where importing rich cost more than the rest of the report)
or plain columns.

Each column has a priority: when the table is wider than the terminal, wrapping columns wrap (at spaces, long words
folded) and then the lowest-priority columns are dropped until it fits; ``KEY`` columns are never dropped and
never cut. A footer names the dropped columns; ``width=None`` (``--wide``) shows every column at its full width.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from dataclasses import dataclass

KEY = 100  # the priority of a column that is never dropped
WRAP_MIN = 8  # a wrapping column keeps at least this width (or its longest word)


@dataclass(frozen=True)
class Column:
    header: str
    justify: str = "left"  # or "right"
    priority: int = KEY  # lower: dropped first
    wrap: bool = False  # may wrap over several lines (at spaces)
    fold: bool = False  # may wrap inside words too (names without spaces)


def terminal_width() -> int:
    """What rich's Console uses: ``COLUMNS``, else the terminal's width, else 80 (not a terminal)."""
    env = os.environ.get("COLUMNS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return 80


def _as_columns(columns: list) -> list[Column]:
    return [c if isinstance(c, Column) else Column(c[0], c[1]) for c in columns]


def _natural(texts: list[str]) -> int:
    return max(len(line) for t in texts for line in t.split("\n"))


def _minimum(col: Column, texts: list[str]) -> int:
    natural = _natural(texts)
    if col.fold:
        return min(natural, 2 * WRAP_MIN)
    if not col.wrap:
        return natural
    longest = max((len(w) for t in texts for w in t.split()), default=0)
    return min(natural, max(longest, WRAP_MIN))


@dataclass
class Layout:
    columns: list[Column]
    rows: list[list[str]]
    widths: list[int]
    dropped: list[str]


def layout(columns: list, rows: list[list[str]], width: int | None, overhead, headers: bool = True) -> Layout:
    """Which columns to show and how wide, for a table at most ``width`` wide (None: all, at full width);
    ``overhead(n)``: the characters borders and padding take around ``n`` columns; ``headers``: whether the
    headers are printed (and so need their width)."""
    columns = _as_columns(columns)
    texts = [[c.header if headers else "", *(r[i] for r in rows)] for i, c in enumerate(columns)]
    kept = list(range(len(columns)))
    if width is not None:
        mins = [_minimum(c, t) for c, t in zip(columns, texts, strict=True)]
        for i in sorted(
            (i for i, c in enumerate(columns) if c.priority < KEY), key=lambda i: (columns[i].priority, -i)
        ):
            if sum(mins[k] for k in kept) + overhead(len(kept)) <= width:
                break
            kept.remove(i)
    widths = [_natural(texts[i]) for i in kept]
    if width is not None:
        floor = [_minimum(columns[i], texts[i]) for i in kept]
        while sum(widths) + overhead(len(kept)) > width:
            shrinkable = [j for j in range(len(kept)) if widths[j] > floor[j]]
            if not shrinkable:
                break
            widths[max(shrinkable, key=lambda j: widths[j])] -= 1
    return Layout(
        [columns[i] for i in kept],
        [[r[i] for i in kept] for r in rows],
        widths,
        [columns[i].header for i in range(len(columns)) if i not in kept],
    )


def _wrap(text: str, width: int) -> list[str]:
    lines = []
    for part in text.split("\n"):
        lines += textwrap.wrap(part, width, break_on_hyphens=False) if len(part) > width else [part]
    return lines


def _cells(lay: Layout, values: list[str]) -> list[list[str]]:
    """The lines of one row: each cell wrapped to its column and padded to the row's height."""
    wrapped = [_wrap(v, w) for v, w in zip(values, lay.widths, strict=True)]
    height = max(len(w) for w in wrapped)
    return [[(w[k] if k < len(w) else "") for w in wrapped] for k in range(height)]


def _pad(v: str, w: int, justify: str) -> str:
    return v.ljust(w) if justify == "left" else v.rjust(w)


def dropped_note(dropped: list[str], width: int | None) -> str:
    """The footer naming the columns left out (empty when none was)."""
    if not dropped:
        return ""
    text = f"hidden to fit {width} columns: {', '.join(dropped)} (--wide shows all)"
    return "\n".join(textwrap.wrap(text, width or len(text))) + "\n"


def footer(lines: list[str], width: int | None) -> str:
    """Lines under a table, each wrapped to ``width``."""
    out = [
        w
        for line in lines
        for w in (textwrap.wrap(line, width, break_on_hyphens=False) if width and len(line) > width else [line])
    ]
    return "".join(f"{line}\n" for line in out)


def box_table(title: str, columns: list, rows: list[list[str]], width: int | None = None) -> str:
    """``columns``: ``Column``s or (header, ``left`` or ``right``); every cell padded by one space; the title centred
    above. At most ``width`` wide (see the module); the footer names any column dropped."""
    lay = layout(columns, rows, width, lambda n: 3 * n + 1)
    widths = lay.widths

    def line(left: str, fill: str, mid: str, right: str) -> str:
        return left + mid.join(fill * (w + 2) for w in widths) + right

    def cells(values: list[str], bar: str) -> list[str]:
        return [
            bar
            + bar.join(f" {_pad(v, w, c.justify)} " for v, w, c in zip(line_, widths, lay.columns, strict=True))
            + bar
            for line_ in _cells(lay, values)
        ]

    table_width = sum(widths) + 3 * len(widths) + 1
    out = []
    for t in textwrap.wrap(title, width) if width and len(title) > max(width, table_width) else [title]:
        excess = max(0, table_width - len(t))
        out.append(" " * (excess // 2) + t + " " * (excess - excess // 2))
    out += [line("┏", "━", "┳", "┓"), *cells([c.header for c in lay.columns], "┃"), line("┡", "━", "╇", "┩")]
    for r in lay.rows:
        out += cells(r, "│")
    out.append(line("└", "─", "┴", "┘"))
    return "\n".join(out) + "\n" + dropped_note(lay.dropped, width)


def plain_table(columns: list, rows: list[list[str]], width: int | None = None) -> str:
    """Columns separated by two spaces, no header, no borders (``targets list``); wrapped lines continue under
    their column. At most ``width`` wide, like ``box_table``."""
    lay = layout(columns, rows, width, lambda n: 2 * max(0, n - 1), headers=False)
    out = []
    for r in lay.rows:
        for line_ in _cells(lay, r):
            out.append(
                "  ".join(
                    _pad(v, w, c.justify) for v, w, c in zip(line_, lay.widths, lay.columns, strict=True)
                ).rstrip()
            )
    return "".join(f"{line}\n" for line in out) + dropped_note(lay.dropped, width)

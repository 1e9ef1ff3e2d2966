"""A box-drawn text table (the shape rich's default table prints, without loading rich: the build's summary is on
the path of every warm rebuild, where importing rich cost more than the rest of the report)."""

from __future__ import annotations


def box_table(title: str, columns: list[tuple[str, str]], rows: list[list[str]]) -> str:
    """``columns``: (header, ``left`` or ``right``); every cell padded by one space; the title centred above."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, (h, _) in enumerate(columns)]

    def line(left: str, fill: str, mid: str, right: str) -> str:
        return left + mid.join(fill * (w + 2) for w in widths) + right

    def cells(values: list[str], bar: str) -> str:
        padded = [
            v.ljust(w) if j == "left" else v.rjust(w) for v, w, (_, j) in zip(values, widths, columns, strict=True)
        ]
        return bar + bar.join(f" {p} " for p in padded) + bar

    width = sum(widths) + 3 * len(widths) + 1
    excess = max(0, width - len(title))
    out = [" " * (excess // 2) + title + " " * (excess - excess // 2)]
    out += [line("┏", "━", "┳", "┓"), cells([h for h, _ in columns], "┃"), line("┡", "━", "╇", "┩")]
    out += [cells(r, "│") for r in rows] + [line("└", "─", "┴", "┘")]
    return "\n".join(out) + "\n"

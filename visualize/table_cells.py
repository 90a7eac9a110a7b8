"""The cells of the pictures drawn as tables rather than nodes and edges: the lag view's heatmap and
reach curve, the step view's heatmap by unit (unit_view) and its compact strips (strip_view).

Each is one HTML-like table of Graphviz (one node, shape plaintext): a row of cells per line of the
picture, one column per state or time step. Here are its pieces: small text, a bar of stacked cells,
the labels under the columns, a cell shaded by a size, and how many states one column holds.
"""

from __future__ import annotations

import math

from visualize import style

__all__ = ["WIDEST", "TEXT", "ZERO", "small", "bar", "ticks", "column_stride", "cell_width", "shade"]

# A table keeps at most WIDEST columns (a longer run puts several states in one), about 750 px.
# ZERO marks an exact 0 (a unit that got nothing), outside the shades of a size.
WIDEST = 140
ZERO = "#f2c94c"
TEXT = 8  # points: the smallest text of a table, 9 px or more where a wide one is shrunk to a column


def small(text, size: int = TEXT) -> str:
    """Text in a small font (a FONT element may not be empty: nothing for no text)."""
    return f'<FONT POINT-SIZE="{size}">{text}</FONT>' if text != "" else ""


def bar(width: int, pieces: list) -> str:
    """One column of a bar chart: fixed-size cells stacked top to bottom, (colour, height) each."""
    cells = "".join(f'<TR><TD FIXEDSIZE="TRUE" WIDTH="{width}" HEIGHT="{round(h)}" BGCOLOR="{c}"></TD></TR>'
                    for c, h in pieces if round(h) > 0)
    return f'<TD><TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="0">{cells}</TABLE></TD>'


def ticks(count: int, every: int, text, size: int = TEXT) -> str:
    """A row of labels under ``count`` columns, one every ``every`` columns, ``text(column)`` each,
    spanning its group (so a long label does not widen its column)."""
    starts = list(range(0, count, every))
    if len(starts) > 1 and count - starts[-1] < every:  # a short last group joins the one before it
        starts.pop()
    ends = [*starts[1:], count]
    return "".join(f'<TD COLSPAN="{end - start}" ALIGN="LEFT">{small(text(start), size)}</TD>'
                   for start, end in zip(starts, ends))


def column_stride(count: int) -> int:
    """How many states (or time steps) one column holds: 1, or enough to keep WIDEST columns."""
    return max(1, math.ceil(count / WIDEST))


def cell_width(columns: int) -> int:
    """A cell's width in points: about 560 points for the whole row, 3 to 14 a cell."""
    return max(3, min(14, 560 // max(columns, 1)))


def shade(x: float, scale: tuple, width: int, height: int, text: str = "", extra: str = "") -> str:
    """One cell shaded by an absolute size: white for nan (no gradient), ZERO for exactly 0."""
    colour = "#ffffff" if math.isnan(x) else ZERO if x == 0.0 else style.magnitude_fill(x, *scale)
    return f'<TD WIDTH="{width}" HEIGHT="{height}" BGCOLOR="{colour}"{extra}>{text}</TD>'

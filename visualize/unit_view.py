"""The step view split by unit: ``draw_steps(loss, states, by="unit")`` (or ``by="row"``).

A heatmap of ``tinygrad_rnn.diagnostics.steps(loss, states, by=...)``: one row per unit of the state
(per batch row), one column per state s_t, each cell shaded by that unit's (row's) ||delta_t||, the
gradient that reached it from outside time step t. An exact 0 has a colour of its own (ZERO), apart
from the shades of a size, so a dead unit, one that carries nothing back, shows. The state's parts
come one after the other (an LSTM's h units, then its c units), never summed. A long run keeps at
most WIDEST columns, several states in one (the largest of each norm over them, so the last column
holds s_T); a wide state names its rows in groups. A nan or inf has a mark of its own (NONFINITE).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from graphviz import Digraph

from tinygrad_rnn import diagnostics
from visualize import style
from visualize.step_run import AXES, LINE, StepRun, caption, prepare_run, subscript, wrap_words
from visualize.strip_view import NONFINITE
from visualize.table_cells import TEXT, ZERO, cell_width, column_stride, shade, small, ticks

__all__ = ["draw_split", "NUMBERED", "NUMBERED_ROWS", "LABELLED"]

# Up to NUMBERED columns and NUMBERED_ROWS rows the cells print their numbers; up to LABELLED rows
# each is named.
NUMBERED, NUMBERED_ROWS, LABELLED = 16, 24, 64


def draw_split(loss, states: Sequence, name: str | None, axis: str, digits: int, title: str | None,
               by: str) -> Digraph:
    """draw_steps(..., by=by): one row per unit (batch row), one column per state (module doc)."""
    if by not in diagnostics.SPLITS:
        raise ValueError(f"draw_steps: by must be one of {', '.join(map(repr, diagnostics.SPLITS))} or None, "
                         f"got {by!r}")
    run = prepare_run(loss, states, name, axis, "draw_steps", bound=None)
    split = diagnostics.steps(loss, list(states), by=by)
    words, T, count = AXES[axis], split.length, len(split.labels)
    stride = column_stride(T + 1)
    shown = list(range(0, T + 1, stride))  # each column's first state; it holds up to ``stride`` states
    blocks = [range(t, min(t + stride, T + 1)) for t in shown]
    reached = [r.grad_norm is not None for r in run.rows]  # nan in split.grad_norm: none reached s_t, or a NaN
    marks = set()
    numbered = len(shown) <= NUMBERED and count <= NUMBERED_ROWS
    width = 30 if numbered else cell_width(len(shown))
    height = 14 if numbered else 10 if count <= LABELLED else max(3, min(10, 640 // count))
    group = 1 if count <= LABELLED else math.ceil(count / 32)  # rows named together, one label each
    scale = style.magnitude_range(split.grad_norm[np.isfinite(split.grad_norm)].ravel())
    table = []
    for _, first, size in split.parts:
        if table:  # a gap between the parts of the state (h above, c below)
            table.append(f'<TR><TD COLSPAN="{len(shown) + 1}" HEIGHT="5"></TD></TR>')
        for k in range(first, first + size):
            cells = []
            if (k - first) % group == 0:
                span = min(group, first + size - k)
                shown_name = split.labels[k] if span == 1 else f"{split.labels[k]}–{split.labels[k + span - 1]}"
                cells.append(f'<TD ROWSPAN="{span}" ALIGN="RIGHT">{small(style.text(shown_name, 30), TEXT)}</TD>')
            for block in blocks:
                x, odd = _largest([float(split.grad_norm[t, k]) for t in block if reached[t]])
                text = ""
                if numbered and (odd or not math.isnan(x)):
                    text = f'<FONT POINT-SIZE="7">{style.number(x, digits)}</FONT>'
                if not odd:
                    cells.append(shade(x, scale, width, height, text))
                    marks.add("zero" if x == 0.0 else "none" if math.isnan(x) else "size")
                else:
                    cells.append(f'<TD WIDTH="{width}" HEIGHT="{height}" BGCOLOR="{NONFINITE}">{text}</TD>')
                    marks.add("nonfinite")
            table.append(f"<TR>{''.join(cells)}</TR>")
    every = 1 if numbered else max(1, round(len(shown) / 10))
    table.append(f'<TR><TD ALIGN="RIGHT">{small(words["index"] + " →", TEXT)}</TD>'
                 f'{ticks(len(shown), every, lambda c: str(shown[c]))}</TR>')
    body = f'<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="1" CELLPADDING="0">{"".join(table)}</TABLE>'
    dot = style.base_digraph("step_view_by_" + by)
    dot.node("split", label=style.html_label(body), shape="plaintext")
    dot.attr("graph", label=_split_legend(title, run, split, scale, stride, axis, numbered, marks))
    return dot


def _largest(values: list[float]) -> tuple[float, bool]:
    """(what one cell shows for the norms of its states that a gradient reached, whether it is not a
    finite number): the largest; the first nan or inf, True (drawn NONFINITE), where any is one; nan,
    False (drawn white), where no gradient reached any."""
    odd = [x for x in values if not math.isfinite(x)]
    if odd:
        return odd[0], True
    return (max(values) if values else math.nan), False


def _split_legend(title: str | None, run: StepRun, split, scale: tuple, stride: int, axis: str,
                  numbered: bool, marks: set) -> str:
    words = AXES[axis]
    i, unit = words["index"], words["unit"]
    sub = f"<SUB>{i}</SUB>"
    batch = run.batch or 1
    letter = style.clean(run.letter, 12)
    count = len(split.labels)
    width = split.grad_norm.shape[1] if split.by == "unit" else sum(size for _, _, size in split.parts)
    if split.by == "unit":
        what = f"{count} units, one a row"
        over = f", over all {batch} batch rows" if batch > 1 else " (one batch row)"
        cell = f"‖δ{sub}‖ of one unit{over}"
    else:
        what = f"{count} batch rows, one a row"
        cell = f"‖δ{sub}‖ of one batch row, over all its units (every part of the state)"
    headline = [f"{split.length} {words['unit' if split.length == 1 else 'units']}", f"state {run.state}", what]
    if not np.isnan(split.grad_norm[0]).all():
        zero = int(np.sum(split.grad_norm[0] == 0.0))
        things = "units" if split.by == "unit" else "batch rows"
        headline.append(f"{zero} of {count} {things} get exactly 0 at {letter}{subscript(0)}")
    odd, held = "", "" if stride == 1 else " (in any state of its column)"
    if "nonfinite" in marks:
        odd = (f'<TD BGCOLOR="{NONFINITE}" WIDTH="38" HEIGHT="18"><FONT POINT-SIZE="9" COLOR="white">inf/nan</FONT>'
               f'</TD>')
        odd_words = f"; green: not a finite number, nan or inf{held} (an overflow or a NaN on the way back)"
    else:
        odd_words = ""
    keys = wrap_words(f"exactly 0: nothing reached it; white: no gradient reached s{sub} at all{odd_words}", LINE - 30)
    rows = [style.magnitude_row(wrap_words(f"cell shade: {cell}: the gradient that reached it in s{sub} from outside "
                                       f"{unit} {i} (absolute values)", LINE - 30), *scale),
            f'<TR><TD ALIGN="RIGHT" BALIGN="RIGHT"><FONT POINT-SIZE="10">{keys}</FONT></TD><TD ALIGN="LEFT">'
            f'<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="1" CELLPADDING="1"><TR><TD BGCOLOR="{ZERO}" WIDTH="38" '
            f'HEIGHT="18"><FONT POINT-SIZE="9">0</FONT></TD><TD BGCOLOR="#ffffff" BORDER="1" COLOR="#d0d0d0" '
            f'WIDTH="38" HEIGHT="18"></TD>{odd}</TR></TABLE></TD></TR>']
    if split.by == "unit":
        names = [name for name, _, _ in split.parts]
        if len(names) > 1:
            layout = (f"rows: the state's parts one after the other ({', '.join(names)}; unit k of each is its own "
                      f"row), never summed; δ{sub} of a part is the gradient reaching that part from outside {unit} "
                      f"{i}, so for an LSTM's c{sub} it leaves out the path c{sub} → h{sub} inside {unit} {i} "
                      f"(c at the last state is 0 when the loss reads h only)")
        else:
            layout = f"rows: the {width} units of s{sub}, in order"
    else:
        layout = f"rows: the {count} batch rows (sequences) of s{sub}, each row's {width} units as one vector"
    notes = [f"δ{sub}: the step view's gradient reaching s{sub} from outside {unit} {i} (from {unit} {i}+1 and any "
             f"loss reading s{sub}); the squares of a column add up to ‖δ{sub}‖², the step view's node number",
             f"{layout}; {words['runs']}, the gradient flows back right to left"]
    if split.multi_read:
        notes.append(f"the loss reads several states, so δ{sub} mixes the gradients of every read from {i} on: a "
                     "unit that gets a loss of its own at every state is never 0 here; the lag view (draw_lags) "
                     "splits the loss by read")
    if stride > 1:
        things = "unit" if split.by == "unit" else "batch row"
        notes.append(f"one column per {stride} states (s<SUB>0</SUB>–s<SUB>{stride - 1}</SUB>, "
                     f"s<SUB>{stride}</SUB>–s<SUB>{2 * stride - 1}</SUB>, …, the last one ending at "
                     f"s<SUB>{split.length}</SUB>; the tick under a column is its first state): each cell is the "
                     f"largest ‖δ‖ of its {things} over them (exactly 0 only where all are); "
                     f"{split.length + 1} states in {len(range(0, split.length + 1, stride))} columns")
    if any(split.cuts):
        notes.append(f"a cut (truncated BPTT) at {sum(split.cuts)} {words['units']}: no gradient crosses it")
    numbers = "; the numbers printed in the cells are the same norms" if numbered else ""
    notes.append(f"steps(loss, states, by={split.by!r}).grad_norm holds every number{numbers}")
    heading = style.clean(title, 200) if title is not None else f"step view by {split.by}"
    rows.insert(0, f'<TR><TD COLSPAN="2" ALIGN="LEFT" BALIGN="LEFT">{caption(heading, headline, "", 14)}</TD></TR>')
    rows.extend(f'<TR><TD COLSPAN="2" ALIGN="LEFT" BALIGN="LEFT"><FONT POINT-SIZE="9" COLOR="{style.MUTED}">'
                f'{wrap_words(note, LINE + 20)}</FONT></TD></TR>' for note in notes)
    return style.legend(None, rows, [])

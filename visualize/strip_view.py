"""Strips: ``compare_steps`` of many runs, where bands of nodes and edges would grow thousands of
pixels tall (above COMPACT_RUNS runs or COMPACT_ROWS wrapped rows, see step_view; or when told,
``compact=True``).

Per run, its name and numbers in words (what its gains multiply to, the same a time step, the
verdict), then two strips of cells on one time axis shared by all runs: a bar per time step for its
gain, down from the line at 1 for a gain below 1 (up above), its length log10(gain) on one log scale
for every run and its colour what the gain compounds to over the run; and ||delta_t|| shaded per
state. No bound ||J_t||_2 is computed: its SVDs are what a long comparison costs. A long run keeps at
most WIDEST columns, several time steps in one (the geometric mean of their gains; the largest
||delta||). A 0 and a number that is not finite (nan, inf) have marks of their own.
"""

from __future__ import annotations

import math

from graphviz import Digraph

from tinygrad_rnn import diagnostics
from visualize import style
from visualize.step_run import (
    AXES,
    GAIN_DECADES,
    LINE,
    StepRun,
    caption,
    compounded,
    power_of_ten,
    summary,
    wrap,
    wrap_words,
)
from visualize.table_cells import TEXT, bar, cell_width, column_stride, shade, small, ticks

__all__ = ["draw_strips", "BAR", "CUT", "NONFINITE"]

BAR = 14  # a gain bar's most length in points, from the line at 1
CUT = "#d9d9d9"  # a cut's full bar (truncated BPTT: no gradient crosses)
# A number that is not finite (nan or inf: an overflow or a NaN on the way back), in either strip: a
# colour outside both scales, the grey of a cut, the yellow of 0 and the white of no gradient.
NONFINITE = style.NONFINITE
CUT_ONLY = "cut"  # _block_gain's answer for a column of cuts only


def _block_gain(rows: list, first: int, last: int) -> float | str | None:
    """The gain of time steps first..last of one run: the geometric mean of the gains there are (a
    cut left out, and a time step whose s_t got no gradient or exactly 0, so has no gain); CUT_ONLY
    for cuts only, None where no time step has a gain; nan where any gain is not a finite number (a
    NaN or an overflow on the way back: no mean of it is a number)."""
    crossed = [r for r in rows[first:last + 1] if not r.cut]
    if not crossed:
        return CUT_ONLY
    gains = [r.gain for r in crossed if r.gain is not None]
    if not gains:
        return None
    if not all(math.isfinite(g) for g in gains):
        return math.nan
    if any(g == 0.0 for g in gains):
        return 0.0
    return 10.0 ** (sum(math.log10(g) for g in gains) / len(gains))  # in logs: no product overflows


def _gain_bar(gain: float | str | None, length: int, decades: float, grows: bool, width: int) -> str:
    """One column of a gain strip: a bar from the line at 1, down for a gain below 1 (up above),
    log10(gain) / decades of BAR, coloured by gain^length; a full bar in CUT for a cut, in NONFINITE
    for a gain that is not a finite number; white, without the line, where there is no gain."""
    height = (BAR if grows else 0.0) + 1 + BAR
    if gain is None:
        return bar(width, [("#ffffff", height)])
    if gain is CUT_ONLY or math.isnan(gain) or math.isinf(gain):
        return bar(width, [(CUT if gain is CUT_ONLY else NONFINITE, height)])
    s = -1.0 if gain == 0.0 else max(-1.0, min(1.0, math.log10(gain) / decades))
    colour = style.colour(compounded(gain, length), GAIN_DECADES)
    down, up = max(-s, 0.0) * BAR, max(s, 0.0) * BAR
    pieces = [("#ffffff", BAR - up), (colour, up)] if grows else []
    return bar(width, [*pieces, (style.INK, 1), (colour, down), ("#ffffff", BAR - down)])


def _block_norm(rows: list) -> float:
    """The ||delta|| one cell of the strip shows for the states of ``rows``: the largest; inf (drawn
    NONFINITE) where any is not a finite number (nan or inf); nan where none got a gradient (white)."""
    held = [r.grad_norm for r in rows if r.grad_norm is not None]
    if any(not math.isfinite(x) for x in held):
        return math.inf
    return max(held) if held else math.nan


def _norm_cell(x: float, scale: tuple, width: int, extra: str) -> str:
    """A cell of the ||delta|| strip: shaded by size, ZERO for exactly 0, white for no gradient (nan),
    NONFINITE for a norm that is not a finite number (given as inf)."""
    if math.isinf(x):
        return f'<TD WIDTH="{width}" HEIGHT="10" BGCOLOR="{NONFINITE}"{extra}></TD>'
    return shade(x, scale, width, 10, extra=extra)


def draw_strips(prepared: list, axis: str, title: str | None) -> Digraph:
    """compare_steps(..., compact=True): two strips per run on one time axis and one scale."""
    words = AXES[axis]
    longest = max(run.length for _, run in prepared)
    stride = column_stride(longest + 1)
    columns = math.ceil((longest + 1) / stride)
    width = cell_width(columns)
    scale = style.magnitude_range(r.grad_norm for _, run in prepared for r in run.rows)
    blocks = {}
    for label, run in prepared:
        for c in range(columns):
            first, last = max(c * stride, 1), min((c + 1) * stride - 1, run.length)
            blocks[label, c] = _block_gain(run.rows, first, last) if first <= last else None
    drawn = [g for g in blocks.values() if isinstance(g, float) and g > 0 and math.isfinite(g)]
    decades = max([abs(math.log10(g)) for g in drawn] + [0.01])
    grows = any(g > 1.0 for g in drawn)
    marks = set()  # the marks drawn that only some pictures have: each gets its legend line
    table = []
    for label, run in prepared:
        parts, _ = summary(run, axis)
        factor, first, last = diagnostics.gradient_factor(run.rows)
        if factor is not None and factor > 0 and math.isfinite(factor) and last > first and not run.multi_read:
            per = f" ({style.number(factor ** (1 / (last - first)), 2)} a {words['unit']})"
            at = next(k for k, p in enumerate(parts) if "multiply to" in p)
            head, *tail = parts[at].split(" · ", 1)
            parts[at] = " · ".join([head + per, *tail])
        words_line = wrap([f"<B>{style.text(label, 80)}</B>", *(style.text(p, 240) for p in parts)], LINE, " · ")
        table.append(f'<TR><TD COLSPAN="{columns + 1}" ALIGN="LEFT" BALIGN="LEFT">{small(words_line, 9)}</TD></TR>')
        gains, sizes = [], []
        for c in range(columns):
            start, end = c * stride, min((c + 1) * stride, longest + 1) - 1
            if start > run.length:
                gains.append(f'<TD WIDTH="{width}" HEIGHT="10"></TD>')
                sizes.append(f'<TD WIDTH="{width}" HEIGHT="10"></TD>')
                continue
            end = min(end, run.length)
            gain = blocks[label, c]
            gains.append(_gain_bar(gain, run.length, decades, grows, width))
            norm = _block_norm(run.rows[start:end + 1])
            clipped = any(r.clip is not None and r.clip.fired for r in run.rows[start:end + 1])
            outline = f' BORDER="1" COLOR="{style.colour(1e9)}"' if clipped else ""
            sizes.append(_norm_cell(norm, scale, width, outline))
            marks.update({"cut"} if gain is CUT_ONLY else {"nonfinite"} if isinstance(gain, float)
                         and not math.isfinite(gain) else set())
            marks.update({"nonfinite"} if math.isinf(norm) else {"zero"} if norm == 0.0 else {"none"}
                         if math.isnan(norm) else set())
            marks.update({"clip"} if clipped else set())
        top = f"×{style.number(10 ** decades, 2)}<BR/>" if grows else ""
        table.append(f'<TR><TD ALIGN="RIGHT">{small(f"{top}gain ×1<BR/>×{style.number(10 ** -decades, 2)}", TEXT)}'
                     f'</TD>{"".join(gains)}</TR>')
        table.append(f'<TR><TD ALIGN="RIGHT">{small("‖δ‖", TEXT)}</TD>{"".join(sizes)}</TR>')
    every = max(1, round(columns / 10))
    table.append(f'<TR><TD ALIGN="RIGHT">{small(words["index"] + " →", TEXT)}</TD>'
                 f'{ticks(columns, every, lambda c: str(c * stride))}</TR>')
    body = f'<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="1" CELLPADDING="0">{"".join(table)}</TABLE>'
    dot = style.base_digraph("step_compare")
    dot.node("strips", label=style.html_label(body), shape="plaintext")
    dot.attr("graph", label=_strips_legend(title, [run for _, run in prepared], scale, stride, axis, decades, marks))
    return dot


def _strips_legend(title: str | None, runs: list[StepRun], scale: tuple, stride: int, axis: str,
                   decades: float, marks: set) -> str:
    words = AXES[axis]
    i, unit = words["index"], words["unit"]
    sub = f"<SUB>{i}</SUB>"
    lengths = sorted({r.length for r in runs})
    length = f"T = {lengths[0]}" if len(lengths) == 1 else "T, its run's length"
    column = (f"{unit} {i}" if stride == 1
              else f"{stride} {words['units']} (the geometric mean of the gains there are)")
    full = style.number(10 ** -decades, 2)
    rows = [
        style.legend_row(wrap_words(f"gain strip, one bar per {column}: gain{sub} = ‖J{sub}ᵀ δ{sub}‖ / ‖δ{sub}‖; its "
                                f"length log10(gain{sub}) on one scale for all runs, down from the line at ×1 for a "
                                f"gain below 1 (a full bar: ×{full} or less, 0 included), up above; its colour "
                                f"gain{sub}<SUP>T</SUP>, what it would compound to over the drawn {length} "
                                f"{words['units']}", LINE - 20), GAIN_DECADES),
        style.magnitude_row(wrap_words(f"‖δ‖ strip, one cell per "
                                   f"{'state' if stride == 1 else f'{stride} states (the largest)'}: ‖δ{sub}‖, the "
                                   f"gradient that reached s{sub} (absolute values)", LINE - 20), *scale),
    ]
    if any(r.multi_read for r in runs):
        rule = (f"a run whose loss reads several states: δ{sub} mixes their gradients, the gains do not multiply "
                f"to its ends, and its line follows the last read alone (the lag view, draw_lags, shows every read)")
    else:
        rule = (f"with one loss at the end the gains multiply to ‖δ<SUB>0</SUB>‖ / ‖δ<SUB>T</SUB>‖; "
                f"'a {unit}' is that product's geometric mean")
    low, high, frozen = (power_of_ten(x) for x in (diagnostics.VANISHING, diagnostics.EXPLODING, diagnostics.FROZEN))
    notes = [
        f"each run: its name and numbers, then its two strips on one time axis and one scale for all runs; "
        f"{words['runs']}, the gradient flows back right to left; {rule}",
        f"δ{sub}: the gradient reaching s{sub} from outside {unit} {i}; J{sub} = ∂s{sub}/∂s<SUB>{i}−1</SUB>; "
        f"no bound ‖J{sub}‖₂ is computed here (compare_steps(..., compact=False) draws it, one SVD per {unit})",
        f"verdict (diagnostics.verdict): the gradient scaled by less than {low} from the last state read back to "
        f"the first: vanishing; by more than {high}: exploding (clips included); else stable, or frozen where no "
        f"{unit} gave the weights more than {frozen} × ‖δ{sub}‖",
        f"a gain column left white, without the line at ×1: no gain to draw (s<SUB>0</SUB> ends no {unit}; a "
        f"{unit} whose s{sub} got no gradient, or exactly 0, has none); every norm is over the whole batch, all "
        f"parts of a state as one vector",
    ]
    cells = [f"{name}: {meaning}" for mark, name, meaning in (
        ("none", "white", f"no gradient reached s{sub}"), ("zero", "yellow", "exactly 0")) if mark in marks]
    if cells:
        notes.append("‖δ‖ strip, " + "; ".join(cells))
    if "nonfinite" in marks:
        held = "" if stride == 1 else f", or a column of {stride} holding one"
        notes.append(f"green, a full gain bar or a ‖δ‖ cell: a number that is not finite, nan or inf (an overflow "
                     f"or a NaN on the way back){held}; diagnostics.steps(loss, states) holds each number")
    if any(r.any_cut for r in runs):
        drawn = ["grey full bar: a cut (truncated BPTT), no gradient crosses it"] if "cut" in marks else []
        if stride > 1:  # a column holding a cut and other time steps shows their mean, the cut left out
            drawn.append(f"a cut in a column of {stride} {words['units']} with others is left out of its mean"
                         + (" (a grey column holds cuts only)" if "cut" in marks else ""))
        notes.append("; ".join(drawn))
    if "clip" in marks:
        notes.append("red outline on ‖δ‖: a clipping hook fired on that state (its gradient after the clip)")
    if title:
        rows.insert(0, f'<TR><TD COLSPAN="2" ALIGN="LEFT" BALIGN="LEFT">{caption(title, [], "", 14)}</TD></TR>')
    rows.extend(f'<TR><TD COLSPAN="2" ALIGN="LEFT" BALIGN="LEFT"><FONT POINT-SIZE="9" COLOR="{style.MUTED}">'
                f'{wrap_words(note, LINE + 20)}</FONT></TD></TR>' for note in notes)
    return style.legend(None, rows, [])

"""Step view: one node per state of a recurrence (or per layer of a deep net), for sequences far too
long for the op view. Every number comes from ``tinygrad_rnn.diagnostics.steps``:

- an edge s_{t-1} -> s_t is labelled with the **gain** of time step t, ||J_t^T delta_t|| / ||delta_t||:
  what the time step did to the gradient that crossed it, and is coloured by it (blue shrinks, red
  grows). Under it, smaller, the **bound** ||J_t||_2, the most the time step could have stretched any
  gradient, and w, ||C_t||, what it gave the weights. With one loss at the end, the gradient at time
  step t-1 is the gradient at time step t times the label (before any clip on s_{t-1}: the legend
  says so where one fired), so the labels multiply to ||delta_0|| / ||delta_T|| (times the clips'
  factors): a label is a factor a reader can multiply.
- a node s_t is shaded by ||delta_t||, the size of the gradient that reached it (an absolute size,
  light for small, dark for large, the legend giving the values). Off that scale: exactly 0 is yellow
  (ZERO, as in the heatmap and the strips), no gradient white, nan or inf green (style.NONFINITE, as
  is an edge whose gain is nan or inf); the legend names each that the picture holds.
- the line under the title ends with ``diagnostics.verdict``'s word and the rule that gave it, in
  numbers: "vanishing (0.00096 < 10⁻³)", "stable (10⁻³ ≤ 0.031 ≤ 10³)".

Detached (truncated) boundaries are dotted: no gradient crosses them. Where a clipping hook fired on
s_t, the node is marked with the clipped part's gradient norm before and after (the node shows the
whole state's norm after). Long sequences wrap into rows of ``per_row`` time steps (PER_ROW by
default), each row continuing from a faint copy of the last node of the row before, so T = 1,000
stays readable and a picture stays about 1,000 px wide. "Time step" always, never plain "step": to
the command a training step is an iteration. ``axis="layer"`` reads the states as the activations of
the layers of a feed-forward net, and says "layer" where it would say "time step".

Two more pictures of the same numbers, as tables of cells, live beside it: ``draw_steps(..., by="unit")``
(or ``"row"``) draws a heatmap, one row per unit of the state (unit_view); ``compare_steps`` of many runs
(above COMPACT_RUNS runs or COMPACT_ROWS wrapped rows) draws strips, a gain bar and a shaded ||delta_t||
per time step (strip_view). What all of them say of a run in words is in step_run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from graphviz import Digraph

from tinygrad_rnn import diagnostics
from tinygrad_rnn.diagnostics import StepRow
from visualize import style
from visualize.step_run import (
    AXES,
    GAIN_DECADES,
    LINE,
    StepRun,
    caption,
    compounded,
    power_of_ten,
    prepare_run,
    subscript,
    summary,
    wrap_words,
)
from visualize.strip_view import BAR, CUT, draw_strips
from visualize.table_cells import TEXT, WIDEST, ZERO
from visualize.unit_view import LABELLED, NUMBERED, NUMBERED_ROWS, draw_split

__all__ = [
    "draw_steps", "compare_steps", "AXES", "COMPACT_RUNS", "COMPACT_ROWS",
    # handed on from the modules the heatmap, the strips and their words moved to
    "GAIN_DECADES", "LINE", "compounded", "power_of_ten", "WIDEST", "NUMBERED", "NUMBERED_ROWS", "LABELLED", "BAR",
    "ZERO", "CUT", "TEXT",
]

# Sized for where pictures are read: a row of PER_ROW time steps and a legend wrapped at LINE
# characters stay about 1,000 px wide, so a notebook or a README column (about 830 px) shows the
# smallest text, SMALL points, at 9 px or more.
PER_ROW, SMALL, RANKSEP = 6, 8, "0.05"
# compare_steps draws strips instead of bands above this many runs, or this many wrapped rows of
# bands in all (about 2,000 px tall at PER_ROW); 9 cells x 100 time steps would be 153 rows.
COMPACT_RUNS, COMPACT_ROWS = 6, 24

# visualize/page.py draws its step view with these, under the names they had here.
_run, _summary = prepare_run, summary


def _node_label(letter: str, row: StepRow | None, t: int, digits: int = 2, ghost: bool = False) -> str:
    head = f"<B>{style.text(letter, 12)}{subscript(t)}</B>"  # Unicode digits: <SUB> overlaps the next line
    if ghost:
        return style.html_label(f'<FONT COLOR="{style.MUTED}">{head} ↩</FONT>')
    shown = style.number(row.grad_norm, digits) if row.grad_norm is not None else "no grad"
    lines = [head, f'<FONT POINT-SIZE="9">{shown}</FONT>']
    if row.clip is not None and row.clip.fired:
        lines.append(f'<FONT POINT-SIZE="9" COLOR="{style.colour(1e9)}"><B>✂</B> '
                     f"{style.number(row.clip.norm_before, 2)}→{style.number(row.clip.norm_after, 2)}</FONT>")
    return style.html_label("<BR/>".join(lines))


# An edge no gain crossed (s_t got no gradient, or exactly 0): light grey, off the gain scale.
NO_GAIN = "#b0b0b0"


def _node_fill(norm: float | None, scale: tuple) -> str:
    """A node's shade: ||delta_t|| on the violet scale; off it, white for no gradient, ZERO (yellow) for
    exactly 0, NONFINITE (green) for nan or inf."""
    if norm is None:
        return "#ffffff"
    if norm == 0.0:
        return ZERO
    if not math.isfinite(norm):
        return style.NONFINITE
    return style.magnitude_fill(norm, *scale)


def _node_attrs(run: StepRun, row: StepRow, scale: tuple, axis: str, digits: int) -> dict:
    letter = style.clean(run.letter, 12)
    tip = (f"{letter}_{row.t}: ‖δ_{row.t}‖ = {row.grad_norm!r}, the gradient that reached it from outside "
           f"{AXES[axis]['unit']} {row.t}")
    if row.clip is not None:
        tip += (f"; clip hook: norm before {row.clip.norm_before!r}, after {row.clip.norm_after!r}"
                f" ({'fired' if row.clip.fired else 'did not fire'})")
    attrs = {
        "label": _node_label(run.letter, row, row.t, digits), "shape": "box", "style": "rounded,filled",
        "fillcolor": _node_fill(row.grad_norm, scale), "width": "0.5", "height": "0.42",
        "margin": "0.04,0.02", "tooltip": style.tooltip(tip),
    }
    if row.clip is not None and row.clip.fired:
        attrs.update(color=style.colour(1e9), penwidth="2.2")
    return attrs


def _edge_attrs(run: StepRun, row: StepRow, digits: int, axis: str) -> dict:
    unit = AXES[axis]["unit"]
    how = "largest over batch rows" if row.bound_method == "rows" else "Jacobian of the whole batch"
    tip = (f"{unit} {row.t}: gain ‖J_{row.t}ᵀ δ_{row.t}‖ / ‖δ_{row.t}‖ = {row.gain!r}; "
           f"bound ‖J_{row.t}‖₂ = {row.bound!r} ({how})")
    weights = ""
    if row.contribution is not None:
        tip += f"; ‖C_{row.t}‖ = {row.contribution!r}, what {unit} {row.t} gave the weights"
        weights = (f'<BR/><FONT POINT-SIZE="{SMALL}" COLOR="{style.MUTED}">'
                   f'w {style.number(row.contribution, digits)}</FONT>')

    if row.cut:
        return {"label": style.html_label(f'<FONT COLOR="{style.MUTED}">cut</FONT>'), "style": "dotted",
                "color": "#9a9a9a", "penwidth": "1.4", "arrowhead": "none",
                "tooltip": style.tooltip(f"{unit} {row.t}: detached state (truncated BPTT), no gradient crosses")}
    bound = f'<BR/><FONT POINT-SIZE="{SMALL}" COLOR="{style.MUTED}">≤{style.number(row.bound, digits)}</FONT>'
    if row.gain is None:
        return {"label": style.html_label(f'<FONT COLOR="{style.MUTED}">–</FONT>{bound}{weights}'),
                "color": NO_GAIN, "tooltip": style.tooltip(tip + " (no gradient crossed)"),
                "labeltooltip": style.tooltip(tip)}
    if not math.isfinite(row.gain):  # nan or inf: no factor, so no colour on the gain scale
        return {"label": style.html_label(f"<B>{style.number(row.gain, digits)}</B>{bound}{weights}"),
                "color": style.NONFINITE, "fontcolor": style.NONFINITE, "penwidth": "1.60",
                "tooltip": style.tooltip(tip + "; not a finite number, so off the gain scale"),
                "labeltooltip": style.tooltip(tip)}
    over = compounded(row.gain, run.length)
    colour = style.colour(over, GAIN_DECADES)
    tip += f"; coloured by gain^{run.length} = {over!r}"
    return {
        "label": style.html_label(f"<B>{style.number(row.gain, digits)}</B>{bound}{weights}"), "color": colour,
        "fontcolor": colour, "penwidth": style.pen_width(over, GAIN_DECADES),
        "tooltip": style.tooltip(tip), "labeltooltip": style.tooltip(tip),
    }


def _draw_block(dot: Digraph, prefix: str, run: StepRun, scale: tuple, per_row: int, digits: int, axis: str,
                in_band: bool = False) -> None:
    """The nodes and edges of one sequence, in rows of ``per_row`` steps, node ids ``prefix``+t.

    Row order is dot's: unconnected rows at the top level stack bottom-up in the order they are
    written, inside a cluster (a band of compare_steps) top-down; each is written so that it reads
    top to bottom (a test reads the positions back from ``dot -Tjson``)."""
    rows = run.rows
    T = len(rows) - 1
    starts = range(0, T, per_row)
    for row_start in starts if in_band else reversed(starts):
        row_end = min(row_start + per_row, T)
        with dot.subgraph(name=f"cluster_{prefix}row{row_start}") as band:
            band.attr(label="", style="invis", margin="4")
            if row_start > 0:  # continue from a faint copy of the previous row's last node
                band.node(f"{prefix}g{row_start}", label=_node_label(run.letter, None, row_start, ghost=True),
                          shape="box", style="rounded,dashed", color="#c8c8c8", fontsize="10",
                          tooltip=style.tooltip(f"{style.clean(run.letter, 12)}_{row_start}, continued"))
            for t in range(row_start if row_start == 0 else row_start + 1, row_end + 1):
                band.node(f"{prefix}n{t}", **_node_attrs(run, rows[t], scale, axis, digits))
            for t in range(row_start + 1, row_end + 1):
                tail = f"{prefix}g{row_start}" if t - 1 == row_start and row_start > 0 else f"{prefix}n{t - 1}"
                band.edge(tail, f"{prefix}n{t}", **_edge_attrs(run, rows[t], digits, axis))


def _legend(title: str | None, runs: list[StepRun], scale: tuple, axis: str, story: str = "",
            headline: list[str] | None = None) -> str:
    words = AXES[axis]
    i, unit = words["index"], words["unit"]
    sub = f"<SUB>{i}</SUB>"
    lengths = sorted({r.length for r in runs})
    length = (f"T = {lengths[0]} {words['unit' if lengths[0] == 1 else 'units']}" if len(lengths) == 1
              else f"T {words['units']}, T its run's length")
    rows = [
        style.legend_row(f"edge label: gain{sub} = ‖J{sub}ᵀ δ{sub}‖ / ‖δ{sub}‖, what {unit} {i} did to the "
                         f"gradient that crossed it;<BR/>edge colour: gain{sub}<SUP>T</SUP>, what it would compound "
                         f"to over the drawn {length}", GAIN_DECADES),
        style.magnitude_row(f"node shade and number: ‖δ{sub}‖, the size of the<BR/>"
                            f"gradient that reached s{sub} (absolute values)", *scale),
    ]
    if any(r.multi_read for r in runs):
        rule = (f"the loss reads several states, so δ{sub} mixes the gradients of every read from {i} on: the "
                 f"labels do not multiply to ‖δ<SUB>0</SUB>‖ / ‖δ<SUB>T</SUB>‖ (each read adds its gradient where "
                 f"it reads) and say nothing of how far one read reaches; the colours describe that mixed "
                 f"gradient; the caption follows the last read alone, and draw_lags(losses, states) shows every "
                 f"read")
    else:
        rule = (f"with one loss at the end, the gradient at {unit} {i}−1 is the gradient at {unit} {i} times the "
                 f"edge's label: ‖δ<SUB>{i}−1</SUB>‖ = ‖δ{sub}‖ × gain{sub}")
        if any(r.any_clip for r in runs):
            rule += (f" (before any clip: where ✂ marks s<SUB>{i}−1</SUB>, this is its whole state's norm "
                     f"before the clip; the node shows it after)")
    notes = [
        f"{words['runs']}; the gradient flows back right to left; {rule}",
        f"small grey ≤: the bound ‖J{sub}‖₂, the most {unit} {i} could stretch any gradient (it need not); "
        f"J{sub} = ∂s{sub}/∂s<SUB>{i}−1</SUB>, δ{sub} = the gradient reaching s{sub} from outside {unit} {i} "
        f"(from {unit} {i}+1 and any loss reading s{sub})",
    ]
    if any(r.contribution is not None for run in runs for r in run.rows):
        notes.append(f"small grey w: ‖C{sub}‖, what {unit} {i} gave the weights (the gradient of every parameter "
                     f"used inside it, as one vector; the C{sub} add up to their gradients)")
    limit = diagnostics.CONTRIBUTION_LIMIT
    long_runs = any(r.length > limit for r in runs)
    low, high, frozen = (power_of_ten(x) for x in (diagnostics.VANISHING, diagnostics.EXPLODING, diagnostics.FROZEN))
    notes.append(f"verdict (diagnostics.verdict): the gradient scaled by less than {low} from the last state read "
                 f"back to the first: vanishing; by more than {high}: exploding (clips included); else stable, or "
                 f"frozen where no {unit} gave the weights more than {frozen} × ‖δ{sub}‖"
                 + (f" (w and frozen are left out beyond {limit:,} {words['units']})" if long_runs else "")
                 + ("; no gradient where every ‖δ‖ is 0 or none reached a state" if any(
                     diagnostics.verdict(r.rows) == "no gradient" for r in runs) else ""))
    states = sorted({style.text(r.state, 60) for r in runs})
    batches = sorted({r.batch for r in runs if r.batch})
    where = f"all {batches[0]} batch rows" if len(batches) == 1 and batches[0] > 1 else "the whole batch"
    whole = ", all parts of the state as one vector" if any("(" in r.state for r in runs) else ""
    notes.append(f"state {' / '.join(states)}; every norm is over {where}{whole}")
    methods = {r.bound_method for run in runs for r in run.rows[1:] if not r.cut}
    if methods == {"full", "rows"}:
        notes.append("bound: the largest over batch rows, or the whole batch's Jacobian where a cell mixes "
                     "rows (each edge's tooltip says which)")
    elif "full" in methods:
        notes.append("bound: Jacobian of the whole batch (this cell mixes batch rows)")
    elif "rows" in methods and any((r.batch or 1) > 1 for r in runs):
        notes.append("bound: the largest over batch rows (the cell does not mix rows, checked)")
    keys = []
    if any(r.any_cut for r in runs):
        keys.append("dotted, cut: detached state (truncated BPTT), no gradient crosses")
    if any(r.any_clip for r in runs):
        keys.append("✂ red border: a clipping hook fired on that state, the clipped part's gradient norm "
                    "before → after (the node shows the whole state's, after)")
    notes.extend(keys)
    rows[2:2] = _off_scale_rows(runs, sub)
    if title or headline or story:
        rows.insert(0, f'<TR><TD COLSPAN="2" ALIGN="LEFT" BALIGN="LEFT">'
                       f'{caption(title or "", headline or [], story, 14)}</TD></TR>')
    # The notes as rows of our own: BALIGN keeps every wrapped line left-aligned, not only the first.
    rows.extend(f'<TR><TD COLSPAN="2" ALIGN="LEFT" BALIGN="LEFT"><FONT POINT-SIZE="9" COLOR="{style.MUTED}">'
                f'{wrap_words(note, LINE + 20)}</FONT></TD></TR>' for note in notes)
    return style.legend(None, rows, [])


def _swatch_row(text: str, colour: str, mark: str = "", border: bool = False) -> str:
    """A legend row of one mark: what it means, then its swatch."""
    edge = ' BORDER="1" COLOR="#d0d0d0"' if border else ""
    inside = f'<FONT POINT-SIZE="9">{mark}</FONT>' if mark else ""
    return (f'<TR><TD ALIGN="RIGHT"><FONT POINT-SIZE="10">{text}</FONT></TD><TD ALIGN="LEFT"><TABLE BORDER="0" '
            f'CELLBORDER="0" CELLSPACING="1" CELLPADDING="1"><TR><TD BGCOLOR="{colour}"{edge} FIXEDSIZE="TRUE" '
            f'WIDTH="38" HEIGHT="18">{inside}</TD></TR></TABLE></TD></TR>')


def _off_scale_rows(runs: list[StepRun], sub: str) -> list[str]:
    """A legend row for each mark off the two scales that the picture holds."""
    norms = [r.grad_norm for run in runs for r in run.rows]
    gains = [r.gain for run in runs for r in run.rows[1:] if not r.cut]
    rows = []
    if any(n == 0.0 for n in norms):
        rows.append(_swatch_row(f"yellow node, 0: ‖δ{sub}‖ is exactly 0, nothing reached s{sub}", ZERO, "0"))
    if any(n is None for n in norms):
        rows.append(_swatch_row(f"white node, no grad: no gradient reached s{sub} at all", "#ffffff", border=True))
    if any(g is None for g in gains):
        rows.append(_swatch_row(f"light grey edge, –: no gain, as s{sub} got no gradient or exactly 0",
                                NO_GAIN, "–"))
    node, edge = (any(x is not None and not math.isfinite(x) for x in xs) for xs in (norms, gains))
    if node or edge:
        what = " and ".join(w for w, held in ((f"node ‖δ{sub}‖", node), (f"edge gain{sub}", edge)) if held)
        rows.append(_swatch_row(f"green {'node or edge' if node and edge else 'node' if node else 'edge'}: its "
                                f"number ({what}) is nan or inf,<BR/>not a finite number (a NaN or an overflow "
                                f"on the way back), off the scales", style.NONFINITE))
    return rows


def _check(axis: str, per_row: int, caller: str) -> None:
    if axis not in AXES:
        raise ValueError(f"{caller}: axis must be one of {', '.join(map(repr, AXES))}, got {axis!r}")
    if not isinstance(per_row, int) or per_row < 1:
        raise ValueError(f"{caller}: per_row must be a positive number of steps, got {per_row!r}")


def draw_steps(loss, states: Sequence, *, name: str | None = None, axis: str = "time", per_row: int = PER_ROW,
               digits: int = 2, title: str | None = None, by: str | None = None) -> Digraph:
    """The step view of states [s_0, ..., s_T] after ``loss.backward()`` (module doc).

    ``states``: what ``rnn(inputs, return_states=True)`` returns (Values, or tuples such as (h, c)),
    or the activations [a_0, ..., a_L] of a deep net with ``axis="layer"``. ``name``: the letter on
    the nodes (default h, s for a state of several parts, a for layers). ``per_row`` time steps go in
    one row before wrapping; ``digits`` significant digits on the edges; ``title`` heads the legend.

    ``by="unit"`` (or ``"row"``): a heatmap instead, one row per unit of the state (per batch row),
    one column per state s_t, each cell shaded by that unit's (row's) share of ||delta_t||, the
    numbers of ``diagnostics.steps(loss, states, by=by)``: a unit that carries nothing back shows.
    """
    _check(axis, per_row, "draw_steps")
    if by is not None:
        return draw_split(loss, states, name, axis, digits, title, by)
    run = prepare_run(loss, states, name, axis, "draw_steps")
    scale = style.magnitude_range(r.grad_norm for r in run.rows)
    dot = style.base_digraph("step_view" if axis == "time" else "layer_view")
    dot.attr("graph", nodesep="0.25", ranksep=RANKSEP)
    _draw_block(dot, "s", run, scale, per_row, digits, axis)
    headline, story = summary(run, axis)
    if loss is not None and getattr(loss, "size", 0) == 1:
        headline.insert(0, f"L = {style.number(loss.item(), 4)}")
    heading = style.clean(title, 200) if title is not None else ("step view" if axis == "time" else "layer view")
    dot.attr("graph", label=_legend(heading, [run], scale, axis, story, headline))
    return dot


def compare_steps(runs: Mapping, *, axis: str = "time", per_row: int = PER_ROW, digits: int = 2,
                  title: str | None = None, compact: bool | None = None) -> Digraph:
    """Several step views on one colour scale, one band each, top to bottom:
    ``runs = {"tanh RNN": (loss, states), "LSTM": (loss, states, "s")}`` (the optional third entry is
    the node letter).

    ``compact``: True draws each run as two strips of coloured cells on one shared time axis and
    scale (its gain per time step, its ||delta_t|| per state), with its product of gains and verdict
    in words; no bound is computed (the SVDs are what a long comparison costs). False draws the
    bands of nodes and edges. None (the default) chooses: compact above COMPACT_RUNS runs or
    COMPACT_ROWS wrapped rows of ``per_row`` time steps in all, where the bands grow thousands of
    pixels tall."""
    _check(axis, per_row, "compare_steps")
    if compact is None:
        lengths = [len(run[1]) - 1 for run in runs.values()]
        compact = len(lengths) > COMPACT_RUNS or sum(math.ceil(T / per_row) for T in lengths) > COMPACT_ROWS
    prepared = []
    for label, run in runs.items():
        loss, states, *rest = run
        prepared.append((label, prepare_run(loss, states, rest[0] if rest else None, axis, "compare_steps",
                                     bound=None if compact else "svd")))
    if compact:
        return draw_strips(prepared, axis, title)
    scale = style.magnitude_range(r.grad_norm for _, run in prepared for r in run.rows)
    dot = style.base_digraph("step_compare")
    dot.attr("graph", nodesep="0.25", ranksep=RANKSEP)
    # Written last first, so that they appear top to bottom in the order given (see _draw_block).
    for index, (label, run) in reversed(list(enumerate(prepared))):
        with dot.subgraph(name=f"cluster_run{index}") as band:
            headline, story = summary(run, axis)
            band.attr(label=style.html_label(caption(str(label), headline, story, 12)), labeljust="l",
                      labelloc="t", style="rounded,filled", fillcolor="#f7f8fa", color="#d3d9e2", fontsize="12",
                      tooltip=style.tooltip(label))
            _draw_block(band, f"r{index}", run, scale, per_row, digits, axis, in_band=True)
    dot.attr("graph", label=_legend(title, [run for _, run in prepared], scale, axis))
    return dot

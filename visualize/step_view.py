"""Step view: one node per state of a recurrence (or per layer of a deep net), for sequences far too
long for the op view. Every number comes from ``tinygrad_rnn.diagnostics.steps``:

- an edge s_{t-1} -> s_t is labelled with the **gain** of time step t, ||J_t^T delta_t|| / ||delta_t||:
  what the time step did to the gradient that crossed it, and is coloured by it (blue shrinks, red
  grows). Under it, smaller, the **bound** ||J_t||_2, the most the time step could have stretched any
  gradient, and w, ||C_t||, what it gave the weights. With one loss at the end, the gradient at time
  step t-1 is the gradient at time step t times the label, so the labels multiply to
  ||delta_0|| / ||delta_T||: a label is a factor a reader can multiply.
- a node s_t is shaded by ||delta_t||, the size of the gradient that reached it (an absolute size,
  light for small, dark for large, the legend giving the values).
- the line under the title ends with ``diagnostics.verdict``'s word and the rule that gave it, in
  numbers: "vanishing (0.00096 < 10⁻³)", "stable (10⁻³ ≤ 0.031 ≤ 10³)".

Detached (truncated) boundaries are dotted: no gradient crosses them. Where a clipping hook fired on
s_t, the node is marked with the clipped part's gradient norm before and after (the node shows the
whole state's norm after). Long sequences wrap into rows of ``per_row`` time steps (PER_ROW by
default), each row continuing from a faint copy of the last node of the row before, so T = 1,000
stays readable and a picture stays about 1,000 px wide. "Time step" always, never plain "step": to
the command a training step is an iteration. ``axis="layer"`` reads the states as the activations of
the layers of a feed-forward net, and says "layer" where it would say "time step".

Two tables of cells complete it. ``draw_steps(..., by="unit")`` (or ``"row"``) is a heatmap of
``diagnostics.steps(loss, states, by=...)``: one row per unit of the state (per batch row), one column
per state, shaded by that unit's ||delta_t||, exactly 0 apart (a dead unit shows). ``compare_steps``
of many runs (above COMPACT_RUNS runs or COMPACT_ROWS wrapped rows) draws strips: per run a bar per
time step for its gain on one log scale, and ||delta_t|| shaded per state, on one shared time axis.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from graphviz import Digraph

from tinygrad_rnn import diagnostics, recurrence
from tinygrad_rnn.diagnostics import StepRow
from visualize import style
from visualize.lag_view import _bar, _small

__all__ = ["draw_steps", "compare_steps", "AXES", "COMPACT_RUNS", "COMPACT_ROWS"]

# A gain is coloured by what it compounds to over the drawn length, gain^T, on the verdict's scale:
# full blue at the vanishing threshold (10^-3), full red at the exploding one (10^3). So 0.94 a step
# over 100 steps (0.002) is nearly full blue, not the grey of a factor near 1.
GAIN_DECADES = math.log10(diagnostics.EXPLODING)
# "time step" for t, never plain "step": a training step is an iteration (the command says so).
AXES = {
    "time": {"unit": "time step", "units": "time steps", "index": "t", "letter": "h",
             "runs": "time runs left to right"},
    "layer": {"unit": "layer", "units": "layers", "index": "l", "letter": "a",
              "runs": "the network runs left to right"},
}


# Sized for where pictures are read: a row of PER_ROW time steps and a legend wrapped at LINE
# characters stay about 1,000 px wide, so a notebook or a README column (about 830 px) shows the
# smallest text, SMALL points, at 9 px or more.
PER_ROW, LINE, SMALL, RANKSEP = 6, 100, 8, "0.05"
# compare_steps draws strips instead of bands above this many runs, or this many wrapped rows of
# bands in all (about 2,000 px tall at PER_ROW); 9 cells x 100 time steps would be 153 rows.
COMPACT_RUNS, COMPACT_ROWS = 6, 24


@dataclass
class _Run:
    """One sequence to draw: its rows, the letter on its nodes, what its state is."""

    rows: list
    letter: str
    state: str
    batch: int | None

    @property
    def length(self) -> int:
        return len(self.rows) - 1

    @property
    def multi_read(self) -> bool:
        """The loss reads more than one state: delta_t mixes their gradients."""
        return len(diagnostics.reads(self.rows)) > 1

    @property
    def any_cut(self) -> bool:
        return any(r.cut for r in self.rows)

    @property
    def any_clip(self) -> bool:
        return any(r.clip is not None and r.clip.fired for r in self.rows)


def _run(loss, states: Sequence, name: str | None, axis: str, caller: str, bound: str | None = "svd") -> _Run:
    states = list(states)
    if len(states) < 2:
        raise ValueError(f"{caller}: needs the states [s_0, ..., s_T] with T >= 1, got {len(states)} state(s)")
    rows = diagnostics.steps(loss, states, bound=bound)
    parts = recurrence.state_parts(states[-1])
    letter = name if name is not None else "s" if len(parts) > 1 else AXES[axis]["letter"]
    index = AXES[axis]["index"]
    if len(parts) == 1:
        state = f"{letter}_{index}"
    else:
        names = [re.sub(r"_?\d+$", "", p.name) if p.name else None for p in parts]
        shown = names if all(names) else [f"part {k}" for k in range(1, len(parts) + 1)]
        state = f"{letter}_{index} = (" + ", ".join(f"{n}_{index}" for n in shown) + ")"
    sizes = {p.shape[0] for p in parts if p.ndim >= 2}
    batch = sizes.pop() if len(sizes) == 1 and all(p.ndim >= 2 for p in parts) else None
    return _Run(rows, letter, state, batch)


def _subscript(t: int) -> str:
    return str(t).translate(str.maketrans("0123456789-", "₀₁₂₃₄₅₆₇₈₉₋"))


def _node_label(letter: str, row: StepRow | None, t: int, digits: int = 2, ghost: bool = False) -> str:
    head = f"<B>{style.text(letter, 12)}{_subscript(t)}</B>"  # Unicode digits: <SUB> overlaps the next line
    if ghost:
        return style.html_label(f'<FONT COLOR="{style.MUTED}">{head} ↩</FONT>')
    shown = style.number(row.grad_norm, digits) if row.grad_norm is not None else "no grad"
    lines = [head, f'<FONT POINT-SIZE="9">{shown}</FONT>']
    if row.clip is not None and row.clip.fired:
        lines.append(f'<FONT POINT-SIZE="9" COLOR="{style.colour(1e9)}"><B>✂</B> '
                     f"{style.number(row.clip.norm_before, 2)}→{style.number(row.clip.norm_after, 2)}</FONT>")
    return style.html_label("<BR/>".join(lines))


def _node_attrs(run: _Run, row: StepRow, scale: tuple, axis: str, digits: int) -> dict:
    letter = style.clean(run.letter, 12)
    tip = (f"{letter}_{row.t}: ‖δ_{row.t}‖ = {row.grad_norm!r}, the gradient that reached it from outside "
           f"{AXES[axis]['unit']} {row.t}")
    if row.clip is not None:
        tip += (f"; clip hook: norm before {row.clip.norm_before!r}, after {row.clip.norm_after!r}"
                f" ({'fired' if row.clip.fired else 'did not fire'})")
    attrs = {
        "label": _node_label(run.letter, row, row.t, digits), "shape": "box", "style": "rounded,filled",
        "fillcolor": style.magnitude_fill(row.grad_norm, *scale), "width": "0.5", "height": "0.42",
        "margin": "0.04,0.02", "tooltip": style.tooltip(tip),
    }
    if row.clip is not None and row.clip.fired:
        attrs.update(color=style.colour(1e9), penwidth="2.2")
    return attrs


def compounded(gain: float, length: int) -> float:
    """gain^length without overflow: what a gain would compound to over ``length`` steps."""
    if gain <= 0.0 or not math.isfinite(gain):
        return gain
    return math.exp(max(-745.0, min(709.0, length * math.log(gain))))


def _edge_attrs(run: _Run, row: StepRow, digits: int, axis: str) -> dict:
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
                "color": "#b0b0b0", "tooltip": style.tooltip(tip + " (no gradient crossed)"),
                "labeltooltip": style.tooltip(tip)}
    over = compounded(row.gain, run.length)
    colour = style.colour(over, GAIN_DECADES)
    tip += f"; coloured by gain^{run.length} = {over!r}"
    return {
        "label": style.html_label(f"<B>{style.number(row.gain, digits)}</B>{bound}{weights}"), "color": colour,
        "fontcolor": colour, "penwidth": style.pen_width(over, GAIN_DECADES),
        "tooltip": style.tooltip(tip), "labeltooltip": style.tooltip(tip),
    }


def _draw_block(dot: Digraph, prefix: str, run: _Run, scale: tuple, per_row: int, digits: int, axis: str,
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


def _summary(run: _Run, axis: str) -> tuple[list[str], str]:
    """Plain text (escape before use): (the headline's parts: length, state, the end gradients, what
    they were scaled by and the verdict; and, for a loss that reads several states, a sentence saying
    what that means)."""
    rows, words = run.rows, AXES[axis]
    letter = style.clean(run.letter, 12)
    parts = [f"{run.length} {words['unit' if run.length == 1 else 'units']}", f"state {run.state}"]
    factor, first, last = diagnostics.gradient_factor(rows)
    story = ""
    if run.multi_read:
        story = (f"The loss reads {len(diagnostics.reads(rows))} states, so δ mixes their gradients and the gains "
                 "do not say how far one read reaches")
        if factor is not None:
            parts.append(f"the read at {letter}{_subscript(last)} alone reaches {letter}{_subscript(first)} "
                         f"× {style.number(factor, 2)}")
            story += f"; the read at {letter}{_subscript(last)} alone, carried back: see the lag view (draw_lags)"
    elif factor is not None:
        parts.append(f"‖δ{_subscript(first)}‖ = {style.number(rows[first].grad_norm, 2)}, "
                     f"‖δ{_subscript(last)}‖ = {style.number(rows[last].grad_norm, 2)}")
        clipped = sum(1 for r in rows if r.clip is not None and r.clip.fired)
        product = "gains × clips" if clipped else "gains"
        parts.append(f"{product} multiply to {style.number(factor, 2)}")
        if clipped:
            parts.append(f"✂ at {clipped} of {len(rows)} states")
    cuts = sum(r.cut for r in rows)
    if cuts:
        parts.append(f"cut at {cuts}")
    verdict = _verdict(rows, factor, words)
    if len(parts) > 2:  # the factor and the verdict it gives stay on one line
        parts[-1] += f" · {verdict}"
    else:
        parts.append(verdict)
    return parts, story


def power_of_ten(x: float) -> str:
    """A threshold as the reader says it: 10⁻³ for 0.001, 10³ for 1000."""
    return "10" + str(round(math.log10(x))).translate(str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻"))


def _beside(x: float, thresholds: tuple) -> str:
    """``x`` to 2 significant digits, or more where 2 would round it onto a threshold (0.000996 is not
    shown as 0.001, which would read as not below 10⁻³)."""
    for digits in range(2, 18):
        shown = style.number(x, digits)
        if all((float(shown) < t) == (x < t) and (float(shown) > t) == (x > t) for t in thresholds):
            return shown
    return repr(x)


def _verdict(rows: list, factor: float | None, words: dict) -> str:
    """diagnostics.verdict's word with the rule that gave it, in numbers: "vanishing (2.9e-10 < 10⁻³)"."""
    verdict = diagnostics.verdict(rows)
    low, high = power_of_ten(diagnostics.VANISHING), power_of_ten(diagnostics.EXPLODING)
    finite = factor is not None and math.isfinite(factor)
    shown = _beside(factor, (diagnostics.VANISHING, diagnostics.EXPLODING)) if finite else None
    if verdict == "vanishing":
        if finite and factor < diagnostics.VANISHING:
            return f"vanishing ({shown} < {low})"
        return "vanishing (a state on the way back got exactly 0)"
    if verdict == "exploding":
        if finite and factor > diagnostics.EXPLODING:
            return f"exploding ({shown} > {high})"
        return "exploding (a number on the way back is inf or nan)"
    if verdict == "frozen":
        share = style.number(diagnostics.weight_share(rows), 2)
        return (f"frozen: its {words['units']} gave the weights at most {share} × the gradient they carried "
                f"(< {power_of_ten(diagnostics.FROZEN)})")
    if verdict == "stable" and finite:
        return f"stable ({low} ≤ {shown} ≤ {high})"
    return verdict


def _wrap(pieces: list[str], width: int, joiner: str = " ") -> str:
    """Escaped markup pieces joined by ``joiner``, broken onto left-aligned lines of about ``width``
    visible characters (tags and entities do not count)."""
    lines: list[list[str]] = [[]]
    used = 0
    for piece in pieces:
        size = len(re.sub(r"<[^>]*>", "", re.sub(r"&#?\w+;", "x", piece)))
        if lines[-1] and used + len(joiner) + size > width:
            lines.append([])
            used = 0
        used += size + (len(joiner) if lines[-1] else 0)
        lines[-1].append(piece)
    return '<BR ALIGN="LEFT"/>'.join(joiner.join(line) for line in lines)


def _words(markup: str, width: int) -> str:
    """Markup wrapped at its spaces (never one inside a tag)."""
    return _wrap(re.split(r" (?![^<]*>)", markup), width)


def _caption(title: str, parts: list[str], story: str, size: int) -> str:
    """A bold title, then the headline's parts and the story under it, wrapped (escaped here)."""
    lines = []
    if title:
        lines.append(f'<FONT POINT-SIZE="{size}"><B>{_words(style.text(title, 240), LINE * 9 // size)}</B></FONT>')
    if parts:
        headline = _wrap([style.text(p, 240) for p in parts], LINE, " · ")
        lines.append(f'<FONT POINT-SIZE="10">{headline}</FONT>')
    if story:
        lines.append(f'<FONT POINT-SIZE="10">{_words(style.text(story, 300), LINE)}</FONT>')
    return '<BR ALIGN="LEFT"/>'.join(lines) + '<BR ALIGN="LEFT"/>'


def _legend(title: str | None, runs: list[_Run], scale: tuple, axis: str, story: str = "",
            headline: list[str] | None = None) -> str:
    words = AXES[axis]
    i, unit = words["index"], words["unit"]
    sub = f"<SUB>{i}</SUB>"
    lengths = sorted({r.length for r in runs})
    length = f"T = {lengths[0]}" if len(lengths) == 1 else "T, its run's length"
    rows = [
        style.legend_row(f"edge label: gain{sub} = ‖J{sub}ᵀ δ{sub}‖ / ‖δ{sub}‖, what {unit} {i} did to the "
                         f"gradient that crossed it;<BR/>edge colour: gain{sub}<SUP>T</SUP>, what it would compound "
                         f"to over the drawn {length} {words['units']}", GAIN_DECADES),
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
                 + (f" (w and frozen are left out beyond {limit:,} {words['units']})" if long_runs else ""))
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
    if title or headline or story:
        rows.insert(0, f'<TR><TD COLSPAN="2" ALIGN="LEFT" BALIGN="LEFT">'
                       f'{_caption(title or "", headline or [], story, 14)}</TD></TR>')
    # The notes as rows of our own: BALIGN keeps every wrapped line left-aligned, not only the first.
    rows.extend(f'<TR><TD COLSPAN="2" ALIGN="LEFT" BALIGN="LEFT"><FONT POINT-SIZE="9" COLOR="{style.MUTED}">'
                f'{_words(note, LINE + 20)}</FONT></TD></TR>' for note in notes)
    return style.legend(None, rows, [])


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
        return _draw_split(loss, states, name, axis, digits, title, by)
    run = _run(loss, states, name, axis, "draw_steps")
    scale = style.magnitude_range(r.grad_norm for r in run.rows)
    dot = style.base_digraph("step_view" if axis == "time" else "layer_view")
    dot.attr("graph", nodesep="0.25", ranksep=RANKSEP)
    _draw_block(dot, "s", run, scale, per_row, digits, axis)
    headline, story = _summary(run, axis)
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
        prepared.append((label, _run(loss, states, rest[0] if rest else None, axis, "compare_steps",
                                     bound=None if compact else "svd")))
    if compact:
        return _draw_strips(prepared, axis, title)
    scale = style.magnitude_range(r.grad_norm for _, run in prepared for r in run.rows)
    dot = style.base_digraph("step_compare")
    dot.attr("graph", nodesep="0.25", ranksep=RANKSEP)
    # Written last first, so that they appear top to bottom in the order given (see _draw_block).
    for index, (label, run) in reversed(list(enumerate(prepared))):
        with dot.subgraph(name=f"cluster_run{index}") as band:
            headline, story = _summary(run, axis)
            band.attr(label=style.html_label(_caption(str(label), headline, story, 12)), labeljust="l",
                      labelloc="t", style="rounded,filled", fillcolor="#f7f8fa", color="#d3d9e2", fontsize="12",
                      tooltip=style.tooltip(label))
            _draw_block(band, f"r{index}", run, scale, per_row, digits, axis, in_band=True)
    dot.attr("graph", label=_legend(title, [run for _, run in prepared], scale, axis))
    return dot


# ---- tables of cells: the split heatmap and the compact comparison -------------------------------

# A table keeps at most WIDEST columns (a longer run puts several states in one), about 750 px; up to
# NUMBERED columns and NUMBERED_ROWS rows the cells print their numbers; up to LABELLED rows each
# is named. ZERO marks an exact 0 (a unit that got nothing), outside the shades of a size.
WIDEST, NUMBERED, NUMBERED_ROWS, LABELLED = 140, 16, 24, 64
BAR = 14  # a gain bar's most length in points, from the line at 1
ZERO, CUT = "#f2c94c", "#d9d9d9"
TEXT = 8  # points: the smallest text of a table, 9 px or more where a wide one is shrunk to a column


def _ticks(count: int, every: int, text) -> str:
    """A row of labels under ``count`` columns, one every ``every`` columns, each spanning its group."""
    starts = list(range(0, count, every))
    if len(starts) > 1 and count - starts[-1] < every:  # a short last group joins the one before it
        starts.pop()
    ends = [*starts[1:], count]
    return "".join(f'<TD COLSPAN="{end - start}" ALIGN="LEFT">{_small(text(start), TEXT)}</TD>'
                   for start, end in zip(starts, ends))


def _stride(count: int) -> int:
    """How many states (or time steps) one column holds: 1, or enough to keep WIDEST columns."""
    return max(1, math.ceil(count / WIDEST))


def _cell_width(columns: int) -> int:
    return max(3, min(14, 560 // max(columns, 1)))


def _shade(x: float, scale: tuple, width: int, height: int, text: str = "", extra: str = "") -> str:
    """One cell shaded by an absolute size: white for nan (no gradient), ZERO for exactly 0."""
    colour = "#ffffff" if math.isnan(x) else ZERO if x == 0.0 else style.magnitude_fill(x, *scale)
    return f'<TD WIDTH="{width}" HEIGHT="{height}" BGCOLOR="{colour}"{extra}>{text}</TD>'


def _draw_split(loss, states: Sequence, name: str | None, axis: str, digits: int, title: str | None,
                by: str) -> Digraph:
    """draw_steps(..., by=by): one row per unit (batch row), one column per state (module doc)."""
    if by not in diagnostics.SPLITS:
        raise ValueError(f"draw_steps: by must be one of {', '.join(map(repr, diagnostics.SPLITS))} or None, "
                         f"got {by!r}")
    run = _run(loss, states, name, axis, "draw_steps", bound=None)
    split = diagnostics.steps(loss, list(states), by=by)
    words, T, count = AXES[axis], split.length, len(split.labels)
    stride = _stride(T + 1)
    shown = list(range(0, T + 1, stride))
    numbered = len(shown) <= NUMBERED and count <= NUMBERED_ROWS
    width = 30 if numbered else _cell_width(len(shown))
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
                cells.append(f'<TD ROWSPAN="{span}" ALIGN="RIGHT">{_small(style.text(shown_name, 30), TEXT)}</TD>')
            for t in shown:
                x = float(split.grad_norm[t, k])
                text = ""
                if numbered and not math.isnan(x):
                    text = f'<FONT POINT-SIZE="7">{style.number(x, digits)}</FONT>'
                cells.append(_shade(x, scale, width, height, text))
            table.append(f"<TR>{''.join(cells)}</TR>")
    every = 1 if numbered else max(1, round(len(shown) / 10))
    table.append(f'<TR><TD ALIGN="RIGHT">{_small(words["index"] + " →", TEXT)}</TD>'
                 f'{_ticks(len(shown), every, lambda c: str(shown[c]))}</TR>')
    body = f'<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="1" CELLPADDING="0">{"".join(table)}</TABLE>'
    dot = style.base_digraph("step_view_by_" + by)
    dot.node("split", label=style.html_label(body), shape="plaintext")
    dot.attr("graph", label=_split_legend(title, run, split, scale, stride, axis))
    return dot


def _split_legend(title: str | None, run: _Run, split, scale: tuple, stride: int, axis: str) -> str:
    words = AXES[axis]
    i, unit = words["index"], words["unit"]
    sub = f"<SUB>{i}</SUB>"
    batch = run.batch or 1
    letter = style.clean(run.letter, 12)
    count = len(split.labels)
    width = split.grad_norm.shape[1] if split.by == "unit" else sum(size for _, _, size in split.parts)
    if split.by == "unit":
        what = f"{count} units, one a row"
        over = f"over all {batch} batch rows" if batch > 1 else "(one batch row)"
        cell = f"‖δ{sub}‖ of one unit, {over}"
    else:
        what = f"{count} batch rows, one a row"
        cell = f"‖δ{sub}‖ of one batch row, over all its units (every part of the state)"
    headline = [f"{split.length} {words['unit' if split.length == 1 else 'units']}", f"state {run.state}", what]
    if not np.isnan(split.grad_norm[0]).all():
        zero = int(np.sum(split.grad_norm[0] == 0.0))
        things = "units" if split.by == "unit" else "batch rows"
        headline.append(f"{zero} of {count} {things} get exactly 0 at {letter}{_subscript(0)}")
    rows = [style.magnitude_row(_words(f"cell shade: {cell}: the gradient that reached it in s{sub} from outside "
                                       f"{unit} {i} (absolute values)", LINE - 30), *scale),
            f'<TR><TD ALIGN="RIGHT"><FONT POINT-SIZE="10">exactly 0: nothing reached it; white: no gradient '
            f'reached s{sub} at all</FONT></TD><TD ALIGN="LEFT"><TABLE BORDER="0" CELLBORDER="0" CELLSPACING="1" '
            f'CELLPADDING="1"><TR><TD BGCOLOR="{ZERO}" WIDTH="38" HEIGHT="18"><FONT POINT-SIZE="9">0</FONT></TD>'
            f'<TD BGCOLOR="#ffffff" BORDER="1" COLOR="#d0d0d0" WIDTH="38" HEIGHT="18"></TD></TR></TABLE></TD></TR>']
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
        notes.append(f"one column every {stride} states (s<SUB>0</SUB>, s<SUB>{stride}</SUB>, …): "
                     f"{split.length + 1} states in {len(range(0, split.length + 1, stride))} columns")
    if any(split.cuts):
        notes.append(f"a cut (truncated BPTT) at {sum(split.cuts)} {words['units']}: no gradient crosses it")
    numbers = "; the numbers printed in the cells are the same norms" if len(split.labels) <= NUMBERED_ROWS else ""
    notes.append(f"steps(loss, states, by={split.by!r}).grad_norm holds every number{numbers}")
    heading = style.clean(title, 200) if title is not None else f"step view by {split.by}"
    rows.insert(0, f'<TR><TD COLSPAN="2" ALIGN="LEFT" BALIGN="LEFT">{_caption(heading, headline, "", 14)}</TD></TR>')
    rows.extend(f'<TR><TD COLSPAN="2" ALIGN="LEFT" BALIGN="LEFT"><FONT POINT-SIZE="9" COLOR="{style.MUTED}">'
                f'{_words(note, LINE + 20)}</FONT></TD></TR>' for note in notes)
    return style.legend(None, rows, [])


def _block_gain(rows: list, first: int, last: int) -> float | None:
    """The gain of time steps first..last of one run: the geometric mean of their gains (a cut left
    out); nan for cuts only, None where a gradient is missing."""
    crossed = [r for r in rows[first:last + 1] if not r.cut]
    if not crossed:
        return math.nan
    if any(r.gain is None for r in crossed):
        return None
    return math.prod(r.gain for r in crossed) ** (1 / len(crossed))


def _gain_bar(gain: float | None, length: int, decades: float, grows: bool, width: int) -> str:
    """One column of a gain strip: a bar from the line at 1, down for a gain below 1 (up above),
    log10(gain) / decades of BAR, coloured by gain^length; grey for a cut, empty without a gradient."""
    if gain is None or math.isnan(gain):
        colour, down, up = (CUT, BAR, 0.0) if gain is not None else ("#ffffff", 0.0, 0.0)
    else:
        s = -1.0 if gain == 0.0 else max(-1.0, min(1.0, math.log10(gain) / decades))
        colour = style.colour(compounded(gain, length), GAIN_DECADES)
        down, up = max(-s, 0.0) * BAR, max(s, 0.0) * BAR
    pieces = [("#ffffff", BAR - up), (colour, up)] if grows else []
    return _bar(width, [*pieces, (style.INK, 1), (colour, down), ("#ffffff", BAR - down)])


def _draw_strips(prepared: list, axis: str, title: str | None) -> Digraph:
    """compare_steps(..., compact=True): two strips per run on one time axis and one scale."""
    words = AXES[axis]
    longest = max(run.length for _, run in prepared)
    stride = _stride(longest + 1)
    columns = math.ceil((longest + 1) / stride)
    width = _cell_width(columns)
    scale = style.magnitude_range(r.grad_norm for _, run in prepared for r in run.rows)
    blocks = {}
    for label, run in prepared:
        for c in range(columns):
            first, last = max(c * stride, 1), min((c + 1) * stride - 1, run.length)
            blocks[label, c] = _block_gain(run.rows, first, last) if first <= last else None
    drawn = [g for g in blocks.values() if g is not None and g > 0 and math.isfinite(g)]
    decades = max([abs(math.log10(g)) for g in drawn] + [0.01])
    grows = any(g > 1.0 for g in drawn)
    table = []
    for label, run in prepared:
        parts, _ = _summary(run, axis)
        factor, first, last = diagnostics.gradient_factor(run.rows)
        if factor is not None and factor > 0 and math.isfinite(factor) and last > first and not run.multi_read:
            per = f" ({style.number(factor ** (1 / (last - first)), 2)} a {words['unit']})"
            at = next(k for k, p in enumerate(parts) if "multiply to" in p)
            head, *tail = parts[at].split(" · ", 1)
            parts[at] = " · ".join([head + per, *tail])
        words_line = _wrap([f"<B>{style.text(label, 80)}</B>", *(style.text(p, 240) for p in parts)], LINE, " · ")
        table.append(f'<TR><TD COLSPAN="{columns + 1}" ALIGN="LEFT" BALIGN="LEFT">{_small(words_line, 9)}</TD></TR>')
        gains, sizes = [], []
        for c in range(columns):
            start, end = c * stride, min((c + 1) * stride, longest + 1) - 1
            if start > run.length:
                gains.append(f'<TD WIDTH="{width}" HEIGHT="10"></TD>')
                sizes.append(f'<TD WIDTH="{width}" HEIGHT="10"></TD>')
                continue
            end = min(end, run.length)
            gains.append(_gain_bar(blocks[label, c], run.length, decades, grows, width))
            held = [r.grad_norm for r in run.rows[start:end + 1] if r.grad_norm is not None]
            clipped = any(r.clip is not None and r.clip.fired for r in run.rows[start:end + 1])
            outline = f' BORDER="1" COLOR="{style.colour(1e9)}"' if clipped else ""
            sizes.append(_shade(max(held) if held else math.nan, scale, width, 10, extra=outline))
        top = f"×{style.number(10 ** decades, 2)}<BR/>" if grows else ""
        table.append(f'<TR><TD ALIGN="RIGHT">{_small(f"{top}gain ×1<BR/>×{style.number(10 ** -decades, 2)}", TEXT)}'
                     f'</TD>{"".join(gains)}</TR>')
        table.append(f'<TR><TD ALIGN="RIGHT">{_small("‖δ‖", TEXT)}</TD>{"".join(sizes)}</TR>')
    every = max(1, round(columns / 10))
    table.append(f'<TR><TD ALIGN="RIGHT">{_small(words["index"] + " →", TEXT)}</TD>'
                 f'{_ticks(columns, every, lambda c: str(c * stride))}</TR>')
    body = f'<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="1" CELLPADDING="0">{"".join(table)}</TABLE>'
    dot = style.base_digraph("step_compare")
    dot.node("strips", label=style.html_label(body), shape="plaintext")
    dot.attr("graph", label=_strips_legend(title, [run for _, run in prepared], scale, stride, axis, decades))
    return dot


def _strips_legend(title: str | None, runs: list[_Run], scale: tuple, stride: int, axis: str,
                   decades: float) -> str:
    words = AXES[axis]
    i, unit = words["index"], words["unit"]
    sub = f"<SUB>{i}</SUB>"
    lengths = sorted({r.length for r in runs})
    length = f"T = {lengths[0]}" if len(lengths) == 1 else "T, its run's length"
    column = f"{unit} {i}" if stride == 1 else f"{stride} {words['units']} (the geometric mean of their gains)"
    full = style.number(10 ** -decades, 2)
    rows = [
        style.legend_row(_words(f"gain strip, one bar per {column}: gain{sub} = ‖J{sub}ᵀ δ{sub}‖ / ‖δ{sub}‖; its "
                                f"length log10(gain{sub}) on one scale for all runs, down from the line at ×1 for a "
                                f"gain below 1 (a full bar: ×{full} or less, 0 included), up above; its colour "
                                f"gain{sub}<SUP>T</SUP>, what it would compound to over the drawn {length} "
                                f"{words['units']}", LINE - 20), GAIN_DECADES),
        style.magnitude_row(_words(f"‖δ‖ strip, one cell per "
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
        "white: no gradient; yellow: exactly 0; every norm is over the whole batch, all parts of a state as one "
        "vector",
    ]
    if any(r.any_cut for r in runs):
        notes.append("grey full bar: a cut (truncated BPTT), no gradient crosses it")
    if any(r.any_clip for r in runs):
        notes.append("red outline on ‖δ‖: a clipping hook fired on that state (its gradient after the clip)")
    if title:
        rows.insert(0, f'<TR><TD COLSPAN="2" ALIGN="LEFT" BALIGN="LEFT">{_caption(title, [], "", 14)}</TD></TR>')
    rows.extend(f'<TR><TD COLSPAN="2" ALIGN="LEFT" BALIGN="LEFT"><FONT POINT-SIZE="9" COLOR="{style.MUTED}">'
                f'{_words(note, LINE + 20)}</FONT></TD></TR>' for note in notes)
    return style.legend(None, rows, [])

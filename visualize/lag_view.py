"""Lag view: how far each loss's gradient reaches back, for a loss at every step (or any losses).

Every number comes from ``tinygrad_rnn.diagnostics.lags`` and ``reach``:

- the heatmap, one row per loss i and one column per state s_k: the share of loss i's gradient that
  reaches s_k, ||delta_k^(i)|| / ||delta_{t_i}^(i)||, where t_i is the last state the loss reads (so
  the cell at k = t_i is 1). Coloured on a log scale, blue where it shrank, red where it grew; an
  empty cell is a state the loss does not reach (after t_i, or across a cut); a share of exactly 0
  (a step on the way passed no gradient at all) has a mark of its own (``ZERO``), never the scale's end.
- the reach curve, one bar per lag: the median over losses of that share ``lag`` steps back,
  [i, t_i - lag] / [i, t_i]. A bar below the line shrank, above it grew, on the same scale; a median
  of exactly 0 is a short ``ZERO`` mark under the line, not a bar.
- the headline: the median reach at the longest lag that at least half the losses are long enough for
  and at which the median share is above 0 (``headline_lag``): the reach of gradients that arrive. When
  that is lag 0 it says how many losses' gradients get even one time step back.

With one loss at the end this is the step view's story for one row; with a loss at every step it says
what the step view's mixed gradients cannot: how far any one loss reaches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from graphviz import Digraph

from tinygrad_rnn import diagnostics, recurrence
from tinygrad_rnn.value import Value
from visualize import style
from visualize.table_cells import ZERO, bar, small, ticks

__all__ = ["draw_lags", "lag_decades", "headline_lag"]

NUMBERED = 16  # up to this many states, every heatmap cell shows its number
BAR = 60  # the reach curve's half height in points: a bar this tall shrank or grew by 10^decades
FEW = 3  # a reach bar that rests on fewer losses than this is drawn pale
ZERO_MARK = 5  # the height in points of the mark under the line for a median share of exactly 0


def lag_decades(shares) -> int:
    """The colour scale's half width in decades: enough for the largest |log10| share drawn, 1 to 16."""
    logs = [abs(math.log10(x)) for x in np.ravel(shares) if x > 0 and math.isfinite(x)]
    return int(min(16, max(1, math.ceil(max(logs, default=1.0)))))


def _shares(matrix: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """(shares, rows): each loss's row divided by its own entry at t_i; only losses that reach a state."""
    shares, kept = [], []
    for i, row in enumerate(matrix):
        held = np.flatnonzero(np.nan_to_num(row, nan=0.0) > 0.0)
        if held.size:
            t = int(held[-1])
            shares.append(np.where(np.arange(row.size) <= t, row / row[t], 0.0))
            kept.append(i)
    return (np.array(shares) if shares else np.zeros((0, matrix.shape[1]))), kept


def _time_steps(count: int) -> str:
    return f"{count} time step{'' if count == 1 else 's'}"


def _zeros(matrix: np.ndarray, kept: list[int], states: Sequence) -> np.ndarray:
    """(len(kept), states) booleans: True where loss i's share at s_k is exactly 0 though s_k lies
    within its reach (k <= t_i, no cut between s_k and s_{t_i}): a step on the way passed no gradient."""
    zeros = np.zeros((len(kept), matrix.shape[1]), dtype=bool)
    for row, i in enumerate(kept):
        t = _last(matrix[i])
        zeros[row, : t + 1] = matrix[i, : t + 1] == 0.0
    if zeros.any():
        cuts = [t for t, step in enumerate(recurrence.step_graphs(states), 1) if step.cut]
        for row, i in enumerate(kept):
            t = _last(matrix[i])
            across = max((c for c in cuts if c <= t), default=0)  # s_k with k < across lie past a cut
            zeros[row, :across] = False
    return zeros


def _cell(share: float, decades: int, width: int, numbered: bool, zero: bool = False) -> str:
    if math.isnan(share):
        return f'<TD WIDTH="{width}" HEIGHT="{width}">{small("·", 7)}</TD>'
    if share == 0.0 and zero:
        text = f'<FONT POINT-SIZE="7" COLOR="{style.INK}">0</FONT>' if numbered else ""
        return f'<TD WIDTH="{width}" HEIGHT="{width}" BGCOLOR="{ZERO}">{text}</TD>'
    if share == 0.0:
        return f'<TD WIDTH="{width}" HEIGHT="{width}"></TD>'
    colour = style.colour(share, decades, power=1.0)
    text = ""
    if numbered:
        ink = "white" if abs(style.scale(share, decades)) > 0.45 else style.INK
        text = f'<FONT POINT-SIZE="7" COLOR="{ink}">{style.number(share, 2)}</FONT>'
    return f'<TD WIDTH="{width}" HEIGHT="{width}" BGCOLOR="{colour}">{text}</TD>'


def _heatmap(shares: np.ndarray, names: list[str], decades: int, zeros: np.ndarray) -> str:
    columns = shares.shape[1]
    numbered = columns <= NUMBERED
    width = 26 if numbered else max(4, min(14, 700 // columns))
    every = 1 if numbered else max(1, round(columns / 10))
    rows = [f'<TR><TD ALIGN="RIGHT">{small("state k →")}</TD>{ticks(columns, every, str, 7)}</TR>']
    for name, share, zero in zip(names, shares, zeros):
        cells = "".join(_cell(float(x), decades, width, numbered, bool(z)) for x, z in zip(share, zero))
        rows.append(f'<TR><TD ALIGN="RIGHT">{small(style.text(name, 30))}</TD>{cells}</TR>')
    return f'<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="1" CELLPADDING="0">{"".join(rows)}</TABLE>'


def _reach_curve(curve: np.ndarray, counts: np.ndarray, decades: int) -> str:
    """Bars over the lag, down from the line for a share below 1 (up for one above), their length
    log10(share) / decades of the half height; a short ZERO mark for a median of exactly 0; pale where
    fewer than FEW losses reach that lag."""
    width = max(4, min(26, 700 // max(len(curve), 1)))
    every = 1 if len(curve) <= 26 else max(1, round(len(curve) / 10))  # a window of 25 steps: every number
    grows = bool(np.nanmax(curve, initial=0.0) > 1.0)
    up, down = [], []
    for r, count in zip(curve, counts):
        s = 0.0 if math.isnan(r) else style.scale(r, decades)
        colour = "#ffffff" if math.isnan(r) else style.colour(r, decades, power=1.0)
        if count < FEW and not math.isnan(r):
            colour = style.washed(colour)
        high, low = max(s, 0.0) * BAR, max(-s, 0.0) * BAR
        if r == 0.0:  # exactly 0 arrives: its own mark, not the full bar of the scale's end
            colour, low = (ZERO if count >= FEW else style.washed(ZERO)), ZERO_MARK
        up.append(bar(width, [("#ffffff", BAR - high), (colour, high), (style.INK, 1)]))
        down.append(bar(width, [(colour, low), ("#ffffff", BAR - low)]))
    scale_up = f'<TD ALIGN="RIGHT" VALIGN="TOP">{small(f"×10<SUP>{decades}</SUP>")}</TD>'
    scale_down = (f'<TD ALIGN="RIGHT" VALIGN="TOP">{small("×1")}</TD>' if not grows else "<TD></TD>")
    line = "".join(bar(width, [(style.INK, 1)]) for _ in curve)
    rows = [f'<TR>{scale_up}{"".join(up)}</TR>' if grows else f"<TR><TD></TD>{line}</TR>"]
    rows.append(f'<TR>{scale_down}{"".join(down)}</TR>')
    rows.append(f'<TR><TD ALIGN="RIGHT" VALIGN="BOTTOM">{small(f"×10<SUP>−{decades}</SUP>")}</TD>'
                f'<TD COLSPAN="{len(curve)}"></TD></TR>')
    rows.append(f'<TR><TD ALIGN="RIGHT">{small("lag")}</TD>{ticks(len(curve), every, str, 7)}</TR>')
    rows.append(f'<TR><TD ALIGN="RIGHT">{small("reach")}</TD>'
                f'{ticks(len(curve), every, lambda lag: style.number(curve[lag], 2), 7)}</TR>')
    return f'<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="1" CELLPADDING="0">{"".join(rows)}</TABLE>'


def _power(e: int, decades: int, clipped: bool) -> str:
    text = "×1" if e == 0 else f"×10<SUP>{e}</SUP>".replace("-", "−")
    return ("≤" if e < 0 else "≥") + text if clipped and abs(e) == decades else text


def _swatches(decades: int, grows: bool, clipped: bool, zero: bool = False) -> str:
    """The legend's colour key: shares from 10^-decades to 1 (to 10^decades if any grew); the end
    swatch says ≤ (≥) when some share lies beyond the scale; then, if any is drawn, the mark of a
    share of exactly 0 (apart from the scale: no power of ten reaches 0)."""
    step = max(1, math.ceil(decades / 4))
    exponents = sorted({*range(-decades, 1, step), 0, *(range(step, decades + 1, step) if grows else ())})
    cells = "".join(
        f'<TD BGCOLOR="{style.colour(10.0**e, decades, power=1.0)}" WIDTH="38" HEIGHT="18"><FONT POINT-SIZE="9" '
        f'COLOR="{"white" if abs(e) / decades > 0.45 else style.INK}">'
        f'{_power(e, decades, clipped)}</FONT></TD>' for e in exponents)
    if zero:
        cells += (f'<TD WIDTH="8"></TD><TD BGCOLOR="{ZERO}" WIDTH="38" HEIGHT="18"><FONT POINT-SIZE="9" '
                  f'COLOR="{style.INK}">0</FONT></TD>')
    caption = ("cell and bar colour: a share of a loss's gradient, ‖δ<SUB>k</SUB><SUP>(i)</SUP>‖ / "
               "‖δ<SUB>t<SUB>i</SUB></SUB><SUP>(i)</SUP>‖ (log scale)")
    return (f'<TR><TD ALIGN="RIGHT"><FONT POINT-SIZE="10">{caption}</FONT></TD><TD><TABLE BORDER="0" '
            f'CELLBORDER="0" CELLSPACING="1" CELLPADDING="1"><TR>{cells}</TR></TABLE></TD></TR>')


def draw_lags(losses, states: Sequence, *, matrix: np.ndarray | None = None, max_lag: int | None = None,
              title: str | None = None) -> Digraph:
    """The lag view (module doc) of ``losses`` over ``states = [s_0, ..., s_T]``.

    ``losses``: a list of Values (a loss at every step, say), or one Value, split by where it reads the
    states (row t: the part read at s_t). ``matrix``: the ``diagnostics.lags`` result, if already
    computed; ``max_lag`` thins a long run (``diagnostics.lags``). Needs no backward pass.
    """
    if matrix is None:
        matrix = diagnostics.lags(losses, states, max_lag=max_lag)
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != len(states):
        raise ValueError(f"draw_lags: the matrix must be (losses, {len(states)} states), got {matrix.shape}")
    shares, kept = _shares(matrix)
    split = isinstance(losses, Value)
    names = [f"read at s{i}" if split else f"losses[{i}], t={_last(matrix[i])}" for i in kept]
    curve, counts = diagnostics.reach(matrix), diagnostics.reach_counts(matrix)
    decades = lag_decades(np.concatenate([shares[shares > 0], curve[np.isfinite(curve)]]))
    zeros = _zeros(matrix, kept, states)
    T = len(states) - 1
    picture = style.base_digraph("lag_view")
    body = (f'<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="6">'
            f'<TR><TD ALIGN="LEFT"><B>share of each loss\'s gradient that reaches s<SUB>k</SUB></B></TD></TR>'
            f'<TR><TD>{_heatmap(shares, names, decades, zeros) if kept else "no loss reaches any state"}</TD></TR>'
            f'<TR><TD ALIGN="LEFT"><B>reach: the median share that arrives lag time steps back</B></TD></TR>'
            f'<TR><TD>{_reach_curve(curve, counts, decades)}</TD></TR></TABLE>')
    picture.node("lags", label=style.html_label(body), shape="plaintext")
    # The reach goes on a line of its own: a long title must not cut its number or its words off.
    summary = f"{len(kept)} loss{'es' if len(kept) != 1 else ''} over {_time_steps(T)}"
    reach_words = _reach_words(matrix, kept, curve, counts)
    drawn = np.concatenate([shares[shares > 0], curve[np.isfinite(curve) & (curve > 0)]])
    clipped = bool(drawn.size and np.abs(np.log10(drawn)).max() > decades)
    zero = bool(zeros.any() or (curve == 0.0).any())
    rows = [_swatches(decades, bool(drawn.size and drawn.max() > 1.0), clipped, zero)]
    notes = [
        "δ<SUB>k</SUB><SUP>(i)</SUP>: the gradient loss i alone sends to s<SUB>k</SUB> from outside step k "
        "(the step view's δ, for one loss); t<SUB>i</SUB>: the last state loss i reads, where its share is 1",
        "reach at lag ℓ: the median over losses of ‖δ<SUB>t<SUB>i</SUB>−ℓ</SUB><SUP>(i)</SUP>‖ / "
        "‖δ<SUB>t<SUB>i</SUB></SUB><SUP>(i)</SUP>‖, over the losses with t<SUB>i</SUB> ≥ ℓ (the longest lags "
        "rest on the fewest losses); hooks (clipping) are not applied",
        f"pale bar: fewer than {FEW} losses reach that lag; blank: a state the loss does not reach (after "
        "t<SUB>i</SUB>, or across a cut); ·: not computed (max_lag); norms are over the whole batch",
    ]
    if zero:
        notes.append("yellow, 0: exactly 0 of the loss's gradient arrives (a time step on the way passed none; a "
                     "bar: the median share is exactly 0), apart from the scale, whose end is a share that small "
                     "or smaller, never 0")
    heading = style.clean(title, 200) if title is not None else "lag view"
    picture.attr("graph", label=style.legend(f"{heading} — {summary}", rows, notes, subtitle=reach_words))
    return picture


def headline_lag(curve: np.ndarray, counts: np.ndarray) -> int:
    """The longest lag that at least half the losses are long enough for (t_i >= lag) and at which the
    median share of those losses is known and above 0, so that at least half of them get a gradient
    that far back: what a one-number summary may quote without resting on one or two losses, or on
    gradients that never arrive. 0 when none does (at lag 0 every share is 1)."""
    half = max(1, math.ceil(counts.max(initial=0) / 2))
    return max((lag for lag in range(len(curve))
                if counts[lag] >= half and math.isfinite(curve[lag]) and curve[lag] > 0.0), default=0)


def _reach_words(matrix: np.ndarray, kept: list[int], curve: np.ndarray, counts: np.ndarray) -> str:
    """The headline's words on the reach: the median reach at ``headline_lag``, and when that is lag 0,
    how many losses' gradients get even one time step back."""
    if not kept:
        return "no loss's gradient reaches any state"
    far = headline_lag(curve, counts)
    words = (f"median reach {_time_steps(far)} back (the longest lag whose median share, over at least half "
             f"the losses, is above 0): {style.number(curve[far], 2)}")
    if far > 0 or len(curve) < 2:
        return words
    eligible = [i for i in kept if _last(matrix[i]) >= 1]  # losses that read a state past s_0
    computed = [i for i in eligible if not math.isnan(matrix[i, _last(matrix[i]) - 1])]
    arrive = sum(1 for i in computed if matrix[i, _last(matrix[i]) - 1] > 0.0)
    if not eligible:
        return words + " · no loss reads a state after s₀, so none can reach back"
    if not computed:
        return words + " · lag 1 and beyond not computed (max_lag)"
    if arrive == 0:
        return words + (" · the loss's gradient does not get even 1 time step back" if len(kept) == 1
                        else " · no loss's gradient gets even 1 time step back")
    return words + f" · only {arrive} of the {len(kept)} losses' gradients get 1 time step back"


def _last(row: np.ndarray) -> int:
    held = np.flatnonzero(np.nan_to_num(row, nan=0.0) > 0.0)
    return int(held[-1]) if held.size else -1

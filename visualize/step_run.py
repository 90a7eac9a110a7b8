"""One run of the step view, and what the pictures say about it in words.

A run is the rows of ``tinygrad_rnn.diagnostics.steps`` for states [s_0, ..., s_T], with the letter its
nodes carry and what its state is (h_t, or s_t = (h_t, c_t)). Its headline gives the end gradients,
what the gains multiply to and ``diagnostics.verdict``'s word with the rule that gave it, in numbers:
"vanishing (0.00096 < 10⁻³)". Every step picture is drawn from these: the bands of nodes and edges
(step_view), the heatmap by unit or batch row (unit_view) and the compact strips (strip_view); they
share the words of an axis (AXES: "time step", or "layer"), the colour of a gain (GAIN_DECADES,
``compounded``) and the wrapping of captions at LINE characters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from tinygrad_rnn import diagnostics, recurrence
from visualize import style

__all__ = [
    "AXES", "GAIN_DECADES", "LINE", "StepRun", "prepare_run", "subscript", "compounded", "summary", "power_of_ten",
    "wrap", "wrap_words", "caption",
]

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

# A legend wrapped at LINE characters stays about 1,000 px wide, so a notebook or a README column
# (about 830 px) shows its text at 9 px or more.
LINE = 100


@dataclass
class StepRun:
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


def prepare_run(loss, states: Sequence, name: str | None, axis: str, caller: str,
                bound: str | None = "svd") -> StepRun:
    """The run of ``states`` [s_0, ..., s_T] after ``loss.backward()``: its ``diagnostics.steps`` rows
    (``bound`` as there), the letter ``name`` on its nodes (h, s for a state of several parts, a for
    layers) and its state in words; ``caller`` names the picture in an error."""
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
    return StepRun(rows, letter, state, batch)


def subscript(t: int) -> str:
    """t in subscript digits (₁₂): Unicode, as <SUB> overlaps the next line of a label."""
    return str(t).translate(str.maketrans("0123456789-", "₀₁₂₃₄₅₆₇₈₉₋"))


def compounded(gain: float, length: int) -> float:
    """gain^length without overflow: what a gain would compound to over ``length`` steps."""
    if gain <= 0.0 or not math.isfinite(gain):
        return gain
    return math.exp(max(-745.0, min(709.0, length * math.log(gain))))


def summary(run: StepRun, axis: str) -> tuple[list[str], str]:
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
            parts.append(f"the read at {letter}{subscript(last)} alone reaches {letter}{subscript(first)} "
                         f"× {style.number(factor, 2)}")
            story += f"; the read at {letter}{subscript(last)} alone, carried back: see the lag view (draw_lags)"
    elif factor is not None:
        parts.append(f"‖δ{subscript(first)}‖ = {style.number(rows[first].grad_norm, 2)}, "
                     f"‖δ{subscript(last)}‖ = {style.number(rows[last].grad_norm, 2)}")
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


def wrap(pieces: list[str], width: int, joiner: str = " ") -> str:
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


def wrap_words(markup: str, width: int) -> str:
    """Markup wrapped at its spaces (never one inside a tag)."""
    return wrap(re.split(r" (?![^<]*>)", markup), width)


def caption(title: str, parts: list[str], story: str, size: int) -> str:
    """A bold title, then the headline's parts and the story under it, wrapped (escaped here)."""
    lines = []
    if title:
        lines.append(f'<FONT POINT-SIZE="{size}"><B>{wrap_words(style.text(title, 240), LINE * 9 // size)}</B></FONT>')
    if parts:
        headline = wrap([style.text(p, 240) for p in parts], LINE, " · ")
        lines.append(f'<FONT POINT-SIZE="10">{headline}</FONT>')
    if story:
        lines.append(f'<FONT POINT-SIZE="10">{wrap_words(style.text(story, 300), LINE)}</FONT>')
    return '<BR ALIGN="LEFT"/>'.join(lines) + '<BR ALIGN="LEFT"/>'

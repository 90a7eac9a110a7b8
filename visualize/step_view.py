"""Step view: one node per time step, for sequences far too long for the op view.

Each edge h_{t-1} -> h_t carries the spectral norm of the step Jacobian dh_t/dh_{t-1}, the most one
step back in time can stretch a gradient; each node is shaded by ||dL/dh_t||, the gradient that
actually arrived. A row of blue edges (norms < 1) leading back to ever bluer nodes is a vanishing
gradient: backpropagating k steps multiplies by k such Jacobians. The numbers come from
``tinygrad_rnn.diagnostics`` (vector-Jacobian products on the recorded graph), not from here.

Detached (truncated) boundaries are dotted: no gradient crosses them. Where a clipping hook fired
on h_t, the node is marked with the gradient norm before and after the clip. Long sequences wrap
into rows of ``per_row`` steps, each row continuing from a copy of the last node of the row before,
so T = 200 stays readable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from graphviz import Digraph

from tinygrad_rnn import diagnostics
from visualize import style
from visualize.layout import time_step

__all__ = ["draw_steps", "compare_steps", "StepNumbers", "step_numbers"]

JACOBIAN_DECADES = 1.0  # an edge of 0.1 is already full blue: per step, that is a lot
GRADIENT_DECADES = 6.0  # vanishing gradients span many decades: 1e-6 is full blue


@dataclass
class StepNumbers:
    """What the step view draws for states [h_0, ..., h_T]: per edge t (h_{t-1} -> h_t, t = 1..T)
    the Jacobian norm and whether the graph was cut there; per node the gradient norm and clip."""

    jacobian_norms: list
    gradient_norms: list
    clips: list
    cut: list
    verdict: str


def _cut_before(h_t, h_prev) -> bool:
    """Whether step t began from a detached state: a leaf marked ``truncated`` among the inputs of
    h_t's own time step (only that step's nodes are searched, so this stays cheap)."""
    if isinstance(h_prev.notes, dict) and h_prev.notes.get("truncated"):
        return True
    step = time_step(h_t.scope)
    if step is None:
        return False
    stack, seen = [h_t], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.op is None:
            if isinstance(node.notes, dict) and node.notes.get("truncated"):
                return True
            continue
        stack.extend(p for p in node.parents if p.op is None or time_step(p.scope) == step)
    return False


def step_numbers(states: Sequence) -> StepNumbers:
    """The diagnostics behind a step view (see StepNumbers)."""
    states = list(states)
    if len(states) < 2:
        raise ValueError(f"draw_steps: needs the states [h_0, ..., h_T] with T >= 1, got {len(states)} state(s)")
    jacobians = diagnostics.step_jacobian_norms(states)
    gradients = diagnostics.gradient_norms(states)
    clips = [c if isinstance(c, dict) and c.get("fired") else None for c in diagnostics.clip_events(states)]
    cut = [norm == 0.0 and _cut_before(states[t], states[t - 1]) for t, norm in enumerate(jacobians, 1)]
    return StepNumbers(jacobians, gradients, clips, cut, diagnostics.verdict(gradients))


def _node_label(name: str, t: int, gradient, clip, ghost: bool = False) -> str:
    head = f"<B>{style.text(name, 12)}{_subscript(t)}</B>"  # Unicode digits: <SUB> overlaps the next line
    if ghost:
        return style.html_label(f'<FONT COLOR="{style.MUTED}">{head} ↩</FONT>')
    shown = style.number(gradient, 2) if gradient is not None else "no grad"
    lines = [head, f'<FONT POINT-SIZE="9">{shown}</FONT>']
    if clip is not None:
        lines.append(
            f'<FONT POINT-SIZE="9" COLOR="{style.colour(1e9)}"><B>✂</B> {style.number(clip.get("norm_before"), 2)}'
            f"→{style.number(clip.get('norm_after'), 2)}</FONT>"
        )
    return style.html_label("<BR/>".join(lines))


def _draw_block(dot: Digraph, prefix: str, numbers: StepNumbers, name: str, per_row: int, digits: int) -> None:
    """The nodes and edges of one sequence, in rows of ``per_row`` steps, node ids ``prefix``+t."""
    T = len(numbers.jacobian_norms)
    # Graphviz stacks left-to-right rows bottom-up in the order they are written: write the last first.
    for row_start in reversed(range(0, T, per_row)):
        row_end = min(row_start + per_row, T)
        with dot.subgraph(name=f"cluster_{prefix}row{row_start}") as row:
            row.attr(label="", style="invis", margin="4")
            first = row_start
            if row_start > 0:  # continue from a faint copy of the previous row's last node
                row.node(f"{prefix}g{row_start}", label=_node_label(name, row_start, None, None, ghost=True),
                         shape="box", style="rounded,dashed", color="#c8c8c8", fontsize="10")
            for t in range(first, row_end + 1):
                if t == row_start and row_start > 0:
                    continue
                gradient = numbers.gradient_norms[t]
                clip = numbers.clips[t]
                attrs = {
                    "label": _node_label(name, t, gradient, clip), "shape": "box", "style": "rounded,filled",
                    "fillcolor": style.fill(gradient, GRADIENT_DECADES, 0.45) if gradient is not None else "white",
                    "width": "0.5", "height": "0.42", "margin": "0.04,0.02",
                    "tooltip": style.tooltip(f"{name}_{t}: ||dL/d{name}_{t}|| = {gradient!r}"
                                             + (f"; clipped: {clip!r}" if clip else "")),
                }
                if clip is not None:
                    attrs.update(color=style.colour(1e9), penwidth="2.2")
                row.node(f"{prefix}n{t}", **attrs)
            for t in range(row_start + 1, row_end + 1):
                tail = f"{prefix}g{row_start}" if t - 1 == row_start and row_start > 0 else f"{prefix}n{t - 1}"
                row.edge(tail, f"{prefix}n{t}", **_edge_attrs(name, t, numbers, digits))


def _edge_attrs(name: str, t: int, numbers: StepNumbers, digits: int) -> dict:
    norm = numbers.jacobian_norms[t - 1]
    tip = f"||d{name}_{t}/d{name}_{t - 1}||_2 = {norm!r}"
    if numbers.cut[t - 1]:
        return {"label": style.html_label(f'<FONT COLOR="{style.MUTED}">cut</FONT>'), "style": "dotted",
                "color": "#9a9a9a", "penwidth": "1.4", "arrowhead": "none",
                "tooltip": style.tooltip(tip + " (detached)")}
    return {
        "label": style.html_label(style.number(norm, digits)), "color": style.colour(norm, JACOBIAN_DECADES),
        "fontcolor": style.colour(norm, JACOBIAN_DECADES), "penwidth": style.pen_width(norm, JACOBIAN_DECADES),
        "tooltip": style.tooltip(tip), "labeltooltip": style.tooltip(tip),
    }


def _legend(title: str | None, name: str, any_cut: bool, any_clip: bool) -> str:
    rows = [
        style.legend_row(f"edge: ‖∂{name}<SUB>t</SUB>/∂{name}<SUB>t−1</SUB>‖, spectral norm<BR/>"
                         "of one step back in time", JACOBIAN_DECADES),
        style.legend_row(f"node: ‖∂L/∂{name}<SUB>t</SUB>‖, the gradient<BR/>that arrived at step t",
                         GRADIENT_DECADES, fill_cells=True),
    ]
    notes = ["time runs left to right; the gradient flows right to left, multiplied at each edge by at most its label"]
    keys = []
    if any_cut:
        keys.append("dotted, cut: detached state (truncated BPTT), no gradient crosses")
    if any_clip:
        keys.append("✂ red border: a clipping hook fired, gradient norm before → after")
    if keys:
        notes.append(" · ".join(keys))
    return style.legend(title, rows, notes)


def _summary(numbers: StepNumbers, name: str) -> str:
    T = len(numbers.jacobian_norms)
    known = [(t, g) for t, g in enumerate(numbers.gradient_norms) if g is not None]
    if len(known) < 2:
        return f"{T} steps"
    (first_t, first), (last_t, last) = known[0], known[-1]
    return (f"{T} steps · ‖∂L/∂{name}{_subscript(first_t)}‖ = {style.number(first, 2)}, "
            f"‖∂L/∂{name}{_subscript(last_t)}‖ = {style.number(last, 2)} · {numbers.verdict}")


def _subscript(t: int) -> str:
    return str(t).translate(str.maketrans("0123456789-", "₀₁₂₃₄₅₆₇₈₉₋"))


def draw_steps(loss, states: Sequence, *, name: str = "h", per_row: int = 25, digits: int = 2,
               title: str | None = None) -> Digraph:
    """The step view of states [h_0, ..., h_T] after ``loss.backward()`` (module doc).

    ``name`` is the letter on the nodes (``"c"`` for an LSTM's cell state); ``per_row`` steps go in
    one row before wrapping; ``digits`` significant digits on the edges.
    """
    numbers = step_numbers(states)
    dot = style.base_digraph("step_view")
    dot.attr("graph", nodesep="0.25", ranksep="0.35")
    _draw_block(dot, "s", numbers, name, per_row, digits)
    loss_text = ""
    if loss is not None and getattr(loss, "size", 0) == 1:
        loss_text = f"L = {style.number(loss.item(), 4)} · "
    heading = title if title is not None else "step view"
    dot.attr("graph", label=_legend(f"{heading} — {loss_text}{_summary(numbers, name)}", name,
                                    any(numbers.cut), any(c is not None for c in numbers.clips)))
    return dot


def compare_steps(runs: Mapping, *, per_row: int = 40, digits: int = 2, title: str | None = None) -> Digraph:
    """Several step views on one colour scale, one band each, top to bottom:
    ``runs = {"tanh RNN": (loss, states), "LSTM (cell state)": (loss, states, "c")}`` (the optional
    third entry is the node letter)."""
    dot = style.base_digraph("step_compare")
    dot.attr("graph", nodesep="0.25", ranksep="0.35")
    any_cut = any_clip = False
    # Written last first, so that they appear top to bottom in the order given (see _draw_block).
    for index, (label, run) in reversed(list(enumerate(runs.items()))):
        loss, states, *rest = run
        name = rest[0] if rest else "h"
        numbers = step_numbers(states)
        any_cut |= any(numbers.cut)
        any_clip |= any(c is not None for c in numbers.clips)
        with dot.subgraph(name=f"cluster_run{index}") as band:
            caption = f"<B>{style.text(label, 100)}</B> · {style.text(_summary(numbers, name), 120)}"
            band.attr(label=style.html_label(caption),
                      labeljust="l", labelloc="t", style="rounded,filled", fillcolor="#f7f8fa", color="#d3d9e2",
                      fontsize="12")
            _draw_block(band, f"r{index}", numbers, name, per_row, digits)
    dot.attr("graph", label=_legend(title, "h", any_cut, any_clip))
    return dot

"""Op view: every value and every op of a recorded graph, every edge labelled by its local gradient.

The picture reads left to right like the forward pass; the backward pass runs right to left and
multiplies a gradient by each edge's label on its way:

- a scalar edge shows the exact d(child)/d(parent) (``Edge.derivative``), the number a textbook
  writes on the arrow;
- a tensor edge shows ``‖J‖``, the spectral norm of its local Jacobian (``Edge.jacobian_norm``): the
  most it can stretch a gradient; after a backward pass also the observed ``gain``,
  ||gradient passed to the parent|| / ||gradient of the child|| (``Edge.observed_gain``).

Colour and pen width follow log10 of the factor an edge applies (see style.py): a scalar edge's
derivative, a tensor edge's gain; a chain of thin blue edges is a vanishing gradient, thick red ones an
exploding one. ‖J‖ is only a bound, so a tensor edge with no gain (before backward) is drawn thin and
black, off the scale; one whose child got a gradient of exactly 0 thin and light grey ("gain –"); a
nan dotted. The legend names each of these where the picture holds one. Nodes made inside ``scope("t=<k>")`` sit in one
cluster per time step; shared parameters are drawn once, outside, with an edge into every step.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from graphviz import Digraph

from tinygrad_rnn import graph, recurrence
from tinygrad_rnn.graph import Graph, walk
from visualize import style
from visualize.labels import (
    clip_note,
    display_name,
    formula,
    grad_line,
    is_truncated,
    measure,
    op_legend,
    op_symbol,
    shape_text,
    state_names,
    summary,
)
from visualize.layout import SHARED, Placement, Rows, place, step_depth, wrap

__all__ = ["draw_graph", "GraphTooLarge", "OpPicture", "checked_walk", "MAX_NODES"]

MAX_NODES = 2000
# Ops in a chain that fit in a row about 2,000 px wide: a column takes about 250 px with its own op
# node, 200 px with the op in the box (measured on LSTM and scalar RNN pictures).
ROW_COLUMNS, ROW_COLUMNS_COMPACT = 8, 10

FAINT = "#d4d4d4"
GRAD_INK = "#5a3d8a"  # gradients in violet, apart from data in ink
GATE_INK = "#2f6f5e"  # the scope a cell named inside a step (its gates)
# Edges off the colour scale (no factor to show), each with its own colour and a thin pen: a tensor edge
# with no gain measured (before backward, or a constant's edge), drawn black; one whose child's gradient
# is exactly 0, drawn in the light grey the step view gives an edge no gradient crossed.
UNMEASURED, NO_GRADIENT = "unmeasured", "no gradient"
OFF_SCALE = {UNMEASURED: "#000000", NO_GRADIENT: "#b0b0b0"}
OFF_SCALE_WIDTH = "1.00"


class GraphTooLarge(ValueError):
    """The op view was asked to draw more nodes than anyone can read."""


def checked_walk(root, max_nodes: int, caller: str) -> Graph:
    """``walk(root)``, or GraphTooLarge pointing to the step view when the graph is too big."""
    count = graph.count_nodes(root, max_nodes)
    if count > max_nodes:
        raise GraphTooLarge(
            f"{caller}: the graph has more than {max_nodes:,} nodes (max_nodes={max_nodes:,}); an op "
            "picture that size is unreadable and slow to lay out. For a recurrent net draw one node per "
            "time step with visualize.draw_steps(loss, states), unroll fewer time steps, or raise max_nodes."
        )
    return walk(root)


class OpPicture:
    """Builds the op view's Digraph from a walked graph. The path view reuses it with a focus
    (nodes and edges to keep in colour; the rest fade) and extra lines on some nodes."""

    def __init__(self, graph: Graph, digits: int = 4, title: str | None = None, constants: bool = True,
                 focus_nodes=None, focus_edges=None, annotations=None, node_fills=None, extra_notes=(),
                 compact: bool | None = None, per_row: int | None = None):
        self.graph, self.digits, self.title, self.constants = graph, digits, title, constants
        self.focus_nodes, self.focus_edges = focus_nodes, focus_edges
        self.annotations = annotations or {}
        self.node_fills = node_fills or {}
        self.extra_notes = list(extra_notes)
        self.ids = {node: f"v{i}" for i, node in enumerate(graph.nodes)}
        self.placement: Placement = place(graph.nodes, graph.edges)
        parents = {edge.parent for edge in graph.edges}
        self.root_set = {node for node in graph.nodes if node not in parents}
        self.kinds: set = set()  # what the legend must explain
        self.carried = self._carried_state()
        self.state_names = state_names(graph.edges, self.placement.step)
        self.compact, self.per_row = self._fit(compact, per_row)

    def _fit(self, compact: bool | None, per_row: int | None) -> tuple[bool, int]:
        """(compact, steps per row). A row should stay about 2,000 pixels wide: a chain of k ops in a
        step takes about k columns of value box and edge label. Left to choose (None), the picture
        keeps one node per op when every step fits in one row, and otherwise writes each op at the
        head of its output's box (compact, about 20% narrower) and wraps the unroll into rows."""
        depth = max(step_depth(self.graph.nodes, self.placement), 1)
        if compact is None:
            compact = per_row is None and len(self.placement.steps()) > ROW_COLUMNS // depth
        if per_row is None:
            per_row = max(1, (ROW_COLUMNS_COMPACT if compact else ROW_COLUMNS) // depth)
        return bool(compact), per_row

    def _carried_state(self) -> set:
        """Nodes that depend on an earlier time step inside their own step: the recurrent path
        (h_{t-1} -> ... -> h_t). Drawn in one Graphviz group so the steps line up in a row."""
        carried = set()
        step = self.placement.step
        for edge in self.graph.edges:  # parents come before children in the walk's edge order
            here, there = step.get(edge.child), step.get(edge.parent)
            if here is None or edge.parent in self.placement.shared:
                continue
            if (there is not None and there != here and edge.parent.op is not None) or (
                edge.parent in carried and there == here
            ):
                carried.add(edge.child)
                if there != here:
                    carried.add(edge.parent)
        return carried

    def name_of(self, node) -> str | None:
        """What a value's box is titled: its state name (h_t, c_t), or ``display_name``."""
        return self.state_names.get(node) or display_name(node)

    # ---- what each piece says -------------------------------------------------------------------

    def faded(self, node) -> bool:
        return self.focus_nodes is not None and node not in self.focus_nodes

    def hidden(self, node) -> bool:
        return not self.constants and node.op is None and not node.requires_grad

    def edge_numbers(self, edge):
        """(label markup, number that sets the colour, full-precision tooltip) for one edge; the
        number is None where no number may (``edge_colour`` says how such an edge is drawn).

        Only a factor sets the colour: a scalar edge's exact derivative, or a tensor edge's observed
        gain. ‖J‖ is a bound, the most the edge could stretch a gradient, not what it did, so a tensor
        edge without a gain is never coloured as if it were a factor."""
        label, value, tip, _off = self._edge(edge)
        return label, value, tip

    def edge_colour(self, edge) -> tuple[str, str, str | None]:
        """(colour, pen width, line style or None) of one edge: on the colour scale by its factor, or
        off it (``OFF_SCALE``) with no gain measured, no gradient, or a nan."""
        _label, value, _tip, off = self._edge(edge)
        return self._look(value, off)

    def _look(self, value, off) -> tuple[str, str, str | None]:
        if off is not None:
            self.kinds.add(off)
            return OFF_SCALE[off], OFF_SCALE_WIDTH, None
        if value is None or value != value:  # nan: an undefined number, not a factor of 1
            self.kinds.add("nan")
            return OFF_SCALE[UNMEASURED], OFF_SCALE_WIDTH, "dotted"
        return style.colour(value), style.pen_width(value), None

    def _edge(self, edge):
        """(label markup, factor or None, tooltip, off-scale kind or None)."""
        child, parent = edge.child, edge.parent
        where = f"∂ {child.op.name} / ∂ input {edge.position}"
        if child.size == 1 and parent.size == 1:
            self.kinds.add("scalar")
            d = measure(edge.derivative)
            return style.number(d, self.digits), d, f"{where} = {d!r}", None
        self.kinds.add("tensor")
        norm = measure(edge.jacobian_norm)
        gain = measure(edge.observed_gain) if child.grad is not None else None
        label = f"‖J‖ {style.number(norm, 3)}"
        tip = f"{where}: spectral norm of the local Jacobian = {norm!r}"
        if gain is not None:
            self.kinds.add("gain")
            label += f'<BR/><FONT POINT-SIZE="7">gain {style.number(gain, 3)}</FONT>'
            return label, gain, tip + f"; observed gain = {gain!r}", None
        if child.grad is not None:  # backward ran, but the child's gradient is exactly zero: no gain
            label += '<BR/><FONT POINT-SIZE="7">gain – (no gradient)</FONT>'
            return label, None, tip + "; no gradient reached the child, so none flowed here", NO_GRADIENT
        return (label, None, tip + "; no backward pass has given the child a gradient, so no gain is known "
                "(‖J‖ is only a bound)", UNMEASURED)

    def value_label(self, node) -> str:
        lines = []
        part = recurrence.inner_scope(node)
        if part:  # made in a named scope inside its step: a cell's gate ("forget gate")
            self.kinds.add("gates")
            lines.append(f'<FONT POINT-SIZE="8" COLOR="{GATE_INK}">{style.text(part, 30)}</FONT>')
        name = self.name_of(node)
        if name:
            lines.append(f"<B>{style.text(name, 40)}</B>")
        elif node.op is None and node.requires_grad:
            lines.append(f'<FONT COLOR="{style.MUTED}">leaf</FONT>')
        if node.shape:
            lines.append(f'<FONT POINT-SIZE="8" COLOR="{style.MUTED}">{shape_text(node.shape)}</FONT>')
        data = summary(node.data, self.digits)
        lines.append(data if node.size != 1 or not lines else f"data {data}")
        grad_ink = "#c0c0c0" if self.faded(node) else GRAD_INK
        if node.grad is not None:
            lines.append(f'<FONT COLOR="{grad_ink}">{grad_line(node.grad, self.digits)}</FONT>')
        if node in self.placement.shared:
            self.kinds.add("shared")
            lines.append(f'<FONT POINT-SIZE="8">shared by {len(self.placement.shared[node])} steps</FONT>')
        clip = clip_note(node)
        if clip is not None:
            self.kinds.add("clip")
            lines.append(
                f'<FONT COLOR="{style.colour(1e9)}"><B>✂ clipped</B> {style.number(clip.norm_before, 3)}'
                f" → {style.number(clip.norm_after, 3)}</FONT>"
            )
        if is_truncated(node):
            self.kinds.add("truncated")
            lines.append(f'<FONT COLOR="{style.MUTED}">detached (truncated)</FONT>')
        lines.extend(self.annotations.get(node, ()))
        if self.compact and node.op is not None:  # the op heads its output's box
            symbol = self.op_label(node)[1:-1]
            return style.html_label(
                '<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">'
                f'<TR><TD BGCOLOR="#e3e8f0"><FONT COLOR="#3d4a5c">{symbol}</FONT></TD></TR>'
                f'<TR><TD>{"<BR/>".join(lines)}</TD></TR></TABLE>'
            )
        return style.html_label("<BR/>".join(lines))

    def value_tooltip(self, node):
        parts = [repr(node)]
        if is_truncated(node):
            parts.append("detached here: the graph was cut (truncated BPTT)")
        clip = recurrence.clip_record(node)
        if clip is not None:
            parts.append(f"clip hook: norm before {clip.norm_before!r}, after {clip.norm_after!r}"
                         f" ({'fired' if clip.fired else 'did not fire'})")
        if node.size <= 16:
            parts.append(f"data: {np.asarray(node.data).tolist()!r}")
        return style.tooltip("\n".join(parts))

    def op_label(self, node) -> str:
        return style.html_label(style.text(op_symbol(node.op), 24))

    # ---- drawing --------------------------------------------------------------------------------

    def value_attrs(self, node) -> dict:
        attrs = {"label": self.value_label(node), "tooltip": self.value_tooltip(node)}
        if node.op is None and not node.requires_grad:
            attrs.update(shape="box", style="rounded,dashed" if is_truncated(node) else "rounded",
                         color="#c8c8c8", fontsize="9", margin="0.06,0.03", height="0.3")
        elif node.op is None:
            self.kinds.add("parameter")
            attrs.update(shape="box", style="rounded,filled", fillcolor="#fff1c1", color="#c9a227")
        else:
            attrs.update(shape="box", style="rounded,filled", fillcolor="white")
        attrs.setdefault("margin", "0.05,0.03")
        attrs.setdefault("height", "0.3")
        if node in self.placement.shared:
            attrs["peripheries"] = "2"
        if node in self.carried:
            attrs["group"] = "carried"
        if node in self.root_set:
            attrs["penwidth"] = "2"
        if clip_note(node) is not None:
            attrs.update(color=style.colour(1e9), penwidth="2.2")
        if node in self.node_fills:
            attrs.update(style="rounded,filled", fillcolor=self.node_fills[node])
        if self.faded(node):
            attrs.update(color=FAINT, fontcolor="#b0b0b0", fillcolor="white", style="rounded,filled")
        return attrs

    def op_attrs(self, node) -> dict:
        attrs = {
            "label": self.op_label(node), "shape": "ellipse", "style": "filled", "fillcolor": "#eef1f6",
            "color": "#aab4c3", "fontsize": "10", "margin": "0.04,0.01", "height": "0.26", "width": "0.3",
            "tooltip": style.tooltip(formula(node.op)),
        }
        if self.faded(node):
            attrs.update(color=FAINT, fontcolor="#b0b0b0", fillcolor="#f7f7f7")
        return attrs

    def edge_attrs(self, edge) -> dict:
        label, value, tip, off = self._edge(edge)
        colour, width, line = self._look(value, off)
        attrs = {"label": style.html_label(label), "tooltip": style.tooltip(tip), "labeltooltip": style.tooltip(tip),
                 "color": colour, "fontcolor": colour, "penwidth": width}
        if line is not None:
            attrs["style"] = line
        elif not edge.parent.requires_grad:
            attrs["style"] = "dashed"
        if edge.parent in self.carried and edge.child in self.carried:
            attrs["weight"] = "8"  # the recurrent path h_{t-1} -> h_t: keep it one straight line
        if self.focus_edges is not None and edge not in self.focus_edges:
            attrs.update(color=FAINT, fontcolor="#c0c0c0", penwidth="0.8")
        elif self.focus_edges is not None:
            attrs["penwidth"] = f"{float(attrs['penwidth']) + 1.2:.2f}"
        return attrs

    def digraph(self, name: str = "op_view") -> Digraph:
        dot = style.base_digraph(name)
        dot.attr("edge", fontsize="8")
        nodes = [node for node in self.graph.nodes if not self.hidden(node)]
        edges = [edge for edge in self.graph.edges if not self.hidden(edge.parent)]
        rows = wrap(nodes, edges, self.placement, self.per_row or len(self.placement.steps()) or 1)
        steps = self.placement.steps()
        step_index = {key: i for i, key in enumerate(steps, 1)}
        clusters: dict = {}  # (row, step or scope name or None) -> members
        for node in nodes:
            key = self.placement.step.get(node) or self.placement.other.get(node)
            clusters.setdefault((rows.row[node], key), []).append(node)
        # Graphviz stacks separate left-to-right rows bottom-up in the order written: last row first.
        for r in reversed(range(len(rows.steps))):
            with dot.subgraph(name=f"cluster_row{r}") as band:
                band.attr(label="", style="invis", margin="2")
                self._draw_nodes(band, clusters.get((r, None), []))
                for ghost in rows.ghosts.get(r, []):
                    self._draw_ghost(band, ghost, r)
                for key in rows.steps[r]:
                    self._draw_step(dot, band, key, clusters.get((r, key), []), step_index[key])
                for (row, key), members in sorted(((k, m) for k, m in clusters.items() if isinstance(k[1], str)),
                                                  key=lambda item: item[0][1]):
                    if row == r:
                        self._draw_cluster(band, f"cluster_scope{r}_{len(key)}_{abs(hash(key))}", key, key, members)
        shared = clusters.get((SHARED, None), [])
        if shared:
            with dot.subgraph(name="cluster_shared") as cluster:
                cluster.attr(label=style.html_label("<B>shared parameters</B>"), labelloc="t",
                             labeljust="l", style="rounded", color="#e0cf8f", fontsize="11")
                self._draw_nodes(cluster, shared)
        for edge in edges:
            dot.edge(self._tail(edge, rows, step_index), self._head(edge), **self.edge_attrs(edge))
        self._order_steps(dot, clusters, rows, step_index)
        dot.attr("graph", label=op_legend(self.title, self.kinds, steps, self.extra_notes))
        return dot

    def _tail(self, edge, rows: Rows, step_index: dict) -> str:
        """Where an edge starts: the parent, its copy in this step (a shared parameter), or its
        copy in this row (a value from an earlier row)."""
        tail = self.ids[edge.parent]
        step = self.placement.step.get(edge.child)
        if edge.parent in self.placement.shared and step is not None:
            return f"{tail}_t{step_index[step]}"
        if rows.row[edge.parent] != rows.row[edge.child]:
            return f"{tail}_r{rows.row[edge.child]}"
        return tail

    def _head(self, edge) -> str:
        return self.ids[edge.child] if self.compact else "o" + self.ids[edge.child][1:]

    def _draw_step(self, dot: Digraph, band: Digraph, key, members: list, index: int) -> None:
        """One time step's cluster, with the copies of the shared parameters it uses."""
        label = f"{key.prefix} · t = {key.t}" if key.prefix else f"t = {key.t}"
        with band.subgraph(name=f"cluster_{index}") as cluster:
            cluster.attr(label=style.html_label(f"<B>{style.text(label, 40)}</B>"), labelloc="t", labeljust="l",
                         style="rounded,filled", fillcolor="#f5f7fa", color="#d3d9e2", fontsize="11",
                         tooltip=style.tooltip(key.scope))
            self._draw_nodes(cluster, members)
            self._draw_proxies(dot, cluster, key, index)

    def _draw_cluster(self, target: Digraph, cluster_id: str, title: str, tip: str, members: list) -> None:
        with target.subgraph(name=cluster_id) as cluster:
            cluster.attr(label=style.html_label(f"<B>{style.text(title, 40)}</B>"), labelloc="t", labeljust="l",
                         style="rounded,filled", fillcolor="#f5f7fa", color="#d3d9e2", fontsize="11",
                         tooltip=style.tooltip(tip))
            self._draw_nodes(cluster, members)

    def _draw_ghost(self, band: Digraph, node, row: int) -> None:
        """A faint copy of a value drawn in an earlier row (or the shared box), where this row uses it."""
        name = self.name_of(node) or (op_symbol(node.op) if node.op is not None else "value")
        step = self.placement.step.get(node)
        where = f"t = {step.t}" if step is not None else "above"
        self.kinds.add("ghost")
        band.node(f"{self.ids[node]}_r{row}",
                  label=style.html_label(f'<FONT COLOR="{style.MUTED}"><B>{style.text(name, 30)}</B> ↩<BR/>'
                                         f'<FONT POINT-SIZE="8">from {style.text(where, 30)}</FONT></FONT>'),
                  shape="box", style="rounded,dashed", color="#c8c8c8", fontsize="10", margin="0.06,0.03",
                  tooltip=style.tooltip(f"{name}: drawn in full at {where}; repeated here so the rows stay apart"))

    def _order_steps(self, dot: Digraph, clusters: dict, rows: Rows, step_index: dict) -> None:
        """Invisible edges from the end of each step to the inputs of the next in its row, so step t+1
        starts to the right of where step t ends. Without them x_{t+1} shares a column with h_t, the
        two clusters cannot sit side by side, and Graphviz stacks them into a staircase."""
        for r, row_steps in enumerate(rows.steps):
            for before, after in pairwise(row_steps):
                members = clusters.get((r, before), [])
                exits = [n for n in members if any(self.placement.step.get(e.child) not in (before, None)
                                                   for e in self.graph.edges_from(n))] or members[-1:]
                entries = [self.ids[n] for n in clusters.get((r, after), []) if n.op is None]
                entries += [f"{self.ids[n]}_t{step_index[after]}" for n, used in self.placement.shared.items()
                            if after in used]
                for tail in exits:
                    for head in entries:
                        dot.edge(self.ids[tail], head, style="invis", weight="0")

    def _draw_proxies(self, dot: Digraph, cluster: Digraph, step, index: int) -> None:
        """A shared parameter appears in every step that uses it as a small copy of the one node
        drawn outside (same name, same colour), with that step's share of its gradient."""
        for node, used_by in self.placement.shared.items():
            if step not in used_by:
                continue
            share = self.step_share(node, step)
            lines = [f"<B>{style.text(display_name(node) or 'shared', 40)}</B>"]
            if share is not None:
                ink = "#c0c0c0" if self.faded(node) else GRAD_INK
                lines.append(f'<FONT POINT-SIZE="8" COLOR="{ink}">{grad_line(share, 3)}</FONT>')
            proxy = f"{self.ids[node]}_t{index}"
            faded = self.faded(node)
            cluster.node(
                proxy, label=style.html_label("<BR/>".join(lines)), shape="box", style="rounded,filled,dashed",
                fillcolor="white" if faded else "#fff1c1", color=FAINT if faded else "#c9a227",
                fontcolor="#b0b0b0" if faded else style.INK, fontsize="9", margin="0.05,0.02", height="0.25",
                tooltip=style.tooltip(f"the shared parameter {node.name or ''} as used in time step {step.t}; "
                                      "its gradient here is this time step's share of the total"),
            )

    def step_share(self, node, step):
        """The part of a shared parameter's gradient that flowed in from one time step."""
        total = None
        for edge in self.graph.edges_from(node):
            if self.placement.step.get(edge.child) != step:
                continue
            part = edge.contribution()
            if part is None:
                return None
            total = part if total is None else total + part
        return total

    def _draw_nodes(self, target: Digraph, members: list) -> None:
        for node in members:
            vid = self.ids[node]
            if node.op is not None and not self.compact:
                oid = "o" + vid[1:]
                target.node(oid, **self.op_attrs(node), **({"group": "carried"} if node in self.carried else {}))
                colour = FAINT if self.faded(node) else "#9aa5b5"
                weight = "8" if node in self.carried else "4"
                target.edge(oid, vid, color=colour, arrowsize="0.5", penwidth="1", weight=weight)
            target.node(vid, **self.value_attrs(node))

def draw_graph(root, *, max_nodes: int = MAX_NODES, digits: int = 3, title: str | None = None,
               constants: bool = True, compact: bool | None = None, per_row: int | None = None) -> Digraph:
    """The op view of everything ``root`` (a Value or a list of them) was computed from.

    Value nodes show name, shape, a short data summary and, after backward, the gradient; op nodes
    show the primitive (hover for its formula); each edge carries its local gradient (module doc).
    ``digits`` sets the significant digits of numbers; ``constants=False`` leaves out constants;
    ``compact=True`` writes each op at the head of its output's box instead of in a node of its own
    (narrower: for slides and long unrolls). ``per_row`` time steps go in one row before the unroll
    wraps into the next. Left as None, both are chosen so a row stays about 2,000 pixels wide: one
    node per op when the whole unroll fits in one row, else compact rows of as many steps as fit.
    Raises GraphTooLarge past ``max_nodes`` nodes (use draw_steps for long sequences).
    """
    graph = checked_walk(root, max_nodes, "draw_graph")
    return OpPicture(graph, digits=digits, title=title, constants=constants, compact=compact,
                     per_row=per_row).digraph()

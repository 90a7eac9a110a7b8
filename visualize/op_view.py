"""Op view: every value and every op of a recorded graph, every edge labelled by its local gradient.

The picture reads left to right like the forward pass; the backward pass runs right to left and
multiplies a gradient by each edge's label on its way:

- a scalar edge shows the exact d(child)/d(parent) (``Edge.derivative``), the number a textbook
  writes on the arrow;
- a tensor edge shows ``‖J‖``, the spectral norm of its local Jacobian (``Edge.jacobian_norm``): the
  most it can stretch a gradient; after a backward pass also the observed ``gain``,
  ||gradient passed to the parent|| / ||gradient of the child|| (``Edge.observed_gain``).

Colour and pen width follow log10 of that number (see style.py): a chain of thin blue edges is a
vanishing gradient, thick red ones an exploding one. Nodes made inside ``scope("t=<k>")`` sit in one
cluster per time step; shared parameters are drawn once, outside, with an edge into every step.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from graphviz import Digraph

from tinygrad_rnn.graph import Graph, walk
from tinygrad_rnn.value import Value
from visualize import style
from visualize.labels import (
    SYMBOLS,
    clip_note,
    display_name,
    formula,
    grad_line,
    is_truncated,
    measure,
    shape_text,
    summary,
)
from visualize.layout import Placement, place

__all__ = ["draw_graph", "GraphTooLarge", "OpPicture", "checked_walk", "count_nodes", "MAX_NODES"]

MAX_NODES = 2000

FAINT = "#d4d4d4"
GRAD_INK = "#5a3d8a"  # gradients in violet, apart from data in ink


class GraphTooLarge(ValueError):
    """The op view was asked to draw more nodes than anyone can read."""


def count_nodes(roots, limit: int) -> int:
    """Nodes reachable from ``roots`` (through ``parents``), counting no further than ``limit + 1``,
    so refusing a huge graph costs as little as drawing a small one."""
    stack = [roots] if isinstance(roots, Value) else list(roots)
    seen = set()
    while stack and len(seen) <= limit:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(node.parents)
    return len(seen)


def checked_walk(root, max_nodes: int, caller: str) -> Graph:
    """``walk(root)``, or GraphTooLarge pointing to the step view when the graph is too big."""
    count = count_nodes(root, max_nodes)
    if count > max_nodes:
        raise GraphTooLarge(
            f"{caller}: the graph has more than {max_nodes:,} nodes (max_nodes={max_nodes:,}); an op "
            "picture that size is unreadable and slow to lay out. For a recurrent net draw one node per "
            "time step with visualize.draw_steps(loss, states), unroll fewer steps, or raise max_nodes."
        )
    return walk(root)


class OpPicture:
    """Builds the op view's Digraph from a walked graph. The path view reuses it with a focus
    (nodes and edges to keep in colour; the rest fade) and extra lines on some nodes."""

    def __init__(self, graph: Graph, digits: int = 4, title: str | None = None, constants: bool = True,
                 focus_nodes=None, focus_edges=None, annotations=None, node_fills=None, extra_notes=(),
                 compact: bool = False):
        self.graph, self.digits, self.title, self.constants = graph, digits, title, constants
        self.compact = compact
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

    # ---- what each piece says -------------------------------------------------------------------

    def faded(self, node) -> bool:
        return self.focus_nodes is not None and node not in self.focus_nodes

    def hidden(self, node) -> bool:
        return not self.constants and node.op is None and not node.requires_grad

    def edge_numbers(self, edge):
        """(label markup, number that sets the colour, full-precision tooltip) for one edge."""
        child, parent = edge.child, edge.parent
        where = f"∂ {child.op.name} / ∂ input {edge.position}"
        if child.size == 1 and parent.size == 1:
            self.kinds.add("scalar")
            d = measure(edge.derivative)
            return style.number(d, self.digits), d, f"{where} = {d!r}"
        self.kinds.add("tensor")
        norm = measure(edge.jacobian_norm)
        gain = measure(edge.observed_gain) if child.grad is not None else None
        label = f"‖J‖ {style.number(norm, 3)}"
        tip = f"{where}: spectral norm of the local Jacobian = {norm!r}"
        if gain is not None:
            label += f'<BR/><FONT POINT-SIZE="8">gain {style.number(gain, 3)}</FONT>'
            tip += f"; observed gain = {gain!r}"
        return label, (gain if gain is not None else norm), tip

    def value_label(self, node) -> str:
        lines = []
        name = display_name(node)
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
                f'<FONT COLOR="{style.colour(1e9)}"><B>✂ clipped</B> {style.number(clip.get("norm_before"), 3)}'
                f" → {style.number(clip.get('norm_after'), 3)}</FONT>"
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
        if node.notes:
            parts.append(f"notes: {node.notes!r}")
        if node.size <= 16:
            parts.append(f"data: {np.asarray(node.data).tolist()!r}")
        return style.tooltip("\n".join(parts))

    def op_label(self, node) -> str:
        op = node.op
        symbol = SYMBOLS.get(op.name, op.name)
        if op.name == "pow":
            symbol = "x^y" if op.exponent is None else f"x^{style.number(op.exponent, 3)}"
        elif op.name in ("sum", "max") and getattr(op, "axis", None) is not None:
            symbol = f"{'Σ' if op.name == 'sum' else 'max'} axis {op.axis}"
        elif op.name == "sum":
            symbol = "Σ"
        elif op.name == "getitem":
            symbol = str(op.params().get("index", "[·]")).replace("Ellipsis", "…")
        elif op.name in ("reshape", "broadcast_to"):
            symbol = f"{symbol} {shape_text(op.shape)}"
        return style.html_label(style.text(symbol, 24))

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
        attrs.setdefault("margin", "0.08,0.04")
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
        label, value, tip = self.edge_numbers(edge)
        attrs = {
            "label": style.html_label(label), "tooltip": style.tooltip(tip), "labeltooltip": style.tooltip(tip),
            "color": style.colour(value), "fontcolor": style.colour(value), "penwidth": style.pen_width(value),
        }
        if not edge.parent.requires_grad:
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
        clusters: dict = {}
        for node in self.graph.nodes:
            if self.hidden(node):
                continue
            key = self.placement.step.get(node) or self.placement.other.get(node)
            clusters.setdefault(key, []).append(node)
        steps = self.placement.steps()
        others = sorted({k for k in clusters if isinstance(k, str)})
        step_index = {key: i for i, key in enumerate(steps, 1)}
        for index, key in enumerate([None, *steps, *others]):
            members = clusters.get(key, [])
            if key is None:
                in_box = self.placement.shared.keys() | self.placement.shared_inputs
                shared = [node for node in members if node in in_box]
                self._draw_nodes(dot, [node for node in members if node not in in_box])
                if shared:
                    with dot.subgraph(name="cluster_shared") as cluster:
                        cluster.attr(label=style.html_label("<B>shared parameters</B>"), labelloc="t",
                                     labeljust="l", style="rounded", color="#e0cf8f", fontsize="11")
                        self._draw_nodes(cluster, shared)
                continue
            with dot.subgraph(name=f"cluster_{index}") as cluster:
                label = f"t = {key.t}" if not isinstance(key, str) else key
                if not isinstance(key, str) and key.prefix:
                    label = f"{key.prefix} · {label}"
                cluster.attr(
                    label=style.html_label(f"<B>{style.text(label, 40)}</B>"), labelloc="t", labeljust="l",
                    style="rounded,filled", fillcolor="#f5f7fa", color="#d3d9e2", fontsize="11",
                    tooltip=style.tooltip(key.scope if not isinstance(key, str) else key),
                )
                self._draw_nodes(cluster, members)
                if not isinstance(key, str):
                    self._draw_proxies(dot, cluster, key, step_index[key])
        for edge in self.graph.edges:
            if self.hidden(edge.parent):
                continue
            tail = self.ids[edge.parent]
            step = self.placement.step.get(edge.child)
            if edge.parent in self.placement.shared and step is not None:
                tail = f"{tail}_t{step_index[step]}"
            head = self.ids[edge.child] if self.compact else "o" + self.ids[edge.child][1:]
            dot.edge(tail, head, **self.edge_attrs(edge))
        self._order_steps(dot, clusters, steps, step_index)
        dot.attr("graph", label=self.legend(len(steps)))
        return dot

    def _order_steps(self, dot: Digraph, clusters: dict, steps: list, step_index: dict) -> None:
        """Invisible edges from the end of each step to the inputs of the next, so step t+1 starts
        to the right of where step t ends. Without them x_{t+1} shares a column with h_t, the two
        clusters cannot sit side by side, and Graphviz stacks them into a staircase."""
        for before, after in pairwise(steps):
            if before.prefix != after.prefix:
                continue
            members = clusters.get(before, [])
            exits = [n for n in members if any(self.placement.step.get(e.child) not in (before, None)
                                               for e in self.graph.edges_from(n))] or members[-1:]
            entries = [self.ids[n] for n in clusters.get(after, []) if n.op is None]
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
                tooltip=style.tooltip(f"the shared parameter {node.name or ''} as used in step {step.t}; "
                                      "its gradient here is this step's share of the total"),
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

    def legend(self, step_count: int) -> str:
        rows, notes = [], []
        if self.kinds & {"scalar", "tensor"}:
            rows.append(style.legend_row("edge colour and width:<BR/>how much the edge scales a gradient", 2.0))
        if "scalar" in self.kinds:
            notes.append("edge label (numbers): ∂child/∂parent, the local derivative backward multiplies by")
        if "tensor" in self.kinds:
            notes.append(
                "edge label (tensors): ‖J‖ = spectral norm of the local Jacobian (the most it can stretch a "
                "gradient); gain = ‖gradient to parent‖ / ‖gradient of child‖ after backward"
            )
        keys = []
        if "parameter" in self.kinds:
            keys.append("yellow: parameter")
        if "shared" in self.kinds:
            keys.append("double border: one parameter shared by several steps, drawn once; dashed yellow: its use "
                        "in one step, with that step's share of the gradient")
        keys.append("dashed: constant (no gradient)")
        if "clip" in self.kinds:
            keys.append("✂ red border: gradient clipped there")
        if step_count:
            keys.append(f"{step_count} time steps, left to right")
        notes.append(" · ".join(keys))
        notes.extend(style.text(note, 200) for note in self.extra_notes)
        return style.legend(self.title, rows, notes)


def draw_graph(root, *, max_nodes: int = MAX_NODES, digits: int = 3, title: str | None = None,
               constants: bool = True, compact: bool = False) -> Digraph:
    """The op view of everything ``root`` (a Value or a list of them) was computed from.

    Value nodes show name, shape, a short data summary and, after backward, the gradient; op nodes
    show the primitive (hover for its formula); each edge carries its local gradient (module doc).
    ``digits`` sets the significant digits of numbers; ``constants=False`` leaves out constants;
    ``compact=True`` writes each op at the head of its output's box instead of in a node of its own
    (about half as wide: for slides and long unrolls).
    Raises GraphTooLarge past ``max_nodes`` nodes (use draw_steps for long sequences).
    """
    graph = checked_walk(root, max_nodes, "draw_graph")
    return OpPicture(graph, digits=digits, title=title, constants=constants, compact=compact).digraph()

"""Path view: the op view with the paths from one node (h_0, a weight) to the output highlighted, and
on every node along them how much of a change at the source reaches it.

On a scalar graph the number at node n is the exact derivative d n / d source: the product of the
edge labels along each path, summed over the paths (the chain rule, in forward mode). On a tensor
graph it is a true bound on ||d n / d source||: the sum over paths of the product of the edges'
Jacobian norms (the norm of a sum is at most the sum of the norms, the norm of a product at most the
product of the norms). On the output itself, a single number such as a loss, it is the exact
||d output / d source||, one vector-Jacobian product away. When even the bound is tiny, no gradient
can get through.

A number below ``vanishing`` (1e-3) is flagged ▼ vanishing, an exact one above ``exploding`` (1e3)
▲ exploding (a bound above it proves nothing). An exact zero is shown as 0 and flagged as nothing:
no path carries any gradient, which is not the same as a gradient that faded.
"""

from __future__ import annotations

import numpy as np
from graphviz import Digraph

from tinygrad_rnn.graph import Graph
from tinygrad_rnn.recurrence import step_graph
from visualize import style
from visualize.labels import measure
from visualize.op_view import MAX_NODES, OpPicture, checked_walk

__all__ = ["draw_path", "path_products"]


def _reachable(graph: Graph, source) -> tuple[set, list]:
    """Nodes reachable from ``source`` and the edges between them (the graph's edges are listed
    child by child in topological order, so one pass suffices)."""
    reached, edges = {source}, []
    for edge in graph.edges:
        if edge.parent in reached:
            reached.add(edge.child)
            edges.append(edge)
    return reached, edges


def path_products(graph: Graph, source) -> tuple[dict, bool, set, list]:
    """(number per node on a path, exact?, the nodes, the edges): d n/d source summed over paths
    when every edge on the paths is scalar (exact), else the sum over paths of the product of the
    edges' Jacobian norms, a bound on ||d n/d source||."""
    reached, edges = _reachable(graph, source)
    exact = all(e.child.size == 1 and e.parent.size == 1 for e in edges)
    products = {source: 1.0}
    for edge in edges:
        factor = measure(edge.derivative) if exact else measure(edge.jacobian_norm)
        products[edge.child] = products.get(edge.child, 0.0) + products[edge.parent] * factor
    return products, exact, reached, edges


def exact_norm(output, source) -> float:
    """||d output / d source|| for a single-number output: one vector-Jacobian product back along
    the recorded paths between them (hooks not run)."""
    (gradient,) = step_graph(output, source).vjp([np.ones_like(output.data) if output.shape else 1.0])
    return float(np.linalg.norm(np.ravel(gradient)))


def _annotation(value: float, exact: bool, on_output: bool, digits: int, source_name: str,
                vanishing: float, exploding: float) -> tuple[list, str | None]:
    """The lines on one node and its fill (None: no flag)."""
    if exact and not on_output:
        text = f"∂/∂{source_name} = {style.number(value, digits)}"
    elif exact:
        text = f"‖∂/∂{source_name}‖ = {style.number(value, digits)}"
    else:
        text = f"‖∂/∂{source_name}‖ ≤ {style.number(value, 3)}" if value != 0.0 else f"∂/∂{source_name} = 0"
    lines = [f"<B>{text}</B>"]
    if value == 0.0 or np.isnan(value):
        return lines, None
    if abs(value) < vanishing:
        lines.append(f'<FONT COLOR="{style.colour(1e-9)}"><B>▼ vanishing</B></FONT>')
        return lines, style.fill(value, decades=3.0)
    if abs(value) > exploding and exact:
        lines.append(f'<FONT COLOR="{style.colour(1e9)}"><B>▲ exploding</B></FONT>')
        return lines, style.fill(value, decades=3.0)
    return lines, None


def draw_path(root, source, *, digits: int = 4, vanishing: float = 1e-3, exploding: float = 1e3,
              only_path: bool = False, max_nodes: int = MAX_NODES, title: str | None = None) -> Digraph:
    """The op view of ``root`` with every path from ``source`` highlighted and annotated (module doc).

    ``only_path=True`` leaves out everything off the paths (for long sequences). Raises ValueError
    if ``root`` was not computed from ``source``, GraphTooLarge past ``max_nodes`` nodes.
    """
    graph = checked_walk(root, max_nodes, "draw_path")
    if not any(node is source for node in graph.nodes):
        raise ValueError(
            f"draw_path: source {source!r} is not among the {len(graph.nodes)} nodes the root was "
            "computed from, so no gradient path joins them"
        )
    products, exact, on_path, path_edges = path_products(graph, source)
    source_text = style.clean(source.name or "source", 20)
    source_name = style.text(source_text, 20)
    outputs = {node for node in products if node.size == 1 and not any(e.parent is node for e in path_edges)}
    annotations, fills = {}, {}
    for node, value in products.items():
        if node is source:
            annotations[node] = [f'<FONT COLOR="{style.COOL_TEXT}"><B>source</B></FONT>']
            continue
        on_output = node in outputs and not exact
        if on_output:
            value = measure(lambda node=node: exact_norm(node, source))
        annotations[node], fill = _annotation(value, exact or on_output, on_output, digits, source_name,
                                              vanishing, exploding)
        if fill is not None:
            fills[node] = fill
    if only_path:
        graph = Graph(tuple(n for n in graph.nodes if n in on_path), tuple(path_edges))
    if exact:
        what = ["on each node ∂node/∂source: the product of the edge labels along each path, summed over the paths"]
    else:
        what = ["on each node ‖∂node/∂source‖ ≤ the sum over the paths of the product of the edges' ‖J‖,",
                "a true bound (the norm of a sum is at most the sum of the norms); on the output, the exact value"]
    notes = [
        f"highlighted: every path from {source_text} to the output", *what,
        f"▼ vanishing: below {style.number(vanishing, 2)} · ▲ exploding: an exact value above "
        f"{style.number(exploding, 2)} · 0: no gradient reaches it at all",
    ]
    picture = OpPicture(graph, digits=digits, title=title, focus_nodes=on_path, focus_edges=set(path_edges),
                        annotations=annotations, node_fills=fills, extra_notes=notes)
    return picture.digraph("path_view")

"""Path view: the op view with the paths from one node (h_0, a weight) to the output highlighted, and
on every node along them the running product of local gradients.

On a scalar graph the number at node n is the exact derivative d n / d source: the product of the
edge labels along each path, summed over the paths (the chain rule, in forward mode). On a tensor
graph it is the largest product of Jacobian norms along any path, an upper bound on
||d n / d source||: when even the bound is tiny, no gradient can get through.

A product below ``vanishing`` (1e-3) is flagged ▼ vanishing, above ``exploding`` (1e3) ▲ exploding.
"""

from __future__ import annotations

from graphviz import Digraph

from tinygrad_rnn.graph import Graph
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
    when every edge on the paths is scalar (exact), else the largest product of Jacobian norms."""
    reached, edges = _reachable(graph, source)
    exact = all(e.child.size == 1 and e.parent.size == 1 for e in edges)
    products = {source: 1.0}
    for edge in edges:
        before = products[edge.parent]
        if exact:
            products[edge.child] = products.get(edge.child, 0.0) + before * measure(edge.derivative)
        else:
            products[edge.child] = max(products.get(edge.child, 0.0), before * measure(edge.jacobian_norm))
    return products, exact, reached, edges


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
    source_name = style.text(source.name or "source", 20)
    annotations, fills = {}, {}
    for node, value in products.items():
        if node is source:
            annotations[node] = [f'<FONT COLOR="{style.COOL_TEXT}"><B>source</B></FONT>']
            continue
        text = (f"∂/∂{source_name} = {style.number(value, digits)}" if exact
                else f"∏‖J‖ ≤ {style.number(value, 3)}")
        lines = [f"<B>{text}</B>"]
        if abs(value) < vanishing:
            lines.append(f'<FONT COLOR="{style.colour(1e-9)}"><B>▼ vanishing</B></FONT>')
            fills[node] = style.fill(value, decades=3.0)
        elif abs(value) > exploding:
            lines.append(f'<FONT COLOR="{style.colour(1e9)}"><B>▲ exploding</B></FONT>')
            fills[node] = style.fill(value, decades=3.0)
        annotations[node] = lines
    if only_path:
        graph = Graph(tuple(n for n in graph.nodes if n in on_path), tuple(path_edges))
    what = ("∂node/∂source: the product of edge labels along each path, summed over the paths"
            if exact else "∏‖J‖: the largest product of Jacobian norms along a path, a bound on ‖∂node/∂source‖")
    notes = [
        f"highlighted: every path from {source_name} to the output; on each node {what}",
        f"▼ vanishing: below {style.number(vanishing, 2)} · ▲ exploding: above {style.number(exploding, 2)}",
    ]
    picture = OpPicture(graph, digits=digits, title=title, focus_nodes=on_path, focus_edges=set(path_edges),
                        annotations=annotations, node_fills=fills, extra_notes=notes)
    return picture.digraph("path_view")

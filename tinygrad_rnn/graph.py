"""A read-only walk of a recorded graph: its nodes, its edges with their local gradients, its scopes.

This is the only door through which pictures and diagnostics see a graph. Every number an edge
reports comes from its op (``vjp``, ``jacobian_norm``): the same definitions the backward
pass uses, so a picture cannot disagree with the gradients it explains.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from tinygrad_rnn.autograd import topological_order
from tinygrad_rnn.ops import raw
from tinygrad_rnn.value import Value

__all__ = ["Edge", "Graph", "walk"]


@dataclass(frozen=True, eq=False)
class Edge:
    """``parent`` is argument ``position`` of the op that made ``child``."""

    parent: Value
    child: Value
    position: int

    def _inputs(self) -> list:
        return [p.data for p in self.child.parents]

    def derivative(self) -> float:
        """The exact d(child)/d(parent) of a scalar edge (both ends single numbers)."""
        if self.child.size != 1 or self.parent.size != 1:
            raise ValueError(
                f"derivative: edge {self.child.op.name} -> input {self.position} is not scalar; use jacobian_norm"
            )
        one = np.ones_like(self.child.data) if self.child.shape else 1.0
        return float(np.sum(self.child.op.vjp(self.position, one, self.child.data, self._inputs())))

    def jacobian_norm(self) -> float:
        """Spectral norm of d(child)/d(parent): the most this edge can stretch a gradient."""
        return self.child.op.jacobian_norm(self.position, self.child.data, self._inputs())

    def contribution(self):
        """The gradient this edge passed to its parent in the last backward pass (None before)."""
        if self.child.grad is None:
            return None
        return self.child.op.vjp(self.position, raw(self.child.grad), self.child.data, self._inputs())

    def observed_gain(self) -> float | None:
        """||contribution to parent|| / ||gradient of child||, after a backward pass; along a chain
        these gains multiply to the ratio of the gradient norms at its two ends."""
        contribution = self.contribution()
        if contribution is None:
            return None
        child_norm = float(np.linalg.norm(np.ravel(raw(self.child.grad))))
        if child_norm == 0.0:
            return 0.0
        return float(np.linalg.norm(np.ravel(contribution))) / child_norm


@dataclass(frozen=True)
class Graph:
    """Nodes in topological order (every parent before its children) and the edges between them."""

    nodes: tuple
    edges: tuple

    def scopes(self) -> dict:
        """Scope path -> its nodes, in order of first appearance ("" holds unscoped nodes)."""
        groups: dict = {}
        for node in self.nodes:
            groups.setdefault(node.scope, []).append(node)
        return groups

    def edges_into(self, node: Value) -> list:
        return [e for e in self.edges if e.child is node]

    def edges_from(self, node: Value) -> list:
        return [e for e in self.edges if e.parent is node]


def walk(roots: Value | Iterable[Value]) -> Graph:
    """Every node reachable from ``roots`` (constants included), parents before children, without
    recursion; one Edge per (child, argument position), so ``x * x`` gives two edges."""
    order = topological_order([roots] if isinstance(roots, Value) else list(roots), constants=True)
    edges = tuple(Edge(parent, node, k) for node in order for k, parent in enumerate(node.parents))
    return Graph(tuple(order), edges)

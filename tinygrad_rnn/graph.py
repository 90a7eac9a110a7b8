"""The one door through which pictures and diagnostics read a recorded graph.

- ``walk(roots)``: every node behind the roots, parents first, and its edges (``Edge``).
- ``Edge``: one input of one op; every number it reports (derivative, Jacobian norm, the gradient it
  passes back) comes from its op, the same definitions the backward pass uses, so a picture cannot
  disagree with the gradients it explains.

What a graph means as a recurrence (time steps, cuts, clip records, the map of one step) is
``tinygrad_rnn.recurrence``.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from tinygrad_rnn.autograd import edge_vjp, topological_order
from tinygrad_rnn.ops import raw
from tinygrad_rnn.value import Value

__all__ = ["Edge", "Graph", "walk", "count_nodes"]


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
        return float(np.sum(self.contribution(one)))

    def jacobian_norm(self) -> float:
        """Spectral norm of d(child)/d(parent): the most this edge can stretch a gradient."""
        return self.child.op.jacobian_norm(self.position, self.child.data, self._inputs())

    def contribution(self, grad=None):
        """The gradient this edge passes to its parent when the child's gradient is ``grad``:
        (d child/d parent)^T grad, a vector-Jacobian product. Without ``grad``, the child's ``.grad``
        from the last backward pass is used (None before any)."""
        if grad is None:
            if self.child.grad is None:
                return None
            grad = raw(self.child.grad)
        return edge_vjp(self.child, self.position, grad)

    def observed_gain(self) -> float | None:
        """||contribution to parent|| / ||gradient of child||, after a backward pass; along a chain
        these gains multiply to the ratio of the gradient norms at its two ends. None before a
        backward pass, and where the child's gradient is exactly zero (nothing flowed: 0/0)."""
        contribution = self.contribution()
        if contribution is None:
            return None
        child_norm = float(np.linalg.norm(np.ravel(raw(self.child.grad))))
        if child_norm == 0.0:
            return None
        return float(np.linalg.norm(np.ravel(contribution))) / child_norm


@dataclass(frozen=True, eq=False)
class Graph:
    """Nodes in topological order (every parent before its children) and the edges between them."""

    nodes: tuple
    edges: tuple

    def index(self, node: Value) -> int:
        """The position of ``node`` in ``nodes``, found by identity (``==`` on Values is elementwise)."""
        return self._positions[id(node)]

    @functools.cached_property
    def _positions(self) -> dict:
        return {id(node): k for k, node in enumerate(self.nodes)}

    @functools.cached_property
    def _by_parent(self) -> dict:
        return _group(self.edges, lambda edge: edge.parent)

    def edges_from(self, node: Value) -> list:
        return list(self._by_parent.get(id(node), ()))


def _group(edges, end) -> dict:
    """id(node) -> the edges whose ``end`` (parent or child) is that node, in order."""
    index: dict = {}
    for edge in edges:
        index.setdefault(id(end(edge)), []).append(edge)
    return index


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


def walk(roots: Value | Iterable[Value]) -> Graph:
    """Every node reachable from ``roots`` (constants included), parents before children, without
    recursion; one Edge per (child, argument position), so ``x * x`` gives two edges."""
    order = topological_order([roots] if isinstance(roots, Value) else list(roots), constants=True)
    edges = tuple(Edge(parent, node, k) for node in order for k, parent in enumerate(node.parents))
    return Graph(tuple(order), edges)


_MOVED = {"TimeStep", "step_scope", "time_step", "inner_scope", "is_cut", "mark_cut", "ClipRecord", "record_clip",
          "clip_record", "state_parts", "StepGraph", "step_graph", "step_graphs"}


def __getattr__(name: str):
    """The names of recurrences moved to tinygrad_rnn.recurrence: still found here, with a warning.
    (Looked up when asked for, by name: recurrence builds on this module, never the other way.)"""
    if name in _MOVED:
        home = __name__.replace("graph", "recurrence")
        warnings.warn(f"{__name__}.{name} moved to {home}.{name}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(home), name)
    raise AttributeError(f"module 'tinygrad_rnn.graph' has no attribute {name!r}")

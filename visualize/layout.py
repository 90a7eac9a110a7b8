"""Where each node of an op picture goes: which time-step cluster, and which leaves are shared.

A node made inside ``scope("t=3")`` (or ``scope("encoder")`` then ``scope("t=3")``) belongs to time
step 3 of "encoder". Leaves made outside any step (parameters, inputs, h_0) are placed by who uses
them: a leaf used by exactly one step is drawn inside that step (x_3 next to the step that reads
it, rather than in a pile at the far left), and a leaf used by several steps is a *shared*
parameter, drawn once outside the clusters with an edge into every step that uses it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["TimeStep", "time_step", "Placement", "place"]

_STEP = re.compile(r"^t\s*=\s*(-?\d+)$")


@dataclass(frozen=True, order=True)
class TimeStep:
    """A cluster of the picture: scope path ``prefix/t=<t>`` (prefix may be empty)."""

    prefix: str
    t: int

    @property
    def scope(self) -> str:
        return f"{self.prefix}/t={self.t}" if self.prefix else f"t={self.t}"


def time_step(scope: str | None) -> TimeStep | None:
    """The time step a scope path lies in (its innermost ``t=<k>`` part), or None."""
    if not scope:
        return None
    parts = scope.split("/")
    for i in range(len(parts) - 1, -1, -1):
        match = _STEP.match(parts[i].strip())
        if match:
            return TimeStep("/".join(parts[:i]), int(match.group(1)))
    return None


@dataclass
class Placement:
    """``step[node]``: the node's cluster (None: top level); ``shared[node]``: the steps a shared
    leaf feeds; ``other[node]``: a non-time scope cluster name for nodes outside any step."""

    step: dict = field(default_factory=dict)
    shared: dict = field(default_factory=dict)
    other: dict = field(default_factory=dict)
    shared_inputs: set = field(default_factory=set)

    def steps(self) -> list[TimeStep]:
        return sorted({s for s in self.step.values() if s is not None})


def place(nodes, edges) -> Placement:
    """Assign every node to a time step, a named scope, or the top level (see the module doc).

    "Shared" covers any node outside the steps that several steps use: a parameter, or a term an RNN
    computes once per sequence from parameters (W_hh^T, b_ih + b_hh). Nodes outside the steps that
    feed only shared nodes (the W_hh behind W_hh^T) are listed in ``shared_inputs``.
    """
    placement = Placement()
    users: dict = {}
    children: dict = {}
    for edge in edges:
        users.setdefault(edge.parent, set()).add(time_step(edge.child.scope))
        children.setdefault(edge.parent, []).append(edge.child)
    for node in nodes:
        own = time_step(node.scope)
        if own is not None:
            placement.step[node] = own
            continue
        used_by = {s for s in users.get(node, ()) if s is not None}
        if node.op is None and len(used_by) == 1 and None not in users.get(node, ()):
            placement.step[node] = next(iter(used_by))
            continue
        placement.step[node] = None
        if len(used_by) > 1:
            placement.shared[node] = sorted(used_by)
        elif node.scope:
            placement.other[node] = node.scope
    for node in reversed(nodes):  # children first, so a chain W -> W^T -> (shared) is found whole
        kids = children.get(node, [])
        if placement.step.get(node) is None and node not in placement.shared and kids and all(
            k in placement.shared or k in placement.shared_inputs for k in kids
        ):
            placement.shared_inputs.add(node)
            placement.other.pop(node, None)
    return placement

"""Where each node of an op picture goes: which time-step cluster, which leaves are shared, and in
which row a long unroll wraps.

A node made inside ``scope("t=3")`` (or ``scope("encoder")`` then ``scope("t=3")``) belongs to time
step 3 of "encoder". Leaves made outside any step (parameters, inputs, h_0) are placed by who uses
them: a leaf used by exactly one step is drawn inside that step (x_3 next to the step that reads
it, rather than in a pile at the far left), and a leaf used by several steps is a *shared*
parameter, drawn once outside the clusters with an edge into every step that uses it.

Long unrolls wrap into rows of steps, as the step view does (``wrap``): a value used in a later row
is drawn there again as a faint copy, so no edge runs between rows and each row lays out on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tinygrad_rnn.recurrence import TimeStep, time_step

__all__ = ["Placement", "place", "Rows", "wrap", "step_depth", "SHARED"]

SHARED = -1  # the row of the shared-parameter box


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
        users.setdefault(edge.parent, set()).add(time_step(edge.child))
        children.setdefault(edge.parent, []).append(edge.child)
    for node in nodes:
        own = time_step(node)
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


@dataclass
class Rows:
    """``steps[r]``: the time steps of row r, in order; ``row[node]``: the node's row (``SHARED``
    for the shared box); ``ghosts[r]``: values drawn again in row r because a node there uses them."""

    steps: list
    row: dict
    ghosts: dict


def step_depth(nodes, placement: Placement) -> int:
    """The most ops in a chain inside one time step: how many columns a step needs."""
    depth, deepest = {}, 0
    for node in nodes:
        step = placement.step.get(node)
        if step is None or node.op is None:
            continue
        depth[node] = 1 + max((depth.get(p, 0) for p in node.parents if placement.step.get(p) == step), default=0)
        deepest = max(deepest, depth[node])
    return deepest


def wrap(nodes, edges, placement: Placement, per_row: int) -> Rows:
    """Rows of at most ``per_row`` consecutive steps (a new prefix starts a new row). A node outside
    the steps goes to the row of its latest input, or, for a leaf, of its first user."""
    rows: list = []
    for step in placement.steps():
        if rows and len(rows[-1]) < per_row and rows[-1][-1].prefix == step.prefix:
            rows[-1].append(step)
        else:
            rows.append([step])
    rows = rows or [[]]
    row_of_step = {step: r for r, steps in enumerate(rows) for step in steps}
    boxed = placement.shared.keys() | placement.shared_inputs
    row: dict = {}
    for node in nodes:  # parents first
        if node in boxed:
            row[node] = SHARED
        elif placement.step.get(node) is not None:
            row[node] = row_of_step[placement.step[node]]
        else:
            inputs = [row[p] for p in node.parents if row.get(p, SHARED) != SHARED]
            if inputs:
                row[node] = max(inputs)
    users: dict = {}
    for edge in edges:
        users.setdefault(edge.parent, []).append(edge.child)
    for node in reversed(nodes):  # children first: a leaf joins the row of its first user
        if node not in row:
            placed = [row[c] for c in users.get(node, ()) if row.get(c, SHARED) != SHARED]
            row[node] = min(placed) if placed else len(rows) - 1
    last = len(rows) - 1
    tail = [n for n in nodes if row[n] == last and placement.step.get(n) is None and n not in boxed]
    if len(rows[last]) >= per_row and any(n.op is not None for n in tail):
        rows.append([])  # a full last row: what follows the steps (the loss) gets a row of its own
        for node in tail:
            row[node] = last + 1
    ghosts: dict = {}
    for edge in edges:
        source, target = row[edge.parent], row[edge.child]
        if source == target or (source == SHARED and placement.step.get(edge.child) is not None):
            continue  # same row, or a shared parameter's own copy in the step (a proxy)
        # By identity: ``in`` on a list compares with ==, which a Value answers elementwise.
        if target != SHARED and not any(g is edge.parent for g in ghosts.setdefault(target, [])):
            ghosts[target].append(edge.parent)
    return Rows(rows, row, ghosts)

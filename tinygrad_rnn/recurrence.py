"""What a recorded graph means as a recurrence: time steps, cuts, clip records, and one step's map.

- ``time_step(node)``, ``inner_scope(node)``: where a node sits in an unrolled recurrence, read from
  the scope it was made in (``scope("t=3")``). Nothing else parses scope strings.
- ``is_cut(node)``, ``mark_cut(node)``, ``clip_record(node)``: what was noted on a node (a detached
  state, a clipping hook's record). Nothing else knows the keys of ``notes``.
- ``state_parts(state)``: the Values a state is made of, (h,) or (h, c).
- ``step_graphs(states)``: the recorded map of each step, s_{t-1} -> s_t (``StepGraph``), and the
  vector-Jacobian products through it, by the one backward loop run over the step's own nodes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tinygrad_rnn.autograd import backpropagate
from tinygrad_rnn.graph import Edge
from tinygrad_rnn.ops import raw
from tinygrad_rnn.value import Value

__all__ = [
    "TimeStep", "step_scope", "time_step", "inner_scope", "is_cut", "mark_cut", "ClipRecord", "record_clip",
    "clip_record", "state_parts", "StepGraph", "step_graph", "step_graphs",
]


# ---- scopes: where a node sits in an unrolled recurrence -----------------------------------------

_STEP = re.compile(r"^t\s*=\s*(-?\d+)$")


@dataclass(frozen=True, order=True)
class TimeStep:
    """A time step of an unrolled recurrence: scope path ``prefix/t=<t>`` (prefix may be empty,
    as for ``RNN``; ``"encoder"`` for ``scope("encoder")`` around the unroll)."""

    prefix: str
    t: int

    @property
    def scope(self) -> str:
        return f"{self.prefix}/t={self.t}" if self.prefix else f"t={self.t}"


@functools.lru_cache(maxsize=8192)
def _parse_scope(scope: str) -> tuple[TimeStep | None, str]:
    parts = scope.split("/")
    for i in range(len(parts) - 1, -1, -1):
        match = _STEP.match(parts[i].strip())
        if match:
            return TimeStep("/".join(parts[:i]), int(match.group(1))), "/".join(parts[i + 1 :])
    return None, ""


def step_scope(t: int) -> str:
    """The scope name of time step t, as an unroll writes it: ``with scope(step_scope(3))``."""
    return f"t={t}"


def time_step(node: Value) -> TimeStep | None:
    """The time step ``node`` was made in: the innermost ``t=<k>`` part of its scope, or None."""
    return _parse_scope(node.scope)[0] if node.scope else None


def inner_scope(node: Value) -> str:
    """The part of ``node``'s scope inside its time step: ``"forget gate"`` for a node made in
    ``scope("t=3")`` then ``scope("forget gate")``; "" when there is none."""
    return _parse_scope(node.scope)[1] if node.scope else ""


# ---- notes: what hooks and the unroll wrote on a node ------------------------------------------

_CUT, _CLIP = "truncated", "clip"


def is_cut(node: Value) -> bool:
    """Whether ``node`` is a state cut from the graph on purpose (``mark_cut``; truncated BPTT)."""
    return isinstance(node.notes, dict) and bool(node.notes.get(_CUT))


def mark_cut(node: Value) -> Value:
    """Note on ``node`` (a detached state) that the graph was cut there, so pictures show it."""
    node.notes = {**(node.notes or {}), _CUT: True}
    return node


@dataclass(frozen=True)
class ClipRecord:
    """What a clipping hook did to a node's gradient in the last backward pass: its norm before and
    after, and whether it fired (changed the gradient)."""

    norm_before: float
    norm_after: float
    fired: bool


def record_clip(node: Value, norm_before: float, norm_after: float, fired: bool) -> None:
    """Note on ``node`` what a clipping hook did to its gradient (tinygrad_rnn.clip writes through
    this; ``clip_record`` reads it back)."""
    node.notes = {**(node.notes or {}), _CLIP: {"norm_before": norm_before, "norm_after": norm_after,
                                                "fired": bool(fired)}}


def clip_record(node: Value) -> ClipRecord | None:
    """The record a clipping hook (tinygrad_rnn.clip) left on ``node``, or None."""
    record = node.notes.get(_CLIP) if isinstance(node.notes, dict) else None
    if not isinstance(record, dict):
        return None
    return ClipRecord(float(record["norm_before"]), float(record["norm_after"]), bool(record["fired"]))


# ---- one step of a recurrence ------------------------------------------------------------------

def state_parts(state) -> tuple:
    """The Values a state is made of: ``(h,)`` for a Value, ``(h, c)`` for an LSTM's tuple."""
    parts = tuple(state) if isinstance(state, (tuple, list)) else (state,)
    for part in parts:
        if not isinstance(part, Value):
            raise TypeError(f"a state is a Value or a tuple of Values, got {type(part).__name__}")
    return parts


@dataclass(frozen=True, eq=False)
class StepGraph:
    """The recorded map F from the parts of one state (``inputs``) to the parts of the next
    (``outputs``). ``nodes``: the outputs and every node on a path from an input or an output to an
    output (the LSTM's c_t -> tanh -> h_t is inside the step), parents first; ``edges``: the edges
    into those nodes from the step's nodes or inputs; ``connected``: whether an input reaches an
    output; ``fresh``: every node first met on the walk back from the outputs (to find cuts)."""

    inputs: tuple
    outputs: tuple
    nodes: tuple
    edges: tuple
    connected: bool
    fresh: tuple

    @property
    def cut(self) -> bool:
        """No input reaches an output and a state on the way was marked cut (truncated BPTT)."""
        return not self.connected and any(is_cut(n) for n in (*self.inputs, *self.fresh))

    @functools.cached_property
    def _program(self) -> list:
        """The step's nodes with its inputs, parents first: the program the backward loop runs."""
        return list(dict.fromkeys((*self.inputs, *self.nodes)))

    def vjp(self, seeds: Sequence) -> list:
        """J^T seeds, with J = dF/d(inputs): given one gradient per output (None for zero), the
        gradient reaching each input through the step (zeros where none arrives). The backward loop
        itself, run over the step's nodes only (hooks are not run: this is the map, not a backward
        pass). An output that is also an input (a part passed through unchanged) keeps its seed."""
        given = [(y, raw(g)) for y, g in zip(self.outputs, seeds) if g is not None]
        found = backpropagate([y for y, _ in given], [g for _, g in given], into_grad=False,
                              order=self._program, hooks=False, wanted=self.inputs) if given else {}
        return [found[x] if x in found else np.zeros_like(raw(x.data)) for x in self.inputs]

    def within(self, output: Value):
        """What the step itself sent to ``output`` in the last backward pass: the sum over the
        output's children inside the step (the LSTM's c_t -> tanh -> h_t) of their contributions,
        from the children's ``.grad``. None when it has no such child or none holds a gradient."""
        total = None
        for edge in self.edges:
            if edge.parent is output:
                part = edge.contribution()
                if part is not None:
                    total = part if total is None else total + part
        return total


def step_graph(outputs, inputs, seen: set | None = None) -> StepGraph:
    """The step from state ``inputs`` to state ``outputs`` (Values or tuples of them).

    Walks back from the outputs, stopping at the inputs and at nodes in ``seen`` (ids of nodes met
    by the walks of earlier steps: they are older than the inputs, so no path from an input passes
    through them). Walking the steps in time order with one shared ``seen`` visits every node once.
    """
    outs, ins = state_parts(outputs), state_parts(inputs)
    seen = set() if seen is None else seen
    stop = {id(x) for x in ins}
    seen.update(stop)
    order, stack = [], [(node, False) for node in reversed(outs)]
    while stack:  # depth-first post-order without recursion: parents before children
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((p, False) for p in node.parents if id(p) not in seen)
    out_ids = {id(y) for y in outs}
    from_inputs, in_step = set(stop), stop | out_ids
    nodes, edges = [], []
    for node in order:
        into = [Edge(p, node, k) for k, p in enumerate(node.parents) if id(p) in in_step]
        if into or id(node) in out_ids:
            in_step.add(id(node))
            nodes.append(node)
            edges.extend(into)
            if any(id(p) in from_inputs for p in node.parents):
                from_inputs.add(id(node))
    connected = any(id(y) in from_inputs for y in outs)
    return StepGraph(ins, outs, tuple(nodes), tuple(edges), connected, tuple(order))


def step_graphs(states: Sequence) -> list[StepGraph]:
    """``[F_1, ..., F_T]`` for states ``[s_0, ..., s_T]``, in one pass over the recorded graph."""
    seen: set = set()
    return [step_graph(states[t], states[t - 1], seen) for t in range(1, len(states))]

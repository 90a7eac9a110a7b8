"""One step of a recurrence as a map, s_{t-1} -> s_t: the step's own recorded nodes (``StepGraph``),
the vector-Jacobian products through them (by the one backward loop, run over the step's nodes
only), and its Jacobian, one product per unit of the state. ``recurrence.py`` chains the steps."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tinygrad_rnn.functional import grad
from tinygrad_rnn.graph import Edge
from tinygrad_rnn.notes import is_cut
from tinygrad_rnn.ops import raw
from tinygrad_rnn.value import Value

__all__ = ["state_parts", "StepGraph", "step_graph", "step_graphs", "gradients", "batch_size", "flat"]


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
        if not given:
            return [np.zeros_like(raw(x.data)) for x in self.inputs]
        return gradients([y for y, _ in given], self.inputs, [g for _, g in given], self._program)

    def jacobian(self, check_rows: bool = True) -> tuple[np.ndarray, str]:
        """(J, method): J of shape (B, out, in), the Jacobian of each batch row (``"rows"``), or
        (1, out, in) for the whole state (``"full"``, also used when the state has no batch axis).

        One vector-Jacobian product per output unit, seeded in every batch row at once; that gives each
        row's own Jacobian only if the step does not mix rows. ``check_rows`` tests that with one more
        product, seeded with random numbers R: if rows do not mix, (J^T R)_b = J_b^T R_b for every row b,
        and any mixing breaks the equality (for random R, almost surely). Then the whole-batch Jacobian
        is built instead, one product per entry of the state.
        """
        batch = batch_size(self.outputs + self.inputs)
        if batch is not None:
            jacobian = _rows(self, batch)
            if batch == 1 or not check_rows or not self.connected or not _mixes_rows(self, jacobian, batch):
                return jacobian, "rows"
        return _rows(self, None), "full"

    def within(self, output: Value):
        """What the step itself sent to ``output`` in the last backward pass: the sum over the
        output's children inside the step (the LSTM's c_t -> tanh -> h_t) of their contributions,
        from the children's ``.grad``. None when it has no such child or none holds a gradient."""
        total = None
        for child in dict.fromkeys(edge.child for edge in self.edges if edge.parent is output):
            if child.grad is not None:  # the child alone is a map from output: its own vjp
                (part,) = StepGraph((output,), (child,), (child,), (), True, ()).vjp([child.grad])
                total = part if total is None else total + part
        return total


def gradients(outputs: Sequence, inputs: Sequence, seeds: Sequence, order: Sequence) -> list:
    """The one door from here to the backward loop: d(outputs)/d(inputs) weighted by ``seeds``, by
    ``grad`` run over the nodes in ``order`` only (parents first), without hooks and without touching
    any ``.grad``. Every gradient this module computes (a step's vector-Jacobian products, what a loss
    reads, what a step gives the weights) comes through here."""
    return grad(list(outputs), list(inputs), list(seeds), order=order, hooks=False)


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


# ---- a step's Jacobian, from the step's own nodes ------------------------------------------------

def batch_size(parts) -> int | None:
    """B when every part is (B, ...) with one B: the batch axis; else None (no batch axis)."""
    sizes = {p.shape[0] for p in parts if p.ndim >= 2}
    if len(sizes) == 1 and all(p.ndim >= 2 for p in parts):
        return sizes.pop()
    return None


def _unit_seeds(parts, batch: int | None):
    """Seeds for the rows of the Jacobian: one per unit of each part, in every batch row at once
    (``batch``) or one entry of the whole state at a time (None)."""
    for k, part in enumerate(parts):
        rows = batch or 1
        per_row = part.size // rows
        units = np.zeros((per_row, rows, per_row), dtype=np.result_type(part.data))
        units[np.arange(per_row), :, np.arange(per_row)] = 1.0  # units[j]: a 1 at unit j of every row
        for j in range(per_row):
            seeds = [None] * len(parts)
            seeds[k] = units[j].reshape(part.shape) if part.shape else float(units[j, 0, 0])
            yield seeds


def flat(grads, batch: int | None) -> np.ndarray:
    """Gradients of a state's parts as one row per batch row (or one row), in float64: the layout of
    the Jacobian's rows and columns."""
    rows = batch or 1
    if len(grads) == 1:
        return np.asarray(grads[0], dtype=np.float64).reshape(rows, -1)
    return np.concatenate([np.asarray(g, dtype=np.float64).reshape(rows, -1) for g in grads], axis=1)


def _rows(step: StepGraph, batch: int | None) -> np.ndarray:
    width = sum(p.size for p in step.inputs) // (batch or 1)
    rows = [flat(step.vjp(seeds), batch) for seeds in _unit_seeds(step.outputs, batch)]
    return np.concatenate([row[:, np.newaxis] for row in rows], axis=1) if rows else np.zeros((batch or 1, 0, width))


def _mixes_rows(step: StepGraph, jacobian: np.ndarray, batch: int) -> bool:
    rng = np.random.default_rng(0)
    probe = [rng.standard_normal(p.shape).astype(np.result_type(p.data)) for p in step.outputs]
    actual = flat(step.vjp(probe), batch)
    flat_probe = flat(probe, batch)
    predicted = np.einsum("bj,bjd->bd", flat_probe, jacobian)
    eps = max(np.finfo(np.result_type(p.data)).eps for p in (*step.outputs, *step.inputs))
    scale = np.linalg.norm(actual) + np.linalg.norm(predicted)
    return bool(np.linalg.norm(actual - predicted) > math.sqrt(eps) * scale)

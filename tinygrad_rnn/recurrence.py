"""What a recorded graph means as a recurrence: time steps, cuts, clip records, and one step's map.

- ``time_step(node)``, ``inner_scope(node)``, ``is_cut(node)``, ``mark_cut(node)``,
  ``clip_record(node)``: where a node sits and what was noted on it (``tinygrad_rnn.notes``, the only
  code that parses scope strings or knows the keys of ``notes``; handed on from here).
- ``state_parts(state)``: the Values a state is made of, (h,) or (h, c).
- ``step_graphs(states)``: the recorded map of each step, s_{t-1} -> s_t (``StepGraph``), and the
  vector-Jacobian products through it, by the one backward loop run over the step's own nodes; its
  Jacobian (``StepGraph.jacobian``), one product per unit of the state.
- ``bptt(states, loss)``: backpropagation through time taken apart step by step, every per-step part
  at once (``BPTT``): each step's map, delta_t, what each step sends back (J_t^T delta_t), its
  Jacobian, what the loss reads of each state directly, and what each step gives the weights. The
  diagnostics turn these into numbers; they compute none of them.
- ``carry_back(read, steps)``: the one recursion, delta_k = d_k + J_{k+1}^T delta_{k+1}.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tinygrad_rnn.functional import grad
from tinygrad_rnn.graph import Edge
from tinygrad_rnn.notes import (
    ClipRecord,
    TimeStep,
    clip_record,
    inner_scope,
    is_cut,
    mark_cut,
    record_clip,
    step_scope,
    time_step,
)
from tinygrad_rnn.ops import raw
from tinygrad_rnn.value import Value

__all__ = [
    "TimeStep", "step_scope", "time_step", "inner_scope", "is_cut", "mark_cut", "ClipRecord", "record_clip",
    "clip_record", "state_parts", "StepGraph", "step_graph", "step_graphs", "BPTT", "bptt", "carry_back",
    "read_gradients", "step_contributions", "delta_norm",
]


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
        return _gradients([y for y, _ in given], self.inputs, [g for _, g in given], self._program)

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


def _gradients(outputs: Sequence, inputs: Sequence, seeds: Sequence, order: Sequence, stop: Sequence = ()) -> list:
    """The one door from here to the backward loop: d(outputs)/d(inputs) weighted by ``seeds``, by
    ``grad`` run over the nodes in ``order`` only (parents first), without hooks and without touching
    any ``.grad``. Every gradient this module computes (a step's vector-Jacobian products, what a loss
    reads, what a step gives the weights) comes through here."""
    return grad(list(outputs), list(inputs), list(seeds), order=order, hooks=False, stop=stop)


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


# ---- backpropagation through the steps -----------------------------------------------------------

@dataclass(frozen=True, eq=False)
class BPTT:
    """Backpropagation through time taken apart, for states [s_0, ..., s_T] (lists indexed by t).

    - ``steps``: [F_1, ..., F_T], the map of each step (``StepGraph``); ``clips``: the clip record
      on each state (or None); ``cuts[t]``: whether the graph was cut on purpose at the start of
      step t (``StepGraph.cut``; False for t = 0).
    - ``deltas[t]``: delta_t, the gradient that reached s_t from outside step t in the last backward
      pass (after any hook on s_t), one array per part; None where no gradient arrived.
    - ``sent[t]``: J_t^T delta_t, what step t sends back to s_{t-1} (None for t = 0, and for the
      steps not asked for).
    - ``jacobians[t]``: (J_t, method) as ``StepGraph.jacobian`` gives it (None for t = 0), or None
      when not asked for.
    - ``reads[t]``: d_t, what the loss sends to s_t directly, through nodes outside every step;
      ``last_read[t]``: delta_t of the loss's last read alone, carried back (``carry_back``). Both
      None without a loss, or when the loss reads a node inside a step.
    - ``params``, ``weights``: the parameters used inside the steps, and ``weights[t - 1]``, one
      gradient per parameter, what flowed to it through its use inside step t (None when not asked).
    - ``parts[t]``: the Values s_t is made of; ``batch``: the states' batch size (None: no batch axis).
    - ``rows``: (deltas, sent) laid out as the Jacobian's rows, one per batch row (``flat``), or None
      when not asked for.
    """

    states: tuple
    steps: tuple
    clips: tuple
    cuts: tuple
    deltas: list
    sent: list
    jacobians: list | None = None
    reads: list | None = None
    last_read: list | None = None
    params: list | None = None
    weights: list | None = None
    parts: tuple = ()
    batch: int | None = None
    rows: tuple | None = None


def bptt(states: Sequence, loss=None, *, every_step: bool = True, jacobians: bool = False,
         weights: bool = False, rows: bool = False, caller: str = "bptt") -> BPTT:
    """Every per-step part of backpropagation through time (``BPTT``), from the gradients the last
    ``loss.backward()`` left; ``loss`` may be None (no reads or weights then).

    ``every_step``: J_t^T delta_t for every step (else only step 1, which a constant s_0 needs:
    delta_0 is then what step 1 sends it). ``jacobians``: each step's Jacobian, one vector-Jacobian
    product per state unit and step. ``weights``: what each step gives the weights. ``rows``: delta_t
    and J_t^T delta_t as rows too. A ``caller`` names who asks in the errors.
    """
    states = list(states)
    if not states:
        raise ValueError(f"{caller}: needs the states [s_0, ..., s_T], got an empty list")
    if loss is not None and getattr(loss, "requires_grad", False) and loss.grad is None:
        raise ValueError(f"{caller}: the loss has no gradient yet; call loss.backward() first")
    for t, state in enumerate(states):
        try:
            state_parts(state)
        except TypeError as error:
            raise TypeError(f"{caller}: states[{t}]: {error} (pass rnn(inputs, return_states=True)[1])") from None
    widths = {len(state_parts(s)) for s in states}
    if len(widths) > 1:
        raise ValueError(f"{caller}: every state needs the same number of parts, got {sorted(widths)}")
    steps = step_graphs(states)
    clips = tuple(next((r for r in map(clip_record, state_parts(s)) if r is not None), None) for s in states)
    cuts = (False, *(step.cut for step in steps))
    matrices = [None] + [step.jacobian() for step in steps] if jacobians else None
    reads = last_read = params = given = None
    if loss is not None and getattr(loss, "requires_grad", False):
        if weights:
            params, given = step_contributions(states, None, steps)
        reads, last_read = _reads(loss, states, steps)
    deltas, sent = _carry(steps, len(states) - 1, lambda t, carried: _arrived(states, steps, t, carried),
                          every_step=every_step)
    parts = tuple(state_parts(s) for s in states)
    batch = batch_size(parts[-1])
    laid = None
    if rows:
        laid = tuple([None if g is None else flat(g, batch) for g in grads] for grads in (deltas, sent))
    return BPTT(tuple(states), tuple(steps), clips, cuts, deltas, sent, matrices, reads, last_read, params, given,
                parts, batch, laid)


def _carry(steps: Sequence[StepGraph], last: int, delta_at: Callable, every_step: bool = True,
           stop: int = 0) -> tuple[list, list]:
    """The recursion of backpropagation through time, from state ``last`` down to ``stop``: delta_t =
    ``delta_at(t, carried)``, where carried = J_{t+1}^T delta_{t+1} (None at the start), then
    sent_t = J_t^T delta_t, by step t's vector-Jacobian product (for every step, or only step 1
    unless ``every_step``). Returns (deltas, sent), indexed by state; None where not computed."""
    deltas: list = [None] * (len(steps) + 1)
    sent: list = [None] * (len(steps) + 1)
    carried = None
    for t in range(last, stop - 1, -1):
        deltas[t] = delta_at(t, carried)
        carried = None
        if t > stop and deltas[t] is not None and (every_step or t == 1):
            carried = sent[t] = steps[t - 1].vjp(deltas[t])
    return deltas, sent


def _arrived(states: list, steps: Sequence[StepGraph], t: int, carried) -> list | None:
    """delta_t as it arrived in the last backward pass: each part's ``.grad`` less what its own step
    sent it. Parts without a gradient take what the next step sent (``carried``, for a constant
    s_0 only), else zeros; a state where no part holds one has no delta at all (None)."""
    step = steps[t - 1] if t >= 1 else None
    fallback = carried if t == 0 else None
    delta = []
    for p in state_parts(states[t]):
        within = None if step is None or p.grad is None else step.within(p)
        delta.append(None if p.grad is None else raw(p.grad) if within is None else raw(p.grad) - within)
    if all(d is None for d in delta) and fallback is None:
        return None
    return [d if d is not None else fallback[k] if fallback is not None else np.zeros_like(raw(p.data))
            for k, (d, p) in enumerate(zip(delta, state_parts(states[t])))]


def carry_back(read: list, steps: Sequence[StepGraph], max_lag: int | None = None) -> list:
    """delta_k for k = 0..T from the direct gradients ``read`` (one list of parts per state), by
    delta_k = d_k + J_{k+1}^T delta_{k+1}, starting at the last state read: one vector-Jacobian
    product per step crossed. Zeros after the last read (and everywhere when nothing is read);
    states further back than ``max_lag`` from the last read are not computed (None)."""
    zeros = [[np.zeros_like(p) for p in parts] for parts in read]
    last = max((k for k, parts in enumerate(read) if delta_norm(parts) > 0.0), default=None)
    if last is None:
        return zeros
    stop = 0 if max_lag is None else max(0, last - max_lag)
    deltas, _ = _carry(steps, last, lambda t, carried: read[t] if carried is None else
                       [s + d for s, d in zip(carried, read[t])], stop=stop)
    return deltas[:last + 1] + zeros[last + 1:]


def delta_norm(parts) -> float:
    """The norm of a gradient given in parts, as one vector (float64): how ``carry_back`` tells the
    states a loss reads from the ones it does not, and how the lag view measures a delta."""
    return math.sqrt(sum(float(np.sum(np.square(raw(p), dtype=np.float64))) for p in parts))


def _reads(loss, states: list, steps: Sequence[StepGraph]) -> tuple[list | None, list | None]:
    """(d_t per state, delta_t of the last read alone per state), or (None, None) when the loss reads
    a node inside a step (which states it reads cannot be said then)."""
    try:
        (read,) = read_gradients([loss], states, steps)
    except ValueError:
        return None, None
    held = [t for t, parts in enumerate(read) if delta_norm(parts) > 0.0]
    if not held:
        return read, carry_back(read, steps)
    last = held[-1]  # the last read alone: its direct gradient, carried back step by step
    only = [read[t] if t == last else [np.zeros_like(p) for p in read[t]] for t in range(len(read))]
    return read, carry_back(only, steps)


# ---- what a loss reads of the states, and what each step gives the weights -----------------------

def _inside(steps: Sequence[StepGraph]) -> set:
    """The ids of every node inside a step (the states the steps make included)."""
    return {id(n) for step in steps for n in step.nodes}


def _outside(roots: Sequence, inside: set, ends: set, reader: str | None = None) -> list:
    """The nodes behind ``roots`` reached without entering a step (``inside``: their ids), parents
    first: a walk back that stops at the nodes whose ids are in ``ends`` (kept, not passed) and at
    every node inside a step. With ``reader`` (who asks), reading a node inside a step that is not a
    state is an error: its gradient would reach the states by a way no row could show."""
    found, stack = {id(r): r for r in roots}, list(roots)
    while stack:
        child = stack.pop()
        for parent in child.parents:
            if id(parent) in found or not parent.requires_grad:
                continue
            if id(parent) in ends or id(parent) not in inside:
                found[id(parent)] = parent
                if id(parent) not in ends:
                    stack.append(parent)
            elif reader is not None:
                raise ValueError(f"{reader}: {child!r} reads {parent!r}, made inside a step but not a state; "
                                 "pass states that hold everything the losses read (say, the gate as a part)")
    return sorted(found.values(), key=operator.attrgetter("_made"))


def read_gradients(losses: Sequence, states: Sequence, steps: Sequence[StepGraph] | None = None) -> list:
    """For each loss, d_k per state: the gradient it sends to s_k directly, through nodes outside every
    step (a list of parts per state; zeros where it reads nothing). Hooks are not run."""
    for i, loss in enumerate(losses):
        if not isinstance(loss, Value) or not loss.requires_grad:
            raise TypeError(f"lags: losses[{i}] must be a Value that needs a gradient, got {loss!r}")
    steps = step_graphs(states) if steps is None else steps
    parts = [p for s in states for p in state_parts(s)]
    order = _outside(losses, _inside(steps), {id(p) for p in parts}, reader="lags")
    result = []
    for loss in losses:
        # (stopping at the states: s_t may be made straight from s_t-1, h + f(x), and a read of s_t is
        # not one of s_t-1)
        found = _gradients([loss], parts, [np.ones_like(loss.data) if loss.shape else 1.0], order, parts)
        per_state, k = [], 0
        for s in states:
            n = len(state_parts(s))
            per_state.append([raw(g) for g in found[k:k + n]])
            k += n
        result.append(per_state)
    return result


def _step_inputs(step: StepGraph, inside: set, ends: set) -> dict:
    """The gradient ``step`` sends out of itself to nodes outside every step, other than the states
    (weights, their transposes, projected inputs), from the ``.grad`` the last backward left:
    id -> (node, gradient)."""
    sent: dict = {}
    for child in step.nodes:
        if child.grad is None or child.op is None:
            continue
        outside = list(dict.fromkeys(p for p in child.parents if id(p) not in inside and id(p) not in ends
                                     and p.requires_grad))
        if not outside:
            continue
        for parent, part in zip(outside, _gradients([child], outside, [child.grad], [*outside, child])):
            node, total = sent.get(id(parent), (parent, None))
            sent[id(parent)] = (node, part if total is None else total + part)
    return sent


def step_contributions(states: Sequence, params: Sequence | None,
                       steps: Sequence[StepGraph] | None = None) -> tuple[list, list]:
    """(params, per_step): for t = 1..T, one gradient per param, what flowed to it through its use
    inside step t. ``params`` None: every leaf that needs a gradient and feeds the steps (the
    weights, whatever the cell calls them)."""
    steps = step_graphs(states) if steps is None else steps
    inside = _inside(steps)
    ends = {id(p) for s in states for p in state_parts(s)}
    sent = [_step_inputs(step, inside, ends) for step in steps]
    if params is None:
        roots = list({i: node for out in sent for i, (node, _) in out.items()}.values())
        params = [n for n in _outside(roots, inside, ends) if n.op is None and id(n) not in ends]
    zeros = [np.zeros(p.shape, p.dtype) if p.shape else 0.0 for p in params]
    result = []
    for out in sent:
        if not out:
            result.append(list(zeros))
            continue
        nodes, seeds = zip(*out.values())
        # Each step's own walk back to the weights: a few nodes, not the whole outside region again.
        order = _outside(nodes, inside, ends)
        result.append([raw(g) for g in _gradients(nodes, params, seeds, order)])
    return list(params), result

"""The gradient split by loss (how far each reaches back: the lag view) and by step (what each gives a weight).

For states [s_0, ..., s_T] of an unrolled recurrence and the steps F_t: s_{t-1} -> s_t between them
(``tinygrad_rnn.diagnostics.steps`` defines them), a loss reaches the states in two ways: *directly*,
through nodes outside every step (an output layer reading h_t, then a cross-entropy), and through the
steps. Write d_k^(i) for the gradient loss i sends to s_k directly. Then the gradient that reached s_k
from outside step k, for loss i alone, is

    delta_k^(i) = d_k^(i) + J_{k+1}^T delta_{k+1}^(i),        delta_T^(i) = d_T^(i),

the same delta as the step view's (for an LSTM the pair (h_k, c_k), without the path c_k -> h_k inside
step k), with one loss in place of their sum. By linearity the deltas of all losses add up to the step
view's (when no hook changed the gradient on the way: hooks are not run here).

- ``lags(losses, states)``: the matrix [i, k] = ||delta_k^(i)||. With one Value in place of the list
  it splits that loss by where it reads the states: row t is what the loss reads at s_t, carried back
  (for a loss that is a sum of per-step terms, each reading only its own h_t, row t is term t's).
- ``reach(matrix)``: the median over losses of [i, t_i - lag] / [i, t_i], t_i the last state loss i
  reads: how much of a loss's gradient arrives ``lag`` steps back.
- ``contributions(loss, states, param)``: C_t, the part of param's gradient that flows through its
  use inside step t, as if every step had its own copy of param. They add up to ``param.grad`` when
  param is used only inside the steps (the rest is what reached it outside them).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import numpy as np

from tinygrad_rnn import graph, recurrence
from tinygrad_rnn.functional import grad
from tinygrad_rnn.ops import raw
from tinygrad_rnn.recurrence import StepGraph, state_parts
from tinygrad_rnn.value import Value

__all__ = ["lags", "reach", "reach_counts", "contributions"]


def _norm(parts) -> float:
    return math.sqrt(sum(float(np.sum(np.square(raw(p), dtype=np.float64))) for p in parts))


def _inside(step_list: Sequence[StepGraph]) -> set:
    """The ids of every node inside a step (the states the steps make included)."""
    return {id(n) for step in step_list for n in step.nodes}


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


def read_gradients(losses: Sequence, states: Sequence, step_list: Sequence[StepGraph] | None = None) -> list:
    """For each loss, d_k per state: the gradient it sends to s_k directly, through nodes outside every
    step (a list of parts per state; zeros where it reads nothing). Hooks are not run."""
    for i, loss in enumerate(losses):
        if not isinstance(loss, Value) or not loss.requires_grad:
            raise TypeError(f"lags: losses[{i}] must be a Value that needs a gradient, got {loss!r}")
    step_list = recurrence.step_graphs(states) if step_list is None else step_list
    parts = [p for s in states for p in state_parts(s)]
    order = _outside(losses, _inside(step_list), {id(p) for p in parts}, reader="lags")
    result = []
    for loss in losses:
        found = grad(loss, parts, np.ones_like(loss.data) if loss.shape else 1.0, order=order, hooks=False)
        per_state, k = [], 0
        for s in states:
            n = len(state_parts(s))
            per_state.append([raw(g) for g in found[k:k + n]])
            k += n
        result.append(per_state)
    return result


def carry_back(read: list, step_list: Sequence[StepGraph], max_lag: int | None) -> list[float]:
    """||delta_k|| for k = 0..T from the direct gradients ``read`` (one list of parts per state), by
    delta_k = d_k + J_{k+1}^T delta_{k+1}: one vector-Jacobian product per step crossed. Steps further
    back than ``max_lag`` from the last state read are not computed (nan)."""
    T = len(read) - 1
    norms = [_norm(d) for d in read]
    last = max((k for k in range(T + 1) if norms[k] > 0.0), default=None)
    out = [0.0] * (T + 1)
    if last is None:
        return out
    delta = read[last]
    out[last] = norms[last]
    for k in range(last - 1, -1, -1):
        if max_lag is not None and last - k > max_lag:
            out[: k + 1] = [math.nan] * (k + 1)
            break
        sent = step_list[k].vjp(delta)  # step k+1 is step_list[k]: what it sends back to s_k
        delta = [s + d for s, d in zip(sent, read[k])]
        out[k] = _norm(delta)
    return out


def lags(losses, states: Sequence, *, max_lag: int | None = None) -> np.ndarray:
    """The lag matrix, [i, k] = ||delta_k^(i)||: the gradient ``losses[i]`` alone sends to state s_k from
    outside step k (module doc). Shape (len(losses), len(states)); 0 where losses[i] does not depend on
    s_k (states after the last one it reads, or across a cut). Norms are over the whole batch.

    ``losses``: a list of Values (one per row), or one Value, split by where it reads the states (row t:
    the part read at s_t). ``max_lag``: compute at most this many steps back from the last state each
    loss reads (nan beyond): a long run costs one step's vector-Jacobian product per (loss, step) pair,
    so pass ``losses[::k]`` or a ``max_lag`` to thin it. Needs no backward pass first; hooks are not run.
    """
    states = list(states)
    if len(states) < 2:
        raise ValueError(f"lags: needs the states [s_0, ..., s_T] with T >= 1, got {len(states)} state(s)")
    if max_lag is not None and (not isinstance(max_lag, int) or max_lag < 0):
        raise ValueError(f"lags: max_lag must be a number of steps >= 0 or None, got {max_lag!r}")
    step_list = recurrence.step_graphs(states)
    if isinstance(losses, Value):
        (read,) = read_gradients([losses], states, step_list)
        zero = [[np.zeros_like(p) for p in d] for d in read]
        sources = [[read[k] if j == k else zero[j] for j in range(len(read))] for k in range(len(read))]
    else:
        losses = list(losses)
        if not losses:
            raise ValueError("lags: needs at least one loss")
        sources = read_gradients(losses, states, step_list)
    return np.array([carry_back(read, step_list, max_lag) for read in sources], dtype=np.float64)


def reach(matrix: np.ndarray, least: int = 1) -> np.ndarray:
    """reach[lag] = the median over losses of [i, t_i - lag] / [i, t_i], where t_i is the last state
    loss i reaches (its last nonzero entry): how much of a loss's gradient arrives ``lag`` steps back.
    reach[0] = 1; nan where fewer than ``least`` losses reach that far back (or it was not computed).
    The longest lags rest on the fewest losses: ``reach_counts`` says on how many."""
    matrix = np.asarray(matrix, dtype=np.float64)
    ratios: list[list[float]] = [[] for _ in range(matrix.shape[1])]
    for row in matrix:
        held = np.flatnonzero(np.nan_to_num(row, nan=0.0) > 0.0)
        if held.size == 0:
            continue
        t = int(held[-1])
        for lag in range(t + 1):
            if not math.isnan(row[t - lag]):
                ratios[lag].append(row[t - lag] / row[t])
    return np.array([float(np.median(r)) if len(r) >= max(least, 1) else math.nan for r in ratios])


def reach_counts(matrix: np.ndarray) -> np.ndarray:
    """counts[lag]: how many losses reach ``lag`` steps back from the last state they read (t_i >= lag),
    the number of shares each value of ``reach`` is the median of."""
    matrix = np.nan_to_num(np.asarray(matrix, dtype=np.float64), nan=1.0)
    counts = np.zeros(matrix.shape[1], dtype=int)
    for row in matrix:
        held = np.flatnonzero(row > 0.0)
        if held.size:
            counts[: int(held[-1]) + 1] += 1
    return counts


def _step_inputs(step: StepGraph, inside: set, ends: set) -> dict:
    """The gradient step ``step`` sends out of itself to nodes outside every step, other than the
    states (weights, their transposes, projected inputs), from the ``.grad`` the last backward left:
    id -> (node, gradient)."""
    sent: dict = {}
    for child in step.nodes:
        if child.grad is None or child.op is None:
            continue
        for k, parent in enumerate(child.parents):
            if id(parent) in inside or id(parent) in ends or not parent.requires_grad:
                continue
            part = graph.Edge(parent, child, k).contribution()
            node, total = sent.get(id(parent), (parent, None))
            sent[id(parent)] = (node, part if total is None else total + part)
    return sent


def step_contributions(states: Sequence, params: Sequence | None,
                       step_list: Sequence[StepGraph] | None = None) -> tuple[list, list]:
    """(params, per_step): for t = 1..T, one gradient per param, what flowed to it through its use
    inside step t (the ``contributions`` of each param at once). ``params`` None: every leaf that
    needs a gradient and feeds the steps (the weights, whatever the cell calls them)."""
    step_list = recurrence.step_graphs(states) if step_list is None else step_list
    inside = _inside(step_list)
    ends = {id(p) for s in states for p in state_parts(s)}
    sent = [_step_inputs(step, inside, ends) for step in step_list]
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
        result.append([raw(g) for g in grad(list(nodes), list(params), list(seeds), order=order, hooks=False)])
    return list(params), result


def contributions(loss, states: Sequence, param: Value) -> list:
    """[C_1, ..., C_T]: C_t is the part of ``param.grad`` that flowed through param's use inside step t,
    as if every step had its own copy of param (RNNbow's per-step contributions, for tensors).

    Read from the gradients the last ``loss.backward()`` left (hooks included, as they acted). Uses that
    every step shares (a transposed weight made once, the input projection of all steps at once) are
    split by the step that read them. The C_t add up to ``param.grad`` when param is used only inside
    the steps; what reached it outside them (an output layer) is ``param.grad - sum(C_t)``.
    """
    states = list(states)
    if len(states) < 2:
        raise ValueError(f"contributions: needs the states [s_0, ..., s_T] with T >= 1, got {len(states)}")
    if not isinstance(param, Value):
        raise TypeError(f"contributions: param must be a Value, got {type(param).__name__}")
    if loss is not None and getattr(loss, "requires_grad", False) and loss.grad is None:
        raise ValueError("contributions: the loss has no gradient yet; call loss.backward() first")
    return [per_param[0] for per_param in step_contributions(states, [param])[1]]

"""The gradient split by loss (how far each reaches back: the lag view), by step (what each gives a weight),
and by unit or batch row of the state (which units carry the gradient back: dead units show).

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

- ``steps(loss, states, by="unit")`` (or ``by="row"``; ``split_steps`` here): the step view's numbers
  ||delta_t|| and gain split into columns, one per unit of the state (each part's units in turn:
  h[0..H-1], then c[0..H-1] for an LSTM) or one per batch row (``StepSplit``).

The gradients themselves (d_k, the recursion, what each step gives a weight) are computed by
``tinygrad_rnn.recurrence`` (``read_gradients``, ``carry_back``, ``step_contributions``); this module
turns them into matrices.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tinygrad_rnn import recurrence
from tinygrad_rnn.diagnostics import reuse
from tinygrad_rnn.recurrence import StepGraph
from tinygrad_rnn.value import Value

__all__ = ["lags", "reach", "reach_counts", "contributions", "StepSplit", "split_steps", "SPLITS"]

# What ``steps(by=...)`` splits a state's numbers by: the columns of the state's batch rows, or the rows.
SPLITS = ("unit", "row")


def read_gradients(losses: Sequence, states: Sequence, step_list: Sequence[StepGraph] | None = None) -> list:
    """Deprecated: ``tinygrad_rnn.recurrence.read_gradients`` (the same arguments)."""
    _moved("read_gradients", "read_gradients")
    return recurrence.read_gradients(losses, states, step_list)


def carry_back(read: list, step_list: Sequence[StepGraph], max_lag: int | None) -> list[float]:
    """Deprecated: ``tinygrad_rnn.recurrence.carry_back`` gives the deltas; ``delta_norm`` of each is
    what this returned (nan where not computed)."""
    _moved("carry_back", "carry_back")
    return _norms(recurrence.carry_back(read, step_list, max_lag))


def step_contributions(states: Sequence, params: Sequence | None,
                       step_list: Sequence[StepGraph] | None = None) -> tuple[list, list]:
    """Deprecated: ``tinygrad_rnn.recurrence.step_contributions`` (the same arguments)."""
    _moved("step_contributions", "step_contributions")
    return recurrence.step_contributions(states, params, step_list)


def _moved(name: str, home: str) -> None:
    warnings.warn(f"diagnostics.split.{name} moved to tinygrad_rnn.recurrence.{home}", DeprecationWarning,
                  stacklevel=3)


def _norms(deltas: list) -> list[float]:
    """||delta_k|| per state, nan where it was not computed (beyond max_lag)."""
    return [math.nan if delta is None else recurrence.delta_norm(delta) for delta in deltas]


def lags(losses, states: Sequence, *, max_lag: int | None = None) -> np.ndarray:
    """The lag matrix, [i, k] = ||delta_k^(i)||: the gradient ``losses[i]`` alone sends to state s_k from
    outside step k (module doc). Shape (len(losses), len(states)); 0 where losses[i] does not depend on
    s_k (states after the last one it reads, or across a cut). Norms are over the whole batch.

    ``losses``: a list of Values (one per row), or one Value, split by where it reads the states (row t:
    the part read at s_t). ``max_lag``: compute at most this many steps back from the last state each
    loss reads (nan beyond): a long run costs one step's vector-Jacobian product per (loss, step) pair,
    so pass ``losses[::k]`` or a ``max_lag`` to thin it. Needs no backward pass first; hooks are not run.
    Inside ``with diagnostics.reuse_numbers():`` a matrix asked for again is given back, not computed.
    """
    states = list(states)
    if len(states) < 2:
        raise ValueError(f"lags: needs the states [s_0, ..., s_T] with T >= 1, got {len(states)} state(s)")
    if max_lag is not None and (not isinstance(max_lag, int) or max_lag < 0):
        raise ValueError(f"lags: max_lag must be a number of steps >= 0 or None, got {max_lag!r}")
    kept = reuse.slot("lags", losses, states, max_lag, isinstance(losses, Value))
    if kept.value is not None:
        return kept.value.copy()
    step_list = recurrence.step_graphs(states)
    if isinstance(losses, Value):
        (read,) = recurrence.read_gradients([losses], states, step_list)
        zero = [[np.zeros_like(p) for p in d] for d in read]
        sources = [[read[k] if j == k else zero[j] for j in range(len(read))] for k in range(len(read))]
    else:
        losses = list(losses)
        if not losses:
            raise ValueError("lags: needs at least one loss")
        sources = recurrence.read_gradients(losses, states, step_list)
    matrix = np.array([_norms(recurrence.carry_back(read, step_list, max_lag)) for read in sources], dtype=np.float64)
    kept.value = matrix.copy()
    return matrix


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
    return [per_param[0] for per_param in recurrence.step_contributions(states, [param])[1]]


# ---- a step's numbers split by unit or by batch row ---------------------------------------------

@dataclass(frozen=True, eq=False)
class StepSplit:
    """The step numbers of ``steps`` split into K columns (``steps(loss, states, by=...)``).

    Write delta_t as a (B, D) array: one row per batch row b, the D units of the state's parts side by
    side (h[0..H-1], then c[0..H-1] for an LSTM's (h, c); a state without a batch axis is one row).
    delta_t and J_t are the step view's (``diagnostics.steps``), so the split is a partition:
    the squares of a row of ``grad_norm`` add up to ||delta_t||^2.

    - ``by="unit"``: column k is unit k of the state, its norm taken over the B batch rows.
    - ``by="row"``: column k is batch row k, its norm taken over the D units.

    ``grad_norm[t, k]``: ||delta_t[column k]||, the gradient that reached that unit (row) of s_t from
    outside step t; nan where no gradient reached s_t (None in ``steps``). ``gain[t, k]``:
    ||(J_t^T delta_t)[column k]|| / ||delta_t[column k]||, what arrived at that unit (row) of
    s_{t-1} through step t over what it held at s_t; nan for t = 0 and where the column of delta_t is 0
    (0 across a cut, as in ``steps``). For a cell whose step does not mix units (IndRNN: J_t diagonal)
    a unit's gain is exactly its own factor u_k relu'(a_t,k); in a cell that mixes units, a unit also
    receives from the others, so its gain is a ratio, not that unit's growth. Rows likewise: for a cell
    that does not mix batch rows the gain of row b is the gain of row b's own sequence. With one loss at
    the end and no hook, J_t^T delta_t is delta_{t-1}, so a column's gains multiply to
    grad_norm[0, k] / grad_norm[T, k] wherever the column holds a gradient. No bound is split: ||J_t||_2
    belongs to the whole map, not to one of its units.

    ``labels``: the K column names ("h[3]", "c[3]", "unit 3" for an unnamed one-part state, "row 2").
    ``parts``: (name, first column, width) of each part of the state (``by="unit"``; one entry
    "rows" for ``by="row"``). ``cuts[t]``: the graph was cut at the start of step t. ``multi_read``:
    the loss reads several states (delta_t then mixes their gradients, as in ``steps``).
    """

    by: str
    labels: tuple
    grad_norm: np.ndarray
    gain: np.ndarray
    parts: tuple
    cuts: tuple
    multi_read: bool

    @property
    def length(self) -> int:
        """T, the number of steps."""
        return self.grad_norm.shape[0] - 1


def _part_names(parts) -> list[str]:
    """Each part's name without its time step (h_3 -> h), or None where a part has none."""
    return [re.sub(r"_?\d+$", "", p.name) or None if p.name else None for p in parts]


def split_steps(parts, by: str) -> StepSplit:
    """``StepSplit`` of states [s_0, ..., s_T] from their ``recurrence.bptt(..., rows=True)`` parts, ``by``
    "unit" or "row" (the class doc); ``steps(loss, states, by=by)`` asks it."""
    last, batch = parts.parts[-1], parts.batch
    shapes = {tuple(p.shape for p in state) for state in parts.parts}
    if len(shapes) > 1:
        raise ValueError(f"steps(by={by!r}): every state needs the same shapes to split it by {by}, got "
                         + " and ".join(map(str, sorted(shapes))))
    if by == "row" and batch is None:
        raise ValueError(f"steps(by='row'): the state has no batch axis (parts of shapes "
                         f"{', '.join(str(p.shape) for p in last)}); by='unit' splits it")
    rows = batch or 1
    axis = 0 if by == "unit" else 1  # the axis a column's norm is taken over
    width = sum(p.size for p in last) // rows
    count = width if by == "unit" else rows
    grad_norm = np.full((len(parts.parts), count), np.nan)
    gain = np.full((len(parts.parts), count), np.nan)
    deltas, sent_back = parts.rows  # (each laid out as rows: one per batch row, the parts' units side by side)
    for t, delta in enumerate(deltas):
        if delta is None:
            continue
        grad_norm[t] = np.linalg.norm(delta, axis=axis)
        if t >= 1 and sent_back[t] is not None:
            sent = np.linalg.norm(sent_back[t], axis=axis)
            held = grad_norm[t] > 0.0
            gain[t, held] = sent[held] / grad_norm[t, held]
    if by == "unit":
        names = _part_names(last)
        if not all(names):
            names = ["unit"] if len(last) == 1 else [f"part {k}" for k in range(1, len(last) + 1)]
        spans, start = [], 0
        for name, part in zip(names, last):
            spans.append((name, start, part.size // rows))
            start += part.size // rows
        labels = tuple(f"unit {j}" if name == "unit" else f"{name}[{j}]" for name, first, size in spans
                       for j in range(size))
    else:
        spans, labels = [("rows", 0, rows)], tuple(f"row {b}" for b in range(rows))
    multi_read = parts.reads is not None and sum(any(np.any(p) for p in r) for r in parts.reads) > 1
    return StepSplit(by, labels, grad_norm, gain, tuple(spans), tuple(parts.cuts), bool(multi_read))

"""The numbers of backpropagation through time, one row per state: what each step did to the gradient.

For states [s_0, s_1, ..., s_T] of an unrolled recurrence (``rnn(..., return_states=True)``):

- Step t is the map F_t: s_{t-1} -> s_t made of the recorded nodes between the two states. For an LSTM
  the state is the pair (h, c), taken as one vector.
- delta_t is the gradient that reached s_t from outside step t: from step t+1 and from any loss that
  reads s_t. For an Elman RNN that is dL/dh_t; for an LSTM it leaves out the path c_t -> h_t, which
  belongs to step t itself. After a clipping hook on s_t, it is the clipped gradient (what flowed on).
- J_t = dF_t/ds_{t-1}, the parts of s_{t-1} taken as independent inputs.
- ``grad_norm`` = ||delta_t||; ``gain`` = ||J_t^T delta_t|| / ||delta_t||, what step t actually did to
  the gradient that crossed it; ``bound`` = ||J_t||_2, the most it could have done to any gradient.

By the chain rule, J_t^T delta_t is the gradient step t sends back to s_{t-1}. With one loss at the
last step and no clipping, that is all of delta_{t-1}, so the gains multiply exactly:

    gain_1 * gain_2 * ... * gain_T = ||delta_0|| / ||delta_T||.

Every bound is at least its gain; for a non-normal W_hh the bounds can all exceed 1 while the
gradient vanishes, which is why the pictures show the gains.

With a loss that reads several states (a loss at every step), delta_t mixes the gradients of all the
reads after t, and the gains no longer say how far any one of them reaches: ``direct`` says which states
the loss reads, and the verdict then follows the last read alone (``tinygrad_rnn.diagnostics.lags``
splits the loss by read). ``contribution`` = ||C_t||, what step t gave the weights (all parameters used
inside the steps, as one vector): gains near 1 with C_t near 0 is a frozen cell, not a stable one.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tinygrad_rnn import recurrence
from tinygrad_rnn.clip import grad_norm
from tinygrad_rnn.diagnostics import split
from tinygrad_rnn.ops import raw
from tinygrad_rnn.recurrence import ClipRecord, StepGraph, state_parts

__all__ = [
    "StepRow", "steps", "verdict", "gradient_factor", "reads", "weight_share", "step_jacobian", "step_jacobian_norms",
    "gradient_norms", "clip_events", "VANISHING", "EXPLODING", "FROZEN", "CONTRIBUTION_LIMIT",
]

# The verdict's thresholds (pictures print them): a gradient scaled by less than VANISHING or more than
# EXPLODING over the run; a run whose steps give the weights less than FROZEN x the gradient they carry.
VANISHING, EXPLODING, FROZEN = 1e-3, 1e3, 1e-6
# ||C_t|| is computed for runs up to this many steps: carrying each step's share back through what all
# steps share (the input projection a built-in cell makes once for every step) costs O(T) a step.
CONTRIBUTION_LIMIT = 2000


@dataclass(frozen=True)
class StepRow:
    """The numbers of state s_t and of step t (the step that made it), as defined in the module doc.

    ``t``: the state's position in the list. ``grad_norm``: ||delta_t|| (None: no gradient reached it).
    ``gain``: ||J_t^T delta_t|| / ||delta_t|| (None for t = 0 or without a gradient). ``bound``:
    ||J_t||_2 over the whole batch state (None for t = 0); ``bound_method`` says how: ``"rows"``, the
    largest over batch rows, exact when the step does not mix rows (checked on every step with a
    random probe), or ``"full"``, the Jacobian of the whole batch at once (a step that mixes rows,
    such as batch norm). ``clip``: the record of a clipping hook on s_t, if any. ``cut``: the graph was
    cut on purpose at the start of step t (a detached state, as in truncated BPTT): nothing crosses it.
    ``direct``: ||d_t||, the gradient the loss sent to s_t directly, not through a later step (0 where
    it does not read s_t; None without a loss, or when the loss reads a node inside a step).
    ``last_read``: ||delta_t|| of what the loss reads at its last read state alone (equal to
    ``grad_norm`` with one read and no hook; None without a loss).
    ``contribution``: ||C_t|| for all the parameters used inside step t as one vector (None for t = 0,
    without a loss, when no parameter is used inside the steps, or beyond CONTRIBUTION_LIMIT steps).
    """

    t: int
    grad_norm: float | None
    gain: float | None
    bound: float | None
    bound_method: str | None
    clip: ClipRecord | None
    cut: bool
    direct: float | None = None
    last_read: float | None = None
    contribution: float | None = None


def _norm(parts) -> float:
    return math.sqrt(sum(grad_norm(p) ** 2 for p in parts))


def _delta(state, step: StepGraph | None) -> list:
    """delta_t per part: the part's ``.grad`` less what its own step sent it (None: no gradient)."""
    delta = []
    for p in state_parts(state):
        within = None if step is None or p.grad is None else step.within(p)
        delta.append(None if p.grad is None else raw(p.grad) if within is None else raw(p.grad) - within)
    return delta


def _fill(delta: list, fallback: list | None, parts) -> list | None:
    """Parts without a gradient take ``fallback`` (what the next step sent), else zeros; a state
    where no part holds one has no delta at all (None)."""
    if all(d is None for d in delta) and fallback is None:
        return None
    return [d if d is not None else fallback[k] if fallback is not None else np.zeros_like(raw(p.data))
            for k, (d, p) in enumerate(zip(delta, parts))]


# ---- the step Jacobian, from the step's own nodes ----------------------------------------------

def _batch_size(parts) -> int | None:
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


def _flat(grads, batch: int | None) -> np.ndarray:
    """The gradients reaching the input parts as one row per batch row (or one row)."""
    rows = batch or 1
    if len(grads) == 1:
        return np.asarray(grads[0], dtype=np.float64).reshape(rows, -1)
    return np.concatenate([np.asarray(g, dtype=np.float64).reshape(rows, -1) for g in grads], axis=1)


def step_jacobian_matrix(step: StepGraph, check_rows: bool = True) -> tuple[np.ndarray, str]:
    """(J, method): J of shape (B, out, in), the Jacobian of each batch row (``"rows"``), or
    (1, out, in) for the whole state (``"full"``, also used when the state has no batch axis).

    One vector-Jacobian product per output unit, seeded in every batch row at once; that gives each
    row's own Jacobian only if the step does not mix rows. ``check_rows`` tests that with one more
    product, seeded with random numbers R: if rows do not mix, (J^T R)_b = J_b^T R_b for every row b,
    and any mixing breaks the equality (for random R, almost surely). Then the whole-batch Jacobian
    is built instead, one product per entry of the state.
    """
    batch = _batch_size(step.outputs + step.inputs)
    if batch is not None:
        jacobian = _rows(step, batch)
        if batch == 1 or not check_rows or not step.connected or not _mixes_rows(step, jacobian, batch):
            return jacobian, "rows"
    return _rows(step, None), "full"


def _rows(step: StepGraph, batch: int | None) -> np.ndarray:
    width = sum(p.size for p in step.inputs) // (batch or 1)
    rows = [_flat(step.vjp(seeds), batch) for seeds in _unit_seeds(step.outputs, batch)]
    return np.stack(rows, axis=1) if rows else np.zeros((batch or 1, 0, width))


def _mixes_rows(step: StepGraph, jacobian: np.ndarray, batch: int) -> bool:
    rng = np.random.default_rng(0)
    probe = [rng.standard_normal(p.shape).astype(np.result_type(p.data)) for p in step.outputs]
    actual = _flat(step.vjp(probe), batch)
    flat_probe = _flat(probe, batch)
    predicted = np.einsum("bj,bjd->bd", flat_probe, jacobian)
    eps = max(np.finfo(np.result_type(p.data)).eps for p in (*step.outputs, *step.inputs))
    scale = np.linalg.norm(actual) + np.linalg.norm(predicted)
    return bool(np.linalg.norm(actual - predicted) > math.sqrt(eps) * scale)


def _spectral_norm(jacobian: np.ndarray) -> float:
    if jacobian.size == 0:
        return 0.0
    if not np.isfinite(jacobian).all():  # an SVD of NaN or inf cannot converge: the bound is unknown
        return math.nan
    return float(np.max(np.linalg.norm(jacobian, ord=2, axis=(1, 2))))


# ---- the rows ----------------------------------------------------------------------------------

def _deltas(states: list, step_list: list, every_step: bool = True) -> tuple[list, list]:
    """(deltas, sent): delta_t per state (a list of parts, or None), and sent[t] = J_t^T delta_t,
    what step t sends back to s_{t-1} (for every step, or only step 1 unless ``every_step``)."""
    deltas: list = [None] * len(states)
    sent: list = [None] * len(states)
    for t in range(len(states) - 1, -1, -1):
        parts = state_parts(states[t])
        step = step_list[t - 1] if t >= 1 else None
        # A constant s_0 (zeros) holds no gradient: what step 1 sent it is all it gets.
        fallback = sent[1] if t == 0 and len(states) > 1 else None
        deltas[t] = _fill(_delta(states[t], step), fallback, parts)
        if step is not None and deltas[t] is not None and (every_step or t == 1):
            sent[t] = step.vjp(deltas[t])
    return deltas, sent


def delta_norms(states: Sequence) -> list[float | None]:
    """||delta_t|| per state, the ``grad_norm`` of ``steps`` without its gains and bounds (one
    vector-Jacobian product instead of one per state unit and step: cheap enough for every
    training iteration, as ``Monitor`` asks)."""
    states = list(states)
    deltas, _ = _deltas(states, recurrence.step_graphs(states), every_step=False)
    return [None if delta is None else _norm(delta) for delta in deltas]


def steps(loss, states: Sequence) -> list[StepRow]:
    """One StepRow per state of ``states = [s_0, ..., s_T]`` (module doc), from the gradients the
    last ``loss.backward()`` left. ``loss`` may be None (bounds only, or gradients from elsewhere).

    Linear in T: each step's nodes are found by one walk that meets every recorded node once, and
    its numbers come from vector-Jacobian products over those nodes only.

    A constant s_0 (the zeros ``RNN`` starts from) holds no gradient; delta_0 is then what step 1
    sends it. Only recorded ops count, and an op whose inputs are all constants records nothing:
    for a cell that computes a part of the next state from the constant s_0 alone (``0.9 * m``),
    pass an s_0 that needs a gradient to see step 1 whole.
    """
    states = list(states)
    if not states:
        raise ValueError("steps: needs the states [s_0, ..., s_T], got an empty list")
    if loss is not None and getattr(loss, "requires_grad", False) and loss.grad is None:
        raise ValueError("steps: the loss has no gradient yet; call loss.backward() first")
    for t, state in enumerate(states):
        try:
            state_parts(state)
        except TypeError as error:
            raise TypeError(f"steps: states[{t}]: {error} (pass rnn(inputs, return_states=True)[1])") from None
    widths = {len(state_parts(s)) for s in states}
    if len(widths) > 1:
        raise ValueError(f"steps: every state needs the same number of parts, got {sorted(widths)}")
    step_list = recurrence.step_graphs(states)
    deltas, sent = _deltas(states, step_list)
    direct, last_read, given = _reads(loss, states, step_list)
    rows = []
    for t, state in enumerate(states):
        norm = None if deltas[t] is None else _norm(deltas[t])
        gain = bound = method = None
        cut = False
        if t >= 1:
            step = step_list[t - 1]
            if norm:
                gain = _norm(sent[t]) / norm
            jacobian, method = step_jacobian_matrix(step)
            bound, cut = _spectral_norm(jacobian), step.cut
        clip = next((r for r in map(recurrence.clip_record, state_parts(state)) if r is not None), None)
        rows.append(StepRow(t, norm, gain, bound, method, clip, cut, direct[t], last_read[t], given[t]))
    return rows


def _reads(loss, states: list, step_list: list) -> tuple[list, list, list]:
    """Per state: ||d_t|| (what the loss reads there directly), ||delta_t|| of the last read alone,
    and ||C_t|| for every parameter used inside the steps (None where it cannot be said)."""
    nothing = [None] * len(states)
    if loss is None or not getattr(loss, "requires_grad", False):
        return nothing, nothing, nothing
    given = nothing
    if len(step_list) <= CONTRIBUTION_LIMIT:
        params, per_step = split.step_contributions(states, None, step_list)
        given = [None] + [_norm(c) if params else None for c in per_step]
    try:
        (read,) = split.read_gradients([loss], states, step_list)
    except ValueError:  # the loss reads a node inside a step: which states it reads cannot be said
        return nothing, nothing, given
    direct = [_norm(parts) for parts in read]
    held = [t for t, d in enumerate(direct) if d > 0.0]
    last_read = [0.0] * len(states)
    if held:
        last = held[-1]  # the last read alone: its direct gradient, carried back step by step
        only = [read[t] if t == last else [np.zeros_like(p) for p in read[t]] for t in range(len(read))]
        last_read = split.carry_back(only, step_list, None)
    return direct, last_read, given


def reads(rows: Sequence[StepRow]) -> list[int]:
    """The states the loss reads directly (``direct`` > 0): [T] for one loss at the end."""
    return [r.t for r in rows if r.direct]


def gradient_factor(rows: Sequence[StepRow]) -> tuple[float | None, int, int]:
    """(factor, first, last): how much the gradient was scaled on its way back from the last state
    holding one (``last``) to the first (``first``).

    With one read (a loss at the end): the product of the gains of the steps between them, times
    norm_after/norm_before wherever a clip fired on the way; cut steps are left out (no gradient
    crosses them on purpose). Then factor = ||delta_first|| / ||delta_last||. When the loss reads
    several states the gains mix them, so the factor follows the last read alone instead
    (``last_read``, without hooks): ``last`` is that state. None when fewer than two states hold a
    nonzero gradient."""
    if len(reads(rows)) > 1 and all(r.last_read is not None for r in rows):
        held = [r.t for r in rows if r.last_read]
        if len(held) < 2:
            return None, (held or [0])[0], (held or [0])[-1]
        first, last = held[0], held[-1]
        return rows[first].last_read / rows[last].last_read, first, last
    held = [r.t for r in rows if r.grad_norm]
    if len(held) < 2:
        return None, (held or [0])[0], (held or [0])[-1]
    first, last = held[0], held[-1]
    by_t = {r.t: r for r in rows}
    factor = 1.0
    for t in range(first + 1, last + 1):
        row = by_t[t]
        if row.cut:
            continue
        factor *= row.gain if row.gain is not None else 0.0  # a zero gradient inside: nothing got through
        factor *= _clip_scale(by_t[t - 1])
    return factor, first, last


def weight_share(rows: Sequence[StepRow]) -> float | None:
    """The most any step gave the weights for the gradient it carried: max over t of ||C_t|| /
    ||delta_t|| (None when unknown). Below FROZEN, the steps pass the gradient on without using their
    weights: a frozen cell, whatever its gains."""
    shares = [r.contribution / r.grad_norm for r in rows if r.contribution is not None and r.grad_norm]
    return max(shares) if shares else None


def _clip_scale(row: StepRow) -> float:
    """||delta|| after / before the clip that fired on this state (1 if none). The hook clipped one
    part of the state (h): the other parts (an LSTM's c) kept their gradient, so the whole state's
    norm before is sqrt(||delta||^2 - after^2 + before^2) of the clipped part."""
    clip = row.clip
    if clip is None or not clip.fired or not row.grad_norm:
        return 1.0
    whole_before = math.sqrt(max(row.grad_norm**2 - clip.norm_after**2 + clip.norm_before**2, 0.0))
    return row.grad_norm / whole_before if whole_before > 0 else 1.0


def verdict(rows: Sequence, vanishing: float = VANISHING, exploding: float = EXPLODING) -> str:
    """"vanishing", "exploding", "stable", "frozen" (or "no gradient") for the rows of ``steps``.

    Rule: factor = ``gradient_factor(rows)``, how much a gradient was scaled on its way back through
    the span (clips included; with several reads, the last read's own gradient): factor <
    ``vanishing`` (1e-3) -> "vanishing"; factor > ``exploding`` (1e3) or any non-finite gain, norm or
    contribution -> "exploding"; else "stable", unless no step gave its weights more than FROZEN (1e-6) of the
    gradient it carried (``weight_share``): then "frozen". So a run clipped at every step, whose
    gradient is held at the clip norm, is "stable"; per-step losses cannot make a last loss that
    reaches back whole look vanishing; and a GRU whose update gate is stuck at 1 is "frozen".

    A plain list of gradient norms ||delta_t|| in time order (the older form) is deprecated: it is
    read as the rows of one loss at the end without clipping, where gain_t = ||delta_{t-1}|| /
    ||delta_t||, and judged by the same rule (so ``[None, None]`` is "no gradient" either way).
    """
    rows = list(rows)
    if rows and not isinstance(rows[0], StepRow):
        warnings.warn("verdict: pass the rows of diagnostics.steps(loss, states); a list of gradient norms is "
                      "deprecated (it is right only for one loss at the end, without clipping)",
                      DeprecationWarning, stacklevel=2)
        # The rows the norms stand for with one loss at the end and no clipping: there
        # delta_{t-1} = J_t^T delta_t, so gain_t = ||delta_{t-1}|| / ||delta_t|| (inf past the float range).
        norms = [None if n is None else float(n) for n in rows]
        rows = [StepRow(t, norm, norms[t - 1] / norm if t >= 1 and norm and norms[t - 1] is not None else None,
                        None, None, None, False) for t, norm in enumerate(norms)]
    # A NaN or inf anywhere (a gain, a norm, what a step gave the weights) is an overflow on the way back.
    numbers = [x for r in rows for x in (r.grad_norm, r.gain, r.contribution) if x is not None]
    if any(not math.isfinite(x) for x in numbers):
        return "exploding"
    factor, first, last = gradient_factor(rows)
    if all(r.grad_norm is None for r in rows):
        return "no gradient"
    # An earlier state that got exactly nothing, with no cut on the way, means the gradient
    # vanished to zero (a saturated or dead unit) before it got there.
    for row in rows[:first]:
        if row.grad_norm == 0.0 and not any(r.cut for r in rows[row.t + 1:last + 1]):
            return "vanishing"
    if factor is None:
        return "stable"
    if factor < vanishing:
        return "vanishing"
    if factor > exploding:
        return "exploding"
    share = weight_share(rows)
    if share is not None and share < FROZEN:
        return "frozen"
    return "stable"


# ---- single numbers, for scripts ---------------------------------------------------------------

def step_jacobian(h_t, h_prev) -> np.ndarray:
    """dh_t/dh_prev from the recorded graph: (B, H, H_prev) per batch row for (B, H) states,
    (H, H_prev) for unbatched ones. Zero where h_prev does not reach h_t (a cut). For states that
    are tuples, the parts are joined along the last axis."""
    step = recurrence.step_graph(h_t, h_prev)
    parts = state_parts(h_t) + state_parts(h_prev)
    if len({p.ndim for p in parts}) > 1 or (parts[0].ndim == 2 and _batch_size(parts) is None):
        shapes = " and ".join(str(p.shape) for p in parts)
        raise ValueError(f"step_jacobian: states of shapes {shapes} are neither all (B, H) with one batch "
                         f"size nor all (H,) or scalars")
    jacobian, method = step_jacobian_matrix(step, check_rows=False)
    return jacobian if _batch_size(parts) is not None else jacobian[0]


def step_jacobian_norms(states: Sequence) -> list[float]:
    """||J_t||_2 for t = 1..T (the ``bound`` of each row; 0.0 across a cut), without gradients."""
    return [row.bound for row in steps(None, states)[1:]]


def gradient_norms(states: Sequence) -> list[float | None]:
    """||.grad|| of each state (all parts together) after backward; None where none arrived. For
    the gradient from outside each step (delta_t), read ``grad_norm`` from ``steps``."""
    return [None if all(p.grad is None for p in state_parts(s)) else
            _norm([p.grad for p in state_parts(s) if p.grad is not None]) for s in states]


def clip_events(states: Sequence) -> list[dict | None]:
    """Per state, what a clip hook did (``{"norm_before", "norm_after", "fired"}``) or None."""
    records = [next((r for r in map(recurrence.clip_record, state_parts(s)) if r is not None), None) for s in states]
    return [None if r is None else dataclasses.asdict(r) for r in records]

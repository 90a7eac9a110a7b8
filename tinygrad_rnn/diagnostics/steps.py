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
gradient vanishes, which is why the pictures show the gains. ``steps(..., bound="power")`` takes
||J_t||_2 by a few power iterations instead of an SVD: an estimate between the gain and the norm, from
below, so never a bound (``bound_text`` says which a row holds).

Every per-step part (the step maps, delta_t, J_t^T delta_t, J_t, what the loss reads, what each step
gives the weights) comes from one call, ``tinygrad_rnn.recurrence.bptt``; this module turns them into
numbers.

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
from tinygrad_rnn.diagnostics import reuse
from tinygrad_rnn.diagnostics.split import SPLITS, StepSplit, split_steps
from tinygrad_rnn.ops import raw
from tinygrad_rnn.recurrence import ClipRecord, StepGraph, state_parts

__all__ = [
    "StepRow", "steps", "verdict", "gradient_factor", "reads", "weight_share", "step_jacobian", "step_jacobian_norms",
    "gradient_norms", "clip_events", "delta_norms", "power_estimate", "bound_text", "VANISHING", "EXPLODING", "FROZEN",
    "CONTRIBUTION_LIMIT", "POWER_ITERATIONS",
]

# The verdict's thresholds (pictures print them): a gradient scaled by less than VANISHING or more than
# EXPLODING over the run; a run whose steps give the weights less than FROZEN x the gradient they carry.
VANISHING, EXPLODING, FROZEN = 1e-3, 1e3, 1e-6
# ||C_t|| is computed for runs up to this many steps: carrying each step's share back through what all
# steps share (the input projection a built-in cell makes once for every step) costs O(T) a step.
CONTRIBUTION_LIMIT = 2000
# steps(bound="power") takes ||J_t||_2 by this many power iterations (each two products with a step's
# Jacobian, against an SVD): an estimate from below that stops short where the top two singular values
# are close, which is why it is never called a bound.
POWER_ITERATIONS = 20


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
    With ``steps(bound="power")``, ``bound`` is an estimate of ||J_t||_2 from below, not a bound:
    ``bound_method`` is then ``"power"`` and ``iterations`` says how many power iterations gave it.
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
    iterations: int | None = None


# Norms square their numbers: past 2^SAFE (about 3e150) a square could overflow to inf, below 2^-SAFE it
# could fall to 0. Inside that range a norm is computed as it always was; outside it, every number is
# first scaled by a power of two (exact), so a finite gradient of 1e200 has a finite norm, and the
# scaled result is what the unscaled one would be with no overflow.
SAFE = 500


def _power_of_two(largest: float, safe: int = SAFE) -> int:
    """The exponent e to scale by 2^-e before squaring numbers up to ``largest`` (0: no scaling, inside
    2^±safe)."""
    if largest == 0.0 or not math.isfinite(largest) or 2.0**-safe <= largest <= 2.0**safe:
        return 0
    return math.frexp(largest)[1]


def _root_sum(parts, squares) -> float:
    """sqrt(sum of ``squares(a)`` over the parts as float64 arrays), scaled by a power of two first where
    the squares would overflow or vanish (``_power_of_two``; with no scaling, the same floats as before)."""
    arrays = [np.asarray(raw(p), dtype=np.float64) for p in parts]
    e = _power_of_two(max((float(np.max(np.abs(a))) for a in arrays if a.size), default=0.0))
    if e:
        arrays = [np.ldexp(a, -e) for a in arrays]
    return math.ldexp(math.sqrt(sum(squares(a) for a in arrays)), e)


def _norm(parts) -> float:
    return _root_sum(parts, lambda a: grad_norm(a) ** 2)


def _norm64(parts) -> float:
    """The lag view's norm of a delta (``recurrence.delta_norm``), so that ``last_read`` is its number
    (scaled, as ``_norm``, where squares would overflow)."""
    return _root_sum(parts, lambda a: float(np.sum(np.square(a))))


def _flat(parts, rows: int) -> np.ndarray:
    """A delta as one row per batch row (the layout of the Jacobian's rows)."""
    return np.concatenate([np.asarray(p, dtype=np.float64).reshape(rows, -1) for p in parts], axis=1)


# ---- the bound --------------------------------------------------------------------------------

def _spectral_norm(jacobian: np.ndarray) -> float:
    if jacobian.size == 0:
        return 0.0
    if not np.isfinite(jacobian).all():  # an SVD of NaN or inf cannot converge: the bound is unknown
        return math.nan
    return float(np.max(np.linalg.norm(jacobian, ord=2, axis=(1, 2))))


def power_estimate(jacobian: np.ndarray, start: np.ndarray | None, iterations: int = POWER_ITERATIONS) -> float:
    """||J||_2 estimated by ``iterations`` power iterations on J J^T, for J of shape (B, out, in) (the
    largest over B), each row started from ``start`` (B, out), the gradient delta_t that crossed the
    step (a fixed vector where a row got none).

    Power iteration approaches the norm from below: with u_0 = delta_t / ||delta_t|| and u_{k+1} =
    J J^T u_k / ||J J^T u_k||, the numbers ||J^T u_k|| never decrease (the moments x^T (J J^T)^p x are
    log-convex in p), start at the gain ||J^T delta_t|| / ||delta_t|| and end at most at ||J||_2. So
    the result lies between the gain and the true norm (it is never taken below the first, which
    rounding could otherwise do): an estimate, not a bound. It reaches the norm when delta_t has a part
    along the top singular vector, at the rate (sigma_2 / sigma_1)^(2k).
    """
    if jacobian.size == 0:
        return 0.0
    if not np.isfinite(jacobian).all():
        return math.nan
    e = _power_of_two(float(np.max(np.abs(jacobian))), SAFE // 2)
    if e:  # ||J J^T u|| squares J's numbers twice: scaled by a power of two (exact), the estimate scaled back
        return math.ldexp(power_estimate(np.ldexp(jacobian, -e), start, iterations), e)
    best = 0.0
    for row, matrix in enumerate(jacobian):
        u = None if start is None else np.asarray(start[row], dtype=np.float64)
        if u is None or not np.any(u):
            u = np.ones(matrix.shape[0])
        u = np.ldexp(u, -_power_of_two(float(np.max(np.abs(u)))))  # so that its norm is finite
        u = u / np.linalg.norm(u)
        estimate = np.linalg.norm(matrix.T @ u)
        for _ in range(iterations):
            back = matrix.T @ u
            forward = matrix @ back
            size = np.linalg.norm(forward)
            if size == 0.0:
                break
            u = forward / size
            estimate = max(estimate, float(np.linalg.norm(matrix.T @ u)))
        best = max(best, float(estimate))
    return best


def bound_text(rows: Sequence[StepRow]) -> str:
    """What the ``bound`` numbers of these rows are, in the words a legend should use."""
    methods = {r.bound_method for r in rows if r.bound_method is not None}
    if "power" in methods:
        counts = sorted({r.iterations for r in rows if r.bound_method == "power"})
        k = " or ".join(str(c) for c in counts)
        return (f"‖J_t‖₂ ≈ by {k} power iterations from δ_t, ≥ the gain: an estimate from below, between the "
                "gain and the norm, not a bound")
    if not methods:
        return "no ‖J_t‖₂ computed"
    return "‖J_t‖₂ by an SVD of each step's Jacobian: the bound, the most the step could stretch any gradient"


# ---- the rows ----------------------------------------------------------------------------------

def delta_norms(states: Sequence) -> list[float | None]:
    """||delta_t|| per state, the ``grad_norm`` of ``steps`` without its gains and bounds (one
    vector-Jacobian product instead of one per state unit and step: cheap enough for every
    training iteration, as ``Monitor`` asks)."""
    states = list(states)
    if not states:
        return []
    parts = recurrence.bptt(states, every_step=False, caller="delta_norms")
    return [None if delta is None else _norm(delta) for delta in parts.deltas]


def steps(loss, states: Sequence, *, bound: str | None = "svd", iterations: int = POWER_ITERATIONS,
          by: str | None = None) -> list[StepRow] | StepSplit:
    """One StepRow per state of ``states = [s_0, ..., s_T]`` (module doc), from the gradients the
    last ``loss.backward()`` left. ``loss`` may be None (bounds only, or gradients from elsewhere).
    Inside ``with diagnostics.reuse_numbers():`` the rows asked for again are given back, not computed.

    ``by="unit"`` or ``by="row"``: the numbers split by unit of the state or by batch row instead, as
    arrays of shape (T + 1, units) or (T + 1, B) (a ``StepSplit``: ``grad_norm`` and ``gain``, no
    bound). ``steps(loss, states, by="unit").grad_norm`` shows which units carry the gradient back.

    ``bound``: how ``bound`` is taken from each step's Jacobian: ``"svd"``, ||J_t||_2 exactly (a
    bound); ``"power"``, ``iterations`` power iterations started from delta_t (``power_estimate``: an
    estimate between the gain and ||J_t||_2, never a bound); None, not at all (the verdict needs no
    bound, and each step's Jacobian costs one vector-Jacobian product per state unit).
    ``bound_text(rows)`` says which in words.

    Linear in T: each step's nodes are found by one walk that meets every recorded node once, and
    its numbers come from vector-Jacobian products over those nodes only (``recurrence.bptt`` computes
    every per-step part; this function turns them into numbers).

    A constant s_0 (the zeros ``RNN`` starts from) holds no gradient; delta_0 is then what step 1
    sends it. Only recorded ops count, and an op whose inputs are all constants records nothing:
    for a cell that computes a part of the next state from the constant s_0 alone (``0.9 * m``),
    pass an s_0 that needs a gradient to see step 1 whole.
    """
    if by not in (None, *SPLITS):
        raise ValueError(f"steps: by must be one of {', '.join(map(repr, SPLITS))} or None, got {by!r}")
    if bound not in ("svd", "power", None):
        raise ValueError(f"steps: bound must be 'svd', 'power' or None, got {bound!r}")
    if bound == "power" and (not isinstance(iterations, int) or iterations < 0):
        raise ValueError(f"steps: iterations must be a whole number >= 0, got {iterations!r}")
    states = list(states)
    kept = reuse.slot("steps", loss, states, by or bound, iterations)
    if kept.value is not None:
        return kept.value if by else list(kept.value)
    parts = recurrence.bptt(states, loss, jacobians=bound is not None and by is None,
                            weights=by is None and len(states) - 1 <= CONTRIBUTION_LIMIT, rows=by is not None,
                            caller="steps" if by is None else f"steps(by={by!r})")
    if by is not None:  # the same numbers, split by unit or by batch row (a StepSplit: no bound)
        split = kept.value = split_steps(parts, by)
        return split
    nothing = [None] * len(states)
    direct = nothing if parts.reads is None else [_norm(read) for read in parts.reads]
    last_read = nothing if parts.last_read is None else [_norm64(delta) for delta in parts.last_read]
    given = nothing if parts.weights is None else [None] + [_norm(c) if parts.params else None for c in parts.weights]
    rows = []
    for t, delta in enumerate(parts.deltas):
        norm = None if delta is None else _norm(delta)
        gain = estimate = method = None
        cut, counted = False, None
        if t >= 1:
            if norm:
                gain = _norm(parts.sent[t]) / norm
            cut = parts.cuts[t]
            if bound == "svd":
                jacobian, method = parts.jacobians[t]
                estimate = _spectral_norm(jacobian)
            elif bound == "power":
                jacobian, layout = parts.jacobians[t]
                start = None if delta is None else _flat(delta, jacobian.shape[0] if layout == "rows" else 1)
                estimate = power_estimate(jacobian, start, iterations)
                if gain is not None and math.isfinite(estimate):
                    estimate = max(estimate, gain)
                method, counted = "power", iterations
        rows.append(StepRow(t, norm, gain, estimate, method, parts.clips[t], cut, direct[t], last_read[t], given[t],
                            counted))
    kept.value = tuple(rows)
    return rows


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
    e = _power_of_two(max(row.grad_norm, clip.norm_after, clip.norm_before))  # squares without overflow
    whole, after, before = (math.ldexp(x, -e) for x in (row.grad_norm, clip.norm_after, clip.norm_before))
    whole_before = math.ldexp(math.sqrt(max(whole**2 - after**2 + before**2, 0.0)), e)
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

    "no gradient": no state got any (every ||delta_t|| None or exactly 0, as for a loss multiplied by
    0): there is nothing to call stable or vanishing.
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
    if not any(r.grad_norm for r in rows):  # every ||delta_t|| None or exactly 0: nothing to judge
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
    batch = recurrence.batch_size(parts)
    if len({p.ndim for p in parts}) > 1 or (parts[0].ndim == 2 and batch is None):
        shapes = " and ".join(str(p.shape) for p in parts)
        raise ValueError(f"step_jacobian: states of shapes {shapes} are neither all (B, H) with one batch "
                         f"size nor all (H,) or scalars")
    jacobian, method = step.jacobian(check_rows=False)
    return jacobian if batch is not None else jacobian[0]


def step_jacobian_matrix(step: StepGraph, check_rows: bool = True) -> tuple[np.ndarray, str]:
    """Deprecated: ``step.jacobian(check_rows)`` (``tinygrad_rnn.recurrence.StepGraph.jacobian``)."""
    warnings.warn("diagnostics.steps.step_jacobian_matrix(step) moved: use step.jacobian() "
                  "(tinygrad_rnn.recurrence.StepGraph.jacobian)", DeprecationWarning, stacklevel=2)
    return step.jacobian(check_rows)


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

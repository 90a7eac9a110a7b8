"""Per-step numbers of an unrolled recurrence: step Jacobians, their norms, gradient norms, clip
events and a one-word verdict.

The states are the hidden outputs [h_0, h_1, ..., h_T] of an unrolled recurrence. By the chain rule

    dL/dh_{t-1} = (dh_t/dh_{t-1})^T dL/dh_t    (plus any loss read directly from h_{t-1}),

so the gradient that reaches step 0 from step T has been multiplied by T step Jacobians. If their
spectral norms stay below 1 it shrinks geometrically (vanishing); above 1 it can grow geometrically
(exploding). ``step_jacobian_norms`` measures those factors; ``gradient_norms`` the result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tinygrad_rnn.autograd import subgraph
from tinygrad_rnn.clip import grad_norm
from tinygrad_rnn.functional import grad
from tinygrad_rnn.value import Value

# ---- Jacobians between consecutive states -----------------------------------------------------

def step_jacobian(h_t: Value, h_prev: Value) -> np.ndarray:
    """dh_t/dh_prev from the recorded graph, one vector-Jacobian product per hidden unit.

    J[i, k] = d h_t[i] / d h_prev[k]. Seeding backward with the unit vector e_i gives e_i^T J, row i.
    For batched states (B, H) the seed has a 1 in unit i of every batch row at once, which gives row i
    of every batch element's Jacobian (B, H, H_prev) in one pass, provided the cell does not mix batch
    rows (batch norm would). Unbatched (H,) states give (H, H_prev); scalars (1, 1). Zero where h_prev
    does not reach h_t, or is marked ``notes["truncated"]`` (a cut, as in truncated BPTT). A constant
    h_prev (a zero initial state) is differentiated all the same: the graph keeps its edges.
    """
    if h_t.ndim == 2 and h_prev.ndim == 2 and h_t.shape[0] == h_prev.shape[0]:
        batch, (units, inputs) = h_t.shape[0], (h_t.shape[1], h_prev.shape[1])
    elif h_t.ndim <= 1 and h_prev.ndim <= 1:
        batch, units, inputs = None, max(h_t.size, 1), max(h_prev.size, 1)
    else:
        raise ValueError(
            f"step_jacobian: states of shapes {h_t.shape} and {h_prev.shape} are neither both (B, H) "
            f"with the same batch size nor both (H,) or scalars"
        )
    jacobian = np.zeros((units, inputs) if batch is None else (batch, units, inputs))
    if (h_prev.notes or {}).get("truncated"):  # cut on purpose by truncated BPTT
        return jacobian
    # One walk serves every seed; hooks stay out: unit seeds are not gradients to clip or record.
    order = subgraph([h_t], [h_prev])
    if not any(node is h_prev for node in order):
        return jacobian
    for i in range(units):
        seed = np.zeros(h_t.shape, dtype=h_t.dtype) if h_t.shape else 1.0
        if h_t.shape:
            seed[..., i] = 1.0
        (row,) = grad([h_t], [h_prev], [seed], order=order, hooks=False)
        if batch is None:
            jacobian[i] = np.ravel(row)
        else:
            jacobian[:, i, :] = row
    return jacobian


def _spectral_norm(jacobians: np.ndarray) -> float:
    """The largest singular value over a stack of matrices: sqrt of the top eigenvalue of J J^T
    (a symmetric eigenproblem, cheaper than an SVD and as exact)."""
    stack = jacobians.reshape((-1,) + jacobians.shape[-2:])
    gram = stack @ np.swapaxes(stack, -1, -2)
    return float(math.sqrt(max(float(np.max(np.linalg.eigvalsh(gram))), 0.0)))


def step_jacobian_norms(states: Sequence[Value]) -> list[float]:
    """For states [h_0, ..., h_T], ||dh_t/dh_{t-1}||_2 for t = 1..T (the largest over the batch),
    0.0 where the path is cut. The product of the first k bounds how much a gradient can grow over
    k steps back in time."""
    norms = []
    for t in range(1, len(states)):
        jacobian = step_jacobian(states[t], states[t - 1])
        norms.append(_spectral_norm(jacobian) if np.any(jacobian) else 0.0)
    return norms


# ---- what the last backward pass left behind ---------------------------------------------------

def gradient_norms(states: Sequence[Value]) -> list[float | None]:
    """||dL/dh_t|| per state from ``.grad`` after backward; None where no gradient arrived."""
    return [None if state.grad is None else grad_norm(state.grad) for state in states]


def clip_events(states: Sequence[Value]) -> list[dict | None]:
    """Per state, the record a clip hook left (``{"norm_before", "norm_after", "fired"}``) or None."""
    return [(state.notes or {}).get("clip") for state in states]


def verdict(norms: Sequence[float | None], vanishing: float = 1e-3, exploding: float = 1e3) -> str:
    """"vanishing", "exploding" or "stable" from per-step gradient norms in time order (t = 0 first,
    as ``gradient_norms`` gives them; reverse a ``clip.record`` list, which backward fills T first).

    Rule: ignoring None, ratio = ||dL/dh_first|| / ||dL/dh_last||, how much the gradient grew on its
    way back through the whole span. ratio < ``vanishing`` (1e-3) -> "vanishing"; ratio > ``exploding``
    (1e3), or any non-finite norm -> "exploding"; else "stable". Fewer than two norms -> "stable".
    Meant for a loss read at the end (as in the adding problem): a loss at every step feeds every
    h_t directly and hides the decay; look at ``step_jacobian_norms`` then.
    """
    values = [float(n) for n in norms if n is not None]
    if any(not math.isfinite(n) for n in values):
        return "exploding"
    if len(values) < 2:
        return "stable"
    first, last = values[0], values[-1]
    if last == 0.0:
        return "stable" if first == 0.0 else "exploding"
    ratio = first / last
    if ratio < vanishing:
        return "vanishing"
    if ratio > exploding:
        return "exploding"
    return "stable"

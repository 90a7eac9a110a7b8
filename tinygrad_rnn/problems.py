"""Small problems whose answers are known, for experiments with gradients.

**The cliff** (Pascanu, Mikolov & Bengio 2013, "On the difficulty of training recurrent neural
networks", arXiv:1211.5063): one recurrent unit with no input,

    x_t = w * sigmoid(x_{t-1}) + b,    t = 1..T,    x_0 = 0.5,    L = (x_T - 0.7)^2

(the paper's setting has T = 50). For w > 4 the map x -> w sigmoid(x) + b can have two stable fixed
points with an unstable one between them; which one x_T settles on depends on (w, b). Where the
parameters cross the border between the two basins, x_T jumps from one attractor to the other: the
loss surface has a wall (a cliff), and its gradient there is the product of T factors
w sigmoid'(x_t) that each exceed 1 near the unstable fixed point, so it is huge on a strip whose
width shrinks geometrically with T (about 1e-6 wide in b for T = 50 and w = 8, 0.02 for T = 10).
One plain gradient step from that strip throws the parameters far away; clipping the gradient's
norm (the paper's Algorithm 1, ``clip.clip_grad_norm_``) keeps the step short.

Every function here takes numbers, numpy arrays or Values for w and b. Arrays are computed
elementwise, so a whole grid of (w, b) goes through the recurrence at once; with Values that need
gradients, one backward pass over ``loss.sum()`` gives dL/dw and dL/db at every grid point, since
the points do not interact.
"""

from __future__ import annotations

import numpy as np

from tinygrad_rnn.autograd import no_grad, scope
from tinygrad_rnn.value import Value, as_value

__all__ = ["cliff_states", "cliff_loss", "cliff_loss_grid", "cliff_loss_and_grad", "cliff_loss_slice"]

STEPS, X0, TARGET = 50, 0.5, 0.7


def cliff_states(w, b, steps: int = STEPS, x0: float = X0) -> list[Value]:
    """[x_0, x_1, ..., x_T] of x_t = w sigmoid(x_{t-1}) + b, step t recorded in ``scope("t=<t>")``
    (so step views and diagnostics see the time steps); x_0 is a constant."""
    if not (isinstance(steps, (int, np.integer)) and steps >= 1):
        raise ValueError(f"cliff: steps must be a positive whole number, got {steps!r}")
    w, b = as_value(w), as_value(b)
    x = Value(np.full(np.broadcast_shapes(w.shape, b.shape), x0, dtype=np.float64) if w.shape or b.shape
              else float(x0), requires_grad=False, name="x_0")
    states = [x]
    for t in range(1, steps + 1):
        with scope(f"t={t}"):
            x = w * x.sigmoid() + b
        states.append(x)
    return states


def cliff_loss(w, b, steps: int = STEPS, x0: float = X0, target: float = TARGET) -> Value:
    """L = (x_T - target)^2, elementwise for arrays of (w, b)."""
    diff = cliff_states(w, b, steps, x0)[-1] - target
    return diff * diff


def cliff_loss_grid(ws, bs, steps: int = STEPS, x0: float = X0, target: float = TARGET) -> np.ndarray:
    """The loss at every (w, b) of a grid: an array of shape (len(bs), len(ws)), row i for bs[i]
    (the layout of matplotlib's ``pcolormesh(ws, bs, grid)`` and ``contour``)."""
    ws, bs = np.asarray(ws, dtype=np.float64), np.asarray(bs, dtype=np.float64)
    if ws.ndim != 1 or bs.ndim != 1:
        raise ValueError(f"cliff_loss_grid: ws and bs must be 1-D, got shapes {ws.shape} and {bs.shape}")
    with no_grad():
        return np.asarray(cliff_loss(ws[None, :], bs[:, None], steps, x0, target).data)


def cliff_loss_and_grad(w, b, steps: int = STEPS, x0: float = X0, target: float = TARGET):
    """(L, dL/dw, dL/db) at the points (w, b) (numbers or arrays of one shape), by one backward
    pass through the unrolled recurrence: floats for numbers, arrays for arrays."""
    w_data, b_data = np.broadcast_arrays(np.asarray(w, dtype=np.float64), np.asarray(b, dtype=np.float64))
    scalar = w_data.ndim == 0
    w_value = Value(float(w_data) if scalar else w_data.copy(), name="w")
    b_value = Value(float(b_data) if scalar else b_data.copy(), name="b")
    loss = cliff_loss(w_value, b_value, steps, x0, target)
    (loss if scalar else loss.sum()).backward()
    if scalar:
        return float(loss.data), float(w_value.grad), float(b_value.grad)
    return np.asarray(loss.data), np.asarray(w_value.grad), np.asarray(b_value.grad)


def cliff_loss_slice(start, end, num: int = 401, steps: int = STEPS, x0: float = X0, target: float = TARGET):
    """The loss along the straight line from ``start`` = (w, b) to ``end``: returns
    (s, points, losses) with s in [0, 1] the position on the line, ``points`` (num, 2) the (w, b)
    there, and ``losses`` (num,)."""
    start, end = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
    if start.shape != (2,) or end.shape != (2,):
        raise ValueError(f"cliff_loss_slice: start and end are (w, b) pairs, got {start.tolist()} and {end.tolist()}")
    s = np.linspace(0.0, 1.0, num)
    points = start + s[:, None] * (end - start)
    with no_grad():
        losses = np.asarray(cliff_loss(points[:, 0], points[:, 1], steps, x0, target).data)
    return s, points, losses

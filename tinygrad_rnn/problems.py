"""Small problems whose answers are known, for experiments with gradients.

**The cliff** (Pascanu, Mikolov & Bengio 2013, "On the difficulty of training recurrent neural
networks", arXiv:1211.5063): one recurrent unit with no input,

    x_t = w * sigmoid(x_{t-1}) + b,    t = 1..T,    x_0 = 0.5,    L = (x_T - 0.7)^2

(the paper's setting has T = 50). For w > 4 the map x -> w sigmoid(x) + b can have two stable fixed
points with an unstable one between them; which one x_T settles on depends on (w, b). Where the
parameters cross the border between the two basins, x_T jumps from one attractor to the other: the
loss surface has a wall (a cliff), and its gradient there is the product of T factors
w sigmoid'(x_t) that each exceed 1 near the unstable fixed point, so it is huge on a strip whose
width shrinks geometrically with T. For long runs the wall sits at b = x_0 - w sigmoid(x_0), where
x_0 itself is the unstable fixed point, and each step multiplies a distance from it by
lambda = w sigmoid'(x_0): the strip narrows by 1/lambda per step. ``cliff_wall`` measures it: at
w = 8 (lambda = 1.88) the b over which x_T climbs from 10% to 90% of the way between the two
attractors spans 0.012 for T = 10 and 1.3e-13 for T = 50.
One plain gradient step from that strip throws the parameters far away; clipping the gradient's
norm (the paper's Algorithm 1, ``clip.clip_grad_norm_``) keeps the step short.

Every function here takes numbers, numpy arrays or Values for w and b. Arrays are computed
elementwise, so a whole grid of (w, b) goes through the recurrence at once; with Values that need
gradients, one backward pass over ``loss.sum()`` gives dL/dw and dL/db at every grid point, since
the points do not interact.
"""

from __future__ import annotations

import math

import numpy as np

from tinygrad_rnn.autograd import no_grad, scope
from tinygrad_rnn.value import Value, as_value

__all__ = ["cliff_states", "cliff_loss", "cliff_loss_grid", "cliff_loss_and_grad", "cliff_loss_slice",
           "cliff_wall"]

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


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _last_state(w: float, b: float, steps: int, x0: float) -> float:
    x = x0
    for _ in range(steps):
        x = w * _sigmoid(x) + b
    return x


def _bisect(increasing, level: float, low: float, high: float) -> float:
    """The point in [low, high] where the increasing function crosses ``level``, to the last bit."""
    while True:
        middle = low + (high - low) / 2
        if not low < middle < high:
            return middle
        if increasing(middle) < level:
            low = middle
        else:
            high = middle


def cliff_wall(w: float, steps: int = STEPS, x0: float = X0, levels=(0.1, 0.9)) -> dict:
    """Where the wall crosses the line of this w, and how wide it is, measured by bisection in b.

    The map x -> w sigmoid(x) + b has x0 as its unstable fixed point at b_inf = x0 - w sigmoid(x0),
    with a low and a high stable fixed point (the attractors) on either side when
    lambda = w sigmoid'(x0) > 1. x_T is increasing in b (every step is increasing in x and in b),
    so it crosses each level x_low + f (x_high - x_low), f in ``levels``, at exactly one b; the
    wall's ``width`` is the distance in b between the two crossings (10% to 90% of the jump by
    default). Bisection runs until the bracket stops shrinking in float64, so a width of a few
    hundred ulps of b (1e-13 at T = 50, w = 8) carries an error of about one ulp per end.

    Returns a dict: ``b`` (the crossings, one per level), ``width``, ``b_inf``, ``lambda_``,
    ``attractors`` (x_low, x_high at b_inf).
    """
    w, x0 = float(w), float(x0)
    if not (isinstance(steps, (int, np.integer)) and steps >= 1):
        raise ValueError(f"cliff_wall: steps must be a positive whole number, got {steps!r}")
    slope = w * _sigmoid(x0) * (1 - _sigmoid(x0))
    if not slope > 1:
        raise ValueError(f"cliff_wall: w = {w:g} gives lambda = w sigmoid'(x0) = {slope:.3g} <= 1: x0 is never an "
                         "unstable fixed point, so no wall narrows with T here")
    b_inf = x0 - w * _sigmoid(x0)
    attractors = []
    for side in (-1.0, 1.0):  # any start on one side of x0 settles on that side's attractor
        x = x0 + side
        for _ in range(10_000):
            x, previous = w * _sigmoid(x) + b_inf, x
            if x == previous:
                break
        attractors.append(float(x))
    low, high = attractors
    reach = (high - low) + 1.0  # after one step x_1 = w sigmoid(x0) + b: every level is crossed within this
    crossings = []
    for fraction in levels:
        level = low + fraction * (high - low)
        lo_b, hi_b = b_inf - reach, b_inf + reach
        if not _last_state(w, lo_b, steps, x0) < level <= _last_state(w, hi_b, steps, x0):
            raise ValueError(f"cliff_wall: level {level:.3g} is not crossed between b = {lo_b:.3g} and {hi_b:.3g}")
        crossings.append(_bisect(lambda b: _last_state(w, b, steps, x0), level, lo_b, hi_b))
    return {"b": crossings, "width": crossings[-1] - crossings[0], "b_inf": b_inf, "lambda_": slope,
            "attractors": (low, high)}

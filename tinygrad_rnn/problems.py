"""Small problems whose answers are known, for experiments with gradients: the cliff of one recurrent
unit, and three tasks of memory over long time lags that every paper on recurrent cells reports.

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

**Long time lags** (``AddingProblem``, ``CopyMemory``, ``TemporalOrder``, below the cliff): each task
makes batches ``(inputs, targets)``, says which outputs its loss reads (the last step, or every
step: ``every_step``), computes the loss from a readout's predictions, and knows the loss of the
trivial answer that remembers nothing (``baseline_loss``): a model below it has learned to remember.
"""

from __future__ import annotations

import math

import numpy as np

from tinygrad_rnn import nn
from tinygrad_rnn.autograd import no_grad, scope
from tinygrad_rnn.data import adding_problem, as_rng, one_hot, temporal_order
from tinygrad_rnn.functional import stack
from tinygrad_rnn.value import Value, as_value

__all__ = ["cliff_states", "cliff_loss", "cliff_loss_grid", "cliff_loss_and_grad", "cliff_loss_slice",
           "cliff_wall", "Task", "AddingProblem", "CopyMemory", "TemporalOrder", "copy_memory"]

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


# ---- long time lags -----------------------------------------------------------------------------

class Task:
    """A sequence task: ``inputs, targets = task.batch(batch_size, rng)``, inputs (T, B, input_size)
    floats; a readout of ``output_size`` maps hidden states to predictions; ``task.loss(predictions,
    targets)``. ``predictions(hiddens, readout)`` applies the readout to what the loss reads: the
    last hidden state, (B, output_size), or every one (``every_step``), (T, B, output_size).
    ``baseline_loss`` is the expected loss of the best answer that ignores what is to be remembered."""

    seq_len: int
    input_size: int
    output_size: int
    every_step = False

    def batch(self, batch_size: int, rng) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def loss(self, predictions, targets) -> Value:
        raise NotImplementedError

    def baseline_loss(self) -> float:
        raise NotImplementedError

    def baseline_predictions(self, batch_size: int) -> np.ndarray:
        """The trivial answer as predictions (its loss is ``baseline_loss``, exactly or on average)."""
        raise NotImplementedError

    def predictions(self, hiddens: list, readout) -> Value:
        return readout(stack(hiddens)) if self.every_step else readout(hiddens[-1])

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class AddingProblem(Task):
    """The adding problem (Hochreiter & Schmidhuber 1997, "Long short-term memory", Neural
    Computation 9(8), experiment 4; the ``"le2015"`` form of Le, Jaitly & Hinton 2015, "A simple way
    to initialize recurrent networks of rectified linear units", arXiv:1504.00941): each step is a
    pair (value, marker); two steps are marked, and the target at the end is the sum of their values
    (``tinygrad_rnn.data.adding_problem`` draws them). Loss: the mean squared error of the last
    step's prediction (output_size 1).

    Baseline: predicting the mean sum whatever the input. For ``"le2015"`` values are U(0, 1): the
    mean is 1 and the loss Var(X1 + X2) = 2/12 = 0.167, the line of the IRNN paper. For
    ``"hochreiter"`` values are U(-1, 1), mean 0, each of mean square 1/3, but a marked first step
    carries 0: X1 sits there with probability 1/10, X2 with 0.9 / (T/2 - 1) (X1 is elsewhere and X2
    drew the first of its T/2 - 1 places), so E[(X1 + X2)^2] = (0.9 + 1 - 0.9 / (T/2 - 1)) / 3, about
    0.63.
    """

    input_size, output_size = 2, 1

    def __init__(self, seq_len: int, variant: str = "le2015"):
        self.seq_len, self.variant = int(seq_len), variant
        adding_problem(1, self.seq_len, 0, variant)  # refuses a bad length or variant now, not at the first batch

    def batch(self, batch_size: int, rng):
        return adding_problem(batch_size, self.seq_len, rng, self.variant)

    def loss(self, predictions, targets) -> Value:
        predictions = as_value(predictions)
        if not isinstance(targets, Value):  # targets in the predictions' type: a float32 model's loss stays float32
            targets = np.asarray(targets, predictions.dtype)
        return nn.mse_loss(predictions.reshape(predictions.shape[0]), targets)

    def baseline_loss(self) -> float:
        if self.variant == "le2015":
            return 2 / 12
        return (0.9 + 1 - 0.9 / (self.seq_len // 2 - 1)) / 3

    def baseline_predictions(self, batch_size: int) -> np.ndarray:
        return np.full((batch_size, 1), 1.0 if self.variant == "le2015" else 0.0)


def copy_memory(batch_size: int, delay: int, rng, length: int = 10, symbols: int = 8):
    """Sequences of the copy memory task (see ``CopyMemory``): ``inputs`` and ``targets``, integer ids
    of shape (delay + 2 length, B). Id 0 is the blank, 1..symbols the symbols to copy, symbols + 1 the
    delimiter."""
    if delay < 1 or length < 1 or symbols < 1 or batch_size < 1:
        raise ValueError(f"copy_memory: delay, length, symbols and batch_size must be positive, got {delay}, "
                         f"{length}, {symbols}, {batch_size}")
    rng = as_rng(rng)
    total = delay + 2 * length
    message = rng.integers(1, symbols + 1, size=(length, batch_size))
    inputs = np.zeros((total, batch_size), dtype=np.int64)
    targets = np.zeros((total, batch_size), dtype=np.int64)
    inputs[:length] = message
    inputs[length + delay - 1] = symbols + 1  # the delimiter: "now repeat it"
    targets[-length:] = message
    return inputs, targets


class CopyMemory(Task):
    """The copy memory task (Arjovsky, Shah & Bengio 2016, "Unitary evolution recurrent neural
    networks", ICML, section 4.1; after Hochreiter & Schmidhuber 1997): read ``length`` (10) symbols
    drawn from ``symbols`` (8), wait ``delay`` steps of blanks, and after the delimiter (at step
    length + delay) write the symbols out again, in order, over the last ``length`` steps. Inputs are
    one-hot over blank, symbols and delimiter (symbols + 2 = 10 classes); the targets are blanks
    until the last ``length`` steps. Loss: the cross entropy of every step's prediction, averaged over
    the delay + 2 length steps and the batch.

    Baseline (the paper's): blanks wherever they are certain, then a uniform guess among the
    symbols: length ln(symbols) / (delay + 2 length), 10 ln 8 / (T + 20).
    """

    every_step = True

    def __init__(self, delay: int, length: int = 10, symbols: int = 8):
        self.delay, self.length, self.symbols = int(delay), int(length), int(symbols)
        self.seq_len = self.delay + 2 * self.length
        self.input_size = self.output_size = self.symbols + 2

    def batch(self, batch_size: int, rng):
        ids, targets = copy_memory(batch_size, self.delay, rng, self.length, self.symbols)
        return one_hot(ids, self.input_size), targets

    def loss(self, predictions, targets) -> Value:
        return nn.cross_entropy(as_value(predictions), targets)

    def baseline_loss(self) -> float:
        return self.length * math.log(self.symbols) / self.seq_len

    def baseline_predictions(self, batch_size: int) -> np.ndarray:
        certain = -1e9  # a logit whose class has probability 0 to the last bit
        logits = np.full((self.seq_len, batch_size, self.output_size), certain)
        logits[: -self.length, :, 0] = 0.0  # blank, surely
        logits[-self.length :, :, 1 : self.symbols + 1] = 0.0  # one of the symbols, uniformly
        return logits


class TemporalOrder(Task):
    """The temporal order problem (Hochreiter & Schmidhuber 1997, experiment 6a and, with
    ``relevant=3``, 6b): X or Y at ``relevant`` far-apart positions among random distractors; the
    class is the order they came in (XX, XY, YX, YY), to be told at the last step
    (``tinygrad_rnn.data.temporal_order`` draws them). Inputs one-hot over 8 symbols; loss: the cross
    entropy of the last step's prediction over 2^relevant classes.

    Baseline: the uniform guess, ln(2^relevant) = ln 4 = 1.386 (the classes are equally likely).
    """

    input_size = 8

    def __init__(self, seq_len: int, relevant: int = 2):
        self.seq_len, self.relevant = int(seq_len), int(relevant)
        self.output_size = 2**self.relevant
        temporal_order(1, self.seq_len, 0, self.relevant)  # refuses a bad length now

    def batch(self, batch_size: int, rng):
        symbols, labels = temporal_order(batch_size, self.seq_len, rng, self.relevant)
        return one_hot(symbols, self.input_size), labels

    def loss(self, predictions, targets) -> Value:
        return nn.cross_entropy(as_value(predictions), targets)

    def baseline_loss(self) -> float:
        return math.log(self.output_size)

    def baseline_predictions(self, batch_size: int) -> np.ndarray:
        return np.zeros((batch_size, self.output_size))

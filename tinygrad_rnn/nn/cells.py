"""Recurrent cells: one time step, ``new_state = cell(x_t, state)``, with PyTorch's parameter names,
shapes, gate order and equations, so weights move between the two frameworks as numpy arrays.

A state is a Value (RNNCell, GRUCell) or a tuple ``(h, c)`` (LSTMCell); ``hidden_of(state)`` is the
hidden output h either way. Inputs are batch-first, x_t (B, I) and h (B, H), or unbatched (I,), (H,).
Every weight starts as U(-1/sqrt(H), 1/sqrt(H)) (PyTorch's default).

There is no backward code here: a cell is a few primitives, and backpropagation through time is the
backward pass over the chain of cells that ``RNN`` unrolls.

Gates are computed inside a scope named after them (``scope("forget gate")``) and their outputs are
named as in the equations (``f``, ``c``, ``h``), so pictures can show which edge is the forget gate's.
"""

from __future__ import annotations

import math

import numpy as np

from tinygrad_rnn.autograd import scope
from tinygrad_rnn.nn.init import generator, size
from tinygrad_rnn.nn.module import Module
from tinygrad_rnn.ops import shape_of
from tinygrad_rnn.value import Value, as_value

__all__ = ["RNNCellBase", "RNNCell", "LSTMCell", "GRUCell", "hidden_of"]


def _named(value: Value, name: str) -> Value:
    value.name = name
    return value


def _rows_times(x, weight_t: Value, bias) -> Value:
    """x weight_t + bias over the last axis of x, with any leading axes flattened into one."""
    x = as_value(x)
    lead = x.shape[:-1]
    # Every size written out: with an empty batch, -1 could stand for any size, and numpy refuses it.
    product = (x.reshape(math.prod(lead), x.shape[-1]) if len(lead) > 1 else x) @ weight_t
    product = product if bias is None else product + bias
    return product.reshape(*lead, product.shape[-1]) if len(lead) > 1 else product


def hidden_of(state):
    """The hidden output of a state: the state itself, or the first entry of a tuple such as (h, c)."""
    return state[0] if isinstance(state, (tuple, list)) else state


class RNNCellBase(Module):
    """Parameters ``weight_ih`` (G H, I), ``weight_hh`` (G H, H), ``bias_ih`` and ``bias_hh`` (G H,),
    where G is the number of gates stacked along the first axis (1 for RNNCell, 4 LSTM, 3 GRU)."""

    gates = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, rng=None, dtype=np.float64):
        where = type(self).__name__
        input_size, hidden_size = size(input_size, "input_size", where), size(hidden_size, "hidden_size", where, 1)
        self.input_size, self.hidden_size = input_size, hidden_size
        rng, bound = generator(rng), 1.0 / math.sqrt(hidden_size)
        rows = self.gates * hidden_size

        def uniform(*shape):
            return Value(rng.uniform(-bound, bound, shape).astype(dtype))

        self.weight_ih = uniform(rows, input_size)
        self.weight_hh = uniform(rows, hidden_size)
        self.bias_ih = uniform(rows) if bias else None
        self.bias_hh = uniform(rows) if bias else None

    @property
    def dtype(self):
        return self.weight_hh.dtype

    # A step is split in three. ``shared_terms()`` computes what is the same at every time step (the
    # transposed weights, the summed biases); ``project(shared, x)`` the input's part of the gates,
    # x W_ih^T + b, which does not depend on the state; ``recur(shared, projected, state)`` the rest.
    # Calling the cell does all three; ``RNN`` calls ``shared_terms()`` once per sequence, so the
    # unrolled graph transposes W_hh once and every step's matmul uses that one node (which is also
    # how the picture shows weight sharing: one W_hh^T feeding all T steps, its gradient summed over
    # them), and projects all T inputs with one matmul before step 1, as hand-written BPTT does.

    def shared_terms(self) -> tuple:
        """(W_ih^T, W_hh^T, b_ih + b_hh), or None for the bias sum when there are no biases."""
        bias = None if self.bias_ih is None else self.bias_ih + self.bias_hh
        return self.weight_ih.T, self.weight_hh.T, bias

    def project(self, shared: tuple, x) -> Value:
        """x W_ih^T + (b_ih + b_hh), the input's part of the gates, for inputs of any leading shape:
        (B, I), (I,), or every step at once, (T, B, I) (as one (T B, I) matrix: one matmul)."""
        return _rows_times(x, shared[0], shared[2])

    def recur(self, shared: tuple, projected, state):
        raise NotImplementedError(f"{type(self).__name__}: a cell defines recur(shared, projected, state)")

    def step(self, shared: tuple, x, state):
        """One time step from the raw input x_t."""
        self._check(x, hidden_of(state))
        return self.recur(shared, self.project(shared, x), state)

    def forward(self, x, state=None):
        """One time step: the new state from x_t and the previous state (zeros if None)."""
        return self.step(self.shared_terms(), x, self.initial_state(self._batch_of(x)) if state is None else state)

    def initial_state(self, batch_size: int | None = None, dtype=None):
        """Zeros of shape (batch_size, H), or (H,) for batch_size None; no gradient."""
        shape = (self.hidden_size,) if batch_size is None else (batch_size, self.hidden_size)
        return Value(np.zeros(shape, dtype or self.dtype), requires_grad=False, name="h0")

    def _check(self, x, h) -> None:
        """Shape errors here name the cell and both shapes instead of surfacing from a matmul."""
        xs, hs = shape_of(x), shape_of(h)
        if xs[-1:] != (self.input_size,) or hs[-1:] != (self.hidden_size,) or xs[:-1] != hs[:-1]:
            raise ValueError(
                f"{type(self).__name__}(input_size={self.input_size}, hidden_size={self.hidden_size}): "
                f"x_t has shape {xs} and the state {hs}; expected (B, {self.input_size}) and "
                f"(B, {self.hidden_size}), or ({self.input_size},) and ({self.hidden_size},)"
            )

    def _batch_of(self, x) -> int | None:
        return shape_of(x)[0] if len(shape_of(x)) > 1 else None

    def extra_repr(self) -> str:
        text = f"input_size={self.input_size}, hidden_size={self.hidden_size}"
        return text + ("" if self.bias_ih is not None else ", bias=False")


class RNNCell(RNNCellBase):
    """Elman's cell: h' = f(x W_ih^T + b_ih + h W_hh^T + b_hh), with f chosen by ``nonlinearity``:

        "tanh"        f(a) = tanh(a)                      f'(a) = 1 - f(a)^2, at most 1, near 0 once |a| > 3
        "relu"        f(a) = max(a, 0)                    f'(a) = [a > 0]
        "sigmoid"     f(a) = 1 / (1 + e^-a)               f'(a) = f(a) (1 - f(a)), at most 1/4
        "leaky_relu"  f(a) = a if a > 0 else s a          f'(a) = 1 if a > 0 else s  (s = ``negative_slope``)
        "identity"    f(a) = a                            f'(a) = 1  (a linear RNN)

    PyTorch's RNNCell offers "tanh" and "relu"; the others use PyTorch's function names.

    Backpropagating one step multiplies the gradient by diag(f'(pre)) W_hh: through T steps, by a
    product of T such matrices, which shrinks or grows geometrically (Bengio et al. 1994). A
    saturating f (tanh, sigmoid) makes the diagonal small; a non-saturating one (relu, leaky_relu,
    identity) leaves W_hh alone to decide, which is why those go with a careful W_hh (IRNN: relu with
    W_hh = I)."""

    NONLINEARITIES = ("tanh", "relu", "sigmoid", "leaky_relu", "identity")

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 rng=None, dtype=np.float64, negative_slope: float = 0.01):
        if nonlinearity not in self.NONLINEARITIES:
            names = ", ".join(repr(n) for n in self.NONLINEARITIES)
            raise ValueError(f"RNNCell: nonlinearity must be one of {names}, got {nonlinearity!r}")
        if nonlinearity == "leaky_relu" and not (isinstance(negative_slope, (int, float)) and negative_slope >= 0):
            raise ValueError(f"RNNCell: negative_slope must be a number >= 0, got {negative_slope!r}")
        super().__init__(input_size, hidden_size, bias, rng, dtype)
        self.nonlinearity, self.negative_slope = nonlinearity, float(negative_slope)

    def recur(self, shared: tuple, projected, h) -> Value:
        return self.activation(projected + h @ shared[1])

    def activation(self, pre: Value) -> Value:
        """f(pre), the cell's nonlinearity, as one primitive op (none for "identity")."""
        if self.nonlinearity == "identity":
            return pre
        if self.nonlinearity == "leaky_relu":
            return pre.leaky_relu(self.negative_slope)
        return getattr(pre, self.nonlinearity)()

    def extra_repr(self) -> str:
        text = super().extra_repr() + f", nonlinearity={self.nonlinearity!r}"
        return text + (f", negative_slope={self.negative_slope:g}" if self.nonlinearity == "leaky_relu" else "")


class LSTMCell(RNNCellBase):
    """Hochreiter & Schmidhuber (1997), with a forget gate (Gers et al. 2000). Gates i, f, g, o are
    stacked in that order along the first axis of ``weight_ih`` (4H, I) and ``weight_hh`` (4H, H):

        i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)      (input gate)
        f = sigmoid(W_if x + b_if + W_hf h + b_hf)      (forget gate)
        g = tanh(W_ig x + b_ig + W_hg h + b_hg)         (candidate)
        o = sigmoid(W_io x + b_io + W_ho h + b_ho)      (output gate)
        c' = f * c + i * g,   h' = o * tanh(c')

    The state is the tuple (h, c). The cell path c -> c' is multiplied only by f elementwise, with no
    matrix and no squashing, which is why gradients survive many more steps than in an RNNCell."""

    gates = 4

    def initial_state(self, batch_size: int | None = None, dtype=None) -> tuple[Value, Value]:
        h0 = super().initial_state(batch_size, dtype)
        c0 = super().initial_state(batch_size, dtype)
        c0.name = "c0"
        return h0, c0

    def recur(self, shared: tuple, projected, state) -> tuple[Value, Value]:
        h, c = state
        H = self.hidden_size
        gates = projected + h @ shared[1]
        with scope("input gate"):
            i = _named(gates[..., :H].sigmoid(), "i")
        with scope("forget gate"):
            f = _named(gates[..., H : 2 * H].sigmoid(), "f")
        with scope("cell candidate"):
            g = _named(gates[..., 2 * H : 3 * H].tanh(), "g")
        with scope("output gate"):
            o = _named(gates[..., 3 * H :].sigmoid(), "o")
        c_next = _named(f * c + i * g, "c")
        return _named(o * c_next.tanh(), "h"), c_next


class GRUCell(RNNCellBase):
    """Cho et al. (2014), as PyTorch writes it. Gates r, z, n are stacked in that order along the
    first axis of ``weight_ih`` (3H, I) and ``weight_hh`` (3H, H):

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)       (reset gate)
        z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)       (update gate)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))    (candidate; r gates the recurrent part only)
        h' = (1 - z) * n + z * h

    The path h -> h' through z * h is elementwise, like the LSTM's cell path."""

    gates = 3

    def shared_terms(self) -> tuple:
        """(W_ih^T, W_hh^T): the biases cannot be summed, b_hn sits inside r * (...)."""
        return self.weight_ih.T, self.weight_hh.T

    def project(self, shared: tuple, x) -> Value:
        """x W_ih^T + b_ih, the input's part of the gates (see RNNCellBase.project)."""
        return _rows_times(x, shared[0], self.bias_ih)

    def recur(self, shared: tuple, projected, h) -> Value:
        H = self.hidden_size
        weight_hh_t, bias_hh = shared[1], self.bias_hh
        from_input = projected
        from_hidden = h @ weight_hh_t if bias_hh is None else h @ weight_hh_t + bias_hh
        with scope("reset gate"):
            r = _named((from_input[..., :H] + from_hidden[..., :H]).sigmoid(), "r")
        with scope("update gate"):
            z = _named((from_input[..., H : 2 * H] + from_hidden[..., H : 2 * H]).sigmoid(), "z")
        with scope("new gate"):
            n = _named((from_input[..., 2 * H :] + r * from_hidden[..., 2 * H :]).tanh(), "n")
        return _named((1.0 - z) * n + z * h, "h")

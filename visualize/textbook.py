"""The built-in cells written as a textbook writes one time step, for the pictures of ``tinygrad-rnn render``.

nn's cells compute a step the fast way (``RNNCellBase.shared_terms``): W^T made once, every input
projected by one matmul before step 1, step t reading its row, the two biases summed once. Drawn, that
shows transposes, a hoisted projection, row reads and ``bias_ih + bias_hh``. Here one step is the
equation itself, on column vectors (a state is H x B, an input I x B), with the cell's own numbers:

    RNN   a_t = W_ih x_t + W_hh h_{t-1} + b,   h_t = tanh(a_t)                       (b = b_ih + b_hh)
    LSTM  a_t = W_ih x_t + W_hh h_{t-1} + b,   i, f, g, o = σ, σ, tanh, σ of a_t's four blocks
          c_t = f * c_{t-1} + i * g,   h_t = o * tanh(c_t)
    GRU   r, z = σ of the first two blocks of (W_ih x_t + b_ih) + (W_hh h_{t-1} + b_hh)
          n = tanh(W_in x_t + b_in + r * (W_hn h_{t-1} + b_hn)),   h_t = (1 - z) * n + z * h_{t-1}

The loss and every gradient equal the fast cell's to rounding (tests/test_textbook_cells.py); the
gradient of b is that of b_ih and of b_hh alike (each enters the sum once). Training and every other
picture keep the fast path.
"""

from __future__ import annotations

import numpy as np

from tinygrad_rnn import nn, recurrence
from tinygrad_rnn.autograd import scope
from tinygrad_rnn.value import Value

__all__ = ["TextbookCell", "EQUATIONS"]

EQUATIONS = {
    "rnn": "h_t = tanh(W_ih x_t + W_hh h_{t−1} + b)",
    "lstm": "a_t = W_ih x_t + W_hh h_{t−1} + b; i, f, g, o = σ, σ, tanh, σ of a_t's blocks; "
            "c_t = f ⊙ c_{t−1} + i ⊙ g; h_t = o ⊙ tanh(c_t)",
    "gru": "r, z = σ(W_i· x_t + b_i· + W_h· h_{t−1} + b_h·); n = tanh(W_in x_t + b_in + r ⊙ (W_hn h_{t−1} + b_hn)); "
           "h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}",
}


def _named(value: Value, name: str) -> Value:
    value.name = name
    return value


def _column(bias: Value, name: str) -> Value:
    return Value(np.array(bias.data)[:, None], name=name)


class TextbookCell(nn.Module):
    """One time step of ``cell`` (an RNNCell with tanh, an LSTMCell or a GRUCell with biases) as its
    equation, with new leaves holding the cell's numbers: ``W_ih``, ``W_hh`` and ``b`` (b_ih + b_hh,
    one column), or for a GRU ``b_ih`` and ``b_hh`` (b_hn sits inside r * (...), so they cannot be
    summed). Called by ``nn.RNN`` as ``cell(x_t, state)`` with x_t of shape (B, I); states are columns
    (H, B), named h_t (and c_t) after the time step nn.RNN's scope gives (called outside one, the cell
    counts its calls from ``initial_state``)."""

    def __init__(self, cell: nn.RNNCellBase):
        if cell.bias_ih is None or getattr(cell, "nonlinearity", "tanh") != "tanh":
            raise ValueError("TextbookCell: a tanh RNNCell, an LSTMCell or a GRUCell, with biases")
        self.kind = {nn.RNNCell: "rnn", nn.LSTMCell: "lstm", nn.GRUCell: "gru"}[type(cell)]
        self.hidden_size = cell.hidden_size
        self.W_ih = Value(np.array(cell.weight_ih.data), name="W_ih")
        self.W_hh = Value(np.array(cell.weight_hh.data), name="W_hh")
        if self.kind == "gru":
            self.b_ih, self.b_hh = _column(cell.bias_ih, "b_ih"), _column(cell.bias_hh, "b_hh")
        else:
            self.b = Value(np.array(cell.bias_ih.data + cell.bias_hh.data)[:, None], name="b")
        self.t = 0

    @property
    def weight_hh(self) -> Value:
        """W_hh under PyTorch's name, as the path view's ``--source weight_hh`` asks for it."""
        return self.W_hh

    def initial_state(self, batch_size: int | None = None):
        """Zero columns (H, B) named h_0 (and c_0); the next call is step 1."""
        self.t = 0

        def zeros(name):
            return Value(np.zeros((self.hidden_size, batch_size or 1), self.W_hh.dtype), requires_grad=False,
                         name=name)

        return (zeros("h_0"), zeros("c_0")) if self.kind == "lstm" else zeros("h_0")

    def forward(self, x, state):
        x = Value(np.asarray(x.data if isinstance(x, Value) else x).reshape(-1, self.W_ih.shape[1]).T,
                  requires_grad=False)
        step = recurrence.time_step(x)  # nn.RNN made the scope of step t; called on its own, count
        self.t = t = step.t if step is not None else self.t + 1
        x.name = f"x_{t}"
        h = nn.hidden_of(state)
        from_input = _named(self.W_ih @ x, f"W_ih x_{t}")
        from_hidden = _named(self.W_hh @ h, f"W_hh h_{t - 1}")
        if self.kind == "gru":
            return self._gru(from_input + self.b_ih, from_hidden + self.b_hh, h, t)
        a = _named(from_input + from_hidden + self.b, f"a_{t}")
        if self.kind == "rnn":
            return _named(a.tanh(), f"h_{t}")
        H, c = self.hidden_size, state[1]
        with scope("input gate"):
            i = _named(a[:H].sigmoid(), "i")
        with scope("forget gate"):
            f = _named(a[H : 2 * H].sigmoid(), "f")
        with scope("cell candidate"):
            g = _named(a[2 * H : 3 * H].tanh(), "g")
        with scope("output gate"):
            o = _named(a[3 * H :].sigmoid(), "o")
        c_next = _named(f * c + i * g, f"c_{t}")
        return _named(o * c_next.tanh(), f"h_{t}"), c_next

    def _gru(self, from_input, from_hidden, h, t):
        H = self.hidden_size
        with scope("reset gate"):
            r = _named((from_input[:H] + from_hidden[:H]).sigmoid(), "r")
        with scope("update gate"):
            z = _named((from_input[H : 2 * H] + from_hidden[H : 2 * H]).sigmoid(), "z")
        with scope("new gate"):
            n = _named((from_input[2 * H :] + r * from_hidden[2 * H :]).tanh(), "n")
        return _named((1.0 - z) * n + z * h, f"h_{t}")

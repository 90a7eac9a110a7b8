"""Two LSTM variants from "LSTM: A Search Space Odyssey": peepholes, and coupled input and forget gates.

Both keep PyTorch's LSTMCell layout, so a reader can set them beside ``nn.LSTMCell``: ``weight_ih``
(G H, I), ``weight_hh`` (G H, H), ``bias_ih`` and ``bias_hh`` (G H,), the gates stacked along the
first axis in the order ``gate_names`` gives.
"""

from __future__ import annotations

import numpy as np

from cells.common import ZooCell


class _StackedGates(ZooCell):
    gate_names: tuple = ()
    state_parts = 2

    def __init__(self, input_size: int, hidden_size: int, rng=None, dtype=np.float64):
        super().__init__(input_size, hidden_size, dtype)
        rng, rows = np.random.default_rng(rng), len(self.gate_names) * hidden_size
        self.weight_ih, self.weight_hh = self.uniform(rng, rows, input_size), self.uniform(rng, rows, hidden_size)
        self.bias_ih, self.bias_hh = self.uniform(rng, rows), self.uniform(rng, rows)

    def gates(self, x, h) -> dict:
        """The pre-activations of every gate, by name: x W_ih^T + b_ih + h W_hh^T + b_hh, split."""
        stacked = x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh
        H = self.hidden_size
        return {name: stacked[..., k * H : (k + 1) * H] for k, name in enumerate(self.gate_names)}


class PeepholeLSTMCell(_StackedGates):
    """The LSTM with peephole connections (Gers & Schmidhuber 2000, "Recurrent nets that time and
    count", IJCNN; as written in Greff, Srivastava, Koutnik, Steunebrink & Schmidhuber 2017, "LSTM: A
    Search Space Odyssey", IEEE TNNLS 28(10); arXiv:1503.04069, section II):

        i  = sigmoid(W_i x + R_i h + p_i * c  + b_i)
        f  = sigmoid(W_f x + R_f h + p_f * c  + b_f)
        g  = tanh(W_g x + R_g h + b_g)
        c' = f * c + i * g
        o  = sigmoid(W_o x + R_o h + p_o * c' + b_o)
        h' = o * tanh(c')

    The gates see the cell itself through the diagonal peepholes ``weight_ci``, ``weight_cf``,
    ``weight_co`` (H,) p_i, p_f, p_o; the output gate sees the new cell c'. The state is (h, c).
    """

    gate_names = ("i", "f", "g", "o")

    def __init__(self, input_size: int, hidden_size: int, rng=None, dtype=np.float64):
        rng = np.random.default_rng(rng)  # (one generator: the base class draws from it first)
        super().__init__(input_size, hidden_size, rng, dtype)
        self.weight_ci, self.weight_cf, self.weight_co = (self.uniform(rng, hidden_size) for _ in range(3))

    def forward(self, x, state):
        h, c = state
        pre = self.gates(x, h)
        i = (pre["i"] + self.weight_ci * c).sigmoid()
        f = (pre["f"] + self.weight_cf * c).sigmoid()
        c_next = f * c + i * pre["g"].tanh()
        o = (pre["o"] + self.weight_co * c_next).sigmoid()
        return o * c_next.tanh(), c_next


class CIFGLSTMCell(_StackedGates):
    """The LSTM with coupled input and forget gates, CIFG (Greff et al. 2017, "LSTM: A Search Space
    Odyssey", IEEE TNNLS 28(10); arXiv:1503.04069, variant CIFG; the GRU's coupling, Cho et al. 2014):

        i  = sigmoid(W_i x + R_i h + b_i)
        f  = 1 - i
        g  = tanh(W_g x + R_g h + b_g)
        o  = sigmoid(W_o x + R_o h + b_o)
        c' = f * c + i * g,    h' = o * tanh(c')

    What is written displaces as much of the cell: one gate fewer, and Greff et al. found no loss in
    performance. Gates i, g, o are stacked in that order (3H rows). The state is (h, c).
    """

    gate_names = ("i", "g", "o")

    def forward(self, x, state):
        h, c = state
        pre = self.gates(x, h)
        i = pre["i"].sigmoid()
        c_next = (1.0 - i) * c + i * pre["g"].tanh()
        return pre["o"].sigmoid() * c_next.tanh(), c_next

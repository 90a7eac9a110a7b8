"""JANET: an LSTM reduced to its forget gate."""

from __future__ import annotations

import numpy as np

from cells.common import ZooCell


class JANETCell(ZooCell):
    """JANET, "just another network" (van der Westhuizen & Lasenby 2018, "The unreasonable
    effectiveness of the forget gate", arXiv:1804.04849), eqs. (8)-(11):

        s  = x W_fx^T + h W_fh^T + b_f
        c~ = tanh(x W_cx^T + h W_ch^T + b_c)
        h' = sigmoid(s) * h + (1 - sigmoid(s - beta)) * c~

    The forget gate alone decides both what is kept and what is written; the input gate is tied to
    it, shifted by ``beta`` (1 in the paper) so that a little is written even when everything is kept.
    h is the cell and the output (no output gate, no tanh on the way out). The paper sets b_f by
    chrono initialisation (``cells.chrono_init``).
    """

    def __init__(self, input_size: int, hidden_size: int, beta: float = 1.0, rng=None, dtype=np.float64):
        super().__init__(input_size, hidden_size, dtype)
        rng = np.random.default_rng(rng)
        self.beta = float(beta)
        self.weight_fx = self.uniform(rng, hidden_size, input_size)
        self.weight_fh = self.uniform(rng, hidden_size, hidden_size)
        self.weight_cx = self.uniform(rng, hidden_size, input_size)
        self.weight_ch = self.uniform(rng, hidden_size, hidden_size)
        self.bias_f = self.uniform(rng, hidden_size)
        self.bias_c = self.uniform(rng, hidden_size)

    def forward(self, x, h):
        s = x @ self.weight_fx.T + h @ self.weight_fh.T + self.bias_f
        candidate = (x @ self.weight_cx.T + h @ self.weight_ch.T + self.bias_c).tanh()
        return s.sigmoid() * h + (1.0 - (s - self.beta).sigmoid()) * candidate

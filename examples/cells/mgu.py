"""MGU: one gate where a GRU has two."""

from __future__ import annotations

import numpy as np

from cells.common import ZooCell


class MGUCell(ZooCell):
    """The minimal gated unit (Zhou, Wu, Zhang & Zhou 2016, "Minimal Gated Unit for Recurrent Neural
    Networks", International Journal of Automation and Computing 13(3); arXiv:1603.09420), eqs. (7)-(9):

        f  = sigmoid(x W_fx^T + h W_fh^T + b_f)                (forget gate)
        h~ = tanh(x W_nx^T + (f * h) W_nh^T + b_n)             (candidate)
        h' = (1 - f) * h + f * h~

    One gate both resets the candidate's view of h and mixes old and new: a GRU whose reset and
    update gates are tied. Where f is near 0 the step copies h and the gradient passes through whole.
    """

    def __init__(self, input_size: int, hidden_size: int, rng=None, dtype=np.float64):
        super().__init__(input_size, hidden_size, dtype)
        rng = np.random.default_rng(rng)
        self.weight_fx = self.uniform(rng, hidden_size, input_size)
        self.weight_fh = self.uniform(rng, hidden_size, hidden_size)
        self.weight_nx = self.uniform(rng, hidden_size, input_size)
        self.weight_nh = self.uniform(rng, hidden_size, hidden_size)
        self.bias_f = self.uniform(rng, hidden_size)
        self.bias_n = self.uniform(rng, hidden_size)

    def forward(self, x, h):
        f = (x @ self.weight_fx.T + h @ self.weight_fh.T + self.bias_f).sigmoid()
        candidate = (x @ self.weight_nx.T + (f * h) @ self.weight_nh.T + self.bias_n).tanh()
        return (1.0 - f) * h + f * candidate

"""IndRNN: every unit recurs on itself only."""

from __future__ import annotations

import numpy as np

import tinygrad_rnn as tg
from cells.common import ZooCell


class IndRNNCell(ZooCell):
    """IndRNN (Li, Li, Cook, Zhu & Gao 2018, "Independently Recurrent Neural Network (IndRNN):
    Building A Longer and Deeper RNN", CVPR; arXiv:1803.04831), eq. (2):

        h' = relu(x W^T + u * h + b)

    ``weight_ih`` W (H, I), ``weight_hh`` u (H,): a vector, so unit j sees only its own past, and
    ``bias_ih`` b (H,). Backpropagating one step multiplies unit j's gradient by u_j [pre_j > 0]:
    over T steps by u_j^T on a unit that stays live, 0 on a unit that dies. The paper keeps
    |u_j| <= 2^(1/T) so no unit explodes, and draws u from U(0, ``recurrent_max``) (1 here).
    """

    def __init__(self, input_size: int, hidden_size: int, recurrent_max: float = 1.0, rng=None, dtype=np.float64):
        super().__init__(input_size, hidden_size, dtype)
        rng = np.random.default_rng(rng)
        self.weight_ih = self.uniform(rng, hidden_size, input_size)
        self.weight_hh = self.uniform(rng, hidden_size, low=0.0, high=recurrent_max)
        self.bias_ih = tg.Value(np.zeros(hidden_size, self._dtype))

    def forward(self, x, h):
        return (x @ self.weight_ih.T + self.weight_hh * h + self.bias_ih).relu()

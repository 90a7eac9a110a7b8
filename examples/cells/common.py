"""What every cell of the zoo shares: sizes, a state of zeros, and PyTorch's default weight draw.

A zoo cell is a plain ``nn.Module`` with ``forward(x, state) -> state`` and
``initial_state(batch_size)``, the contract ``nn.RNN`` unrolls (examples/custom_cell.py shows it
first). Nothing here is a fast path: each cell writes its paper's equations and nothing else.
"""

from __future__ import annotations

import numpy as np

import tinygrad_rnn as tg
from tinygrad_rnn import nn


class ZooCell(nn.Module):
    """``input_size``, ``hidden_size`` and ``dtype``; ``state_parts`` is how many Values make a
    state (1: h; 2: the pair (h, c))."""

    state_parts = 1

    def __init__(self, input_size: int, hidden_size: int, dtype=np.float64):
        self.input_size, self.hidden_size, self._dtype = int(input_size), int(hidden_size), np.dtype(dtype)

    @property
    def dtype(self) -> np.dtype:
        """The parameters' dtype (after ``to(np.float32)`` too: a float64 state would promote the cell)."""
        parameters = self.parameters()
        return parameters[0].dtype if parameters else self._dtype

    def uniform(self, rng: np.random.Generator, *shape, low: float | None = None, high: float | None = None):
        """A parameter drawn from U(low, high), by default PyTorch's U(-1/sqrt(H), 1/sqrt(H))."""
        bound = self.hidden_size**-0.5
        low, high = -bound if low is None else low, bound if high is None else high
        return tg.Value(rng.uniform(low, high, shape).astype(self._dtype))

    def initial_state(self, batch_size: int | None = None):
        shape = (self.hidden_size,) if batch_size is None else (batch_size, self.hidden_size)
        zeros = [tg.Value(np.zeros(shape, self.dtype), requires_grad=False) for _ in range(self.state_parts)]
        return zeros[0] if self.state_parts == 1 else tuple(zeros)

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, hidden_size={self.hidden_size}"

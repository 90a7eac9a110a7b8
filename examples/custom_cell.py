"""A custom recurrent cell works with nn.RNN unchanged: a minimal gated unit (Zhou et al. 2016).

Shows: the cell is a few lines of Values, no backward code; RNN unrolls it, loss.backward() is BPTT,
gradcheck agrees; and its gate keeps gradients alive over 40 steps where a tanh RNNCell's vanish.
Run: python examples/custom_cell.py
"""

import numpy as np

import tinygrad_rnn as tg
from tinygrad_rnn import nn


class MinimalGatedCell(nn.Module):
    """f = sigmoid(x W_fx^T + h W_fh^T + b_f);  n = tanh(x W_nx^T + (f * h) W_nh^T + b_n);
    h' = (1 - f) * h + f * n.  Where f is near 0 the cell copies h: the gradient passes unchanged."""

    def __init__(self, input_size, hidden_size, rng=None):
        rng, bound = np.random.default_rng(rng), hidden_size**-0.5
        self.hidden_size = hidden_size
        for name, shape in [("weight_fx", (hidden_size, input_size)), ("weight_fh", (hidden_size, hidden_size)),
                            ("weight_nx", (hidden_size, input_size)), ("weight_nh", (hidden_size, hidden_size)),
                            ("bias_f", (hidden_size,)), ("bias_n", (hidden_size,))]:
            setattr(self, name, tg.Value(rng.uniform(-bound, bound, shape)))
        self.bias_f.data = self.bias_f.data - 3.0  # start nearly closed, f ~ 0.05: copy h by default

    def initial_state(self, batch_size=None):
        shape = (self.hidden_size,) if batch_size is None else (batch_size, self.hidden_size)
        return tg.Value(np.zeros(shape), requires_grad=False)

    def forward(self, x, h):
        f = (x @ self.weight_fx.T + h @ self.weight_fh.T + self.bias_f).sigmoid()
        n = (x @ self.weight_nx.T + (f * h) @ self.weight_nh.T + self.bias_n).tanh()
        return (1.0 - f) * h + f * n


if __name__ == "__main__":
    steps, batch, size = 40, 4, 16
    x = np.random.default_rng(0).normal(size=(steps, batch, size))
    for cell in (MinimalGatedCell(size, size, rng=1), nn.RNNCell(size, size, rng=1)):
        hiddens, _ = nn.RNN(cell)(x)
        hiddens[-1].sum().backward()  # a loss on the last step only: how far back does it reach?
        norms = [np.linalg.norm(h.grad) for h in hiddens]
        shown = " ".join(f"{norms[t - 1]:.1e}" for t in (1, 10, 20, 30, 40))
        print(f"{type(cell).__name__:>16}: |dL/dh_t| at t = 1, 10, 20, 30, 40: {shown}")
    small = MinimalGatedCell(2, 3, rng=2)
    inputs = tg.Value(np.random.default_rng(3).normal(size=(5, 2, 2)))
    tg.gradcheck(lambda *_: nn.RNN(small)(inputs)[1].sum(), [inputs, *small.parameters()])
    print("gradcheck through 5 unrolled steps of MinimalGatedCell: ok")

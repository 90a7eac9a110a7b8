"""A recurrent cell with batch normalisation (Cooijmans et al. 2016, "Recurrent Batch Normalization",
arXiv:1603.09025), in its Elman form:

    h' = tanh(BN(x W_ih^T; gamma_x) + BN(h W_hh^T; gamma_h) + b),    b = b_ih + b_hh,

    BN(z; gamma) = gamma * (z - mean) / sqrt(var + eps),

with the input and the recurrent terms normalised separately, so that each keeps a scale of its own.
In training, mean and var are the batch's, per unit, computed afresh at every time step: statistics
per time step. The running averages kept for evaluation are per time step too, one row per step up to
``max_steps`` (later steps use the last row), updated as in ``BatchNorm1d``:
running = (1 - momentum) running + momentum batch, the variance unbiased.

Batch statistics couple the rows of a batch: every example's output depends on every other example
at the same step, so a step's Jacobian is one matrix over the whole batch state, not one per row.
``diagnostics.steps`` detects that and computes its bound over the whole batch.

gamma starts at 0.1, the paper's advice: with gamma = 1 the normalised pre-activation has unit
variance and tanh saturates from the start.
"""

from __future__ import annotations

import math

import numpy as np

from tinygrad_rnn.nn.cells import RNNCellBase
from tinygrad_rnn.ops import shape_of
from tinygrad_rnn.value import Value

__all__ = ["BNRNNCell"]


class _Position:
    """Which time step of the current sequence the next ``step`` is (1-based); one per sequence."""

    def __init__(self):
        self.t = 0


class BNRNNCell(RNNCellBase):
    """Parameters ``weight_ih`` (H, I), ``weight_hh`` (H, H), ``bias_ih``, ``bias_hh`` (H,) as in
    RNNCell, plus ``gamma_ih`` and ``gamma_hh`` (H,), the scales of the two normalised terms.
    Buffers ``running_mean_ih``, ``running_var_ih``, ``running_mean_hh``, ``running_var_hh``, each
    (max_steps, H): row t-1 holds step t's statistics.

    Inputs must be batched, (B, I) with B >= 2 in training. ``nn.RNN`` counts the steps of each
    sequence (``shared_terms()`` starts a new count); a direct call ``cell(x, h)`` is a step 1.
    """

    def __init__(self, input_size: int, hidden_size: int, max_steps: int = 100, gamma: float = 0.1,
                 eps: float = 1e-5, momentum: float = 0.1, rng=None, dtype=np.float64):
        if not (isinstance(max_steps, (int, np.integer)) and max_steps >= 1):
            raise ValueError(f"BNRNNCell: max_steps must be a positive whole number, got {max_steps!r}")
        if any(math.isnan(x) for x in (gamma, eps, momentum)):
            raise ValueError(f"BNRNNCell: gamma, eps and momentum must be numbers, got gamma={gamma}, eps={eps}, "
                             f"momentum={momentum}")
        super().__init__(input_size, hidden_size, True, rng, dtype)
        self.max_steps, self.eps, self.momentum = int(max_steps), eps, momentum
        self.gamma_ih = Value(np.full(hidden_size, gamma, dtype))
        self.gamma_hh = Value(np.full(hidden_size, gamma, dtype))
        for term in ("ih", "hh"):
            self.register_buffer(f"running_mean_{term}", np.zeros((max_steps, hidden_size), dtype))
            self.register_buffer(f"running_var_{term}", np.ones((max_steps, hidden_size), dtype))

    def shared_terms(self) -> tuple:
        """(W_ih^T, W_hh^T, b_ih + b_hh, a fresh step count): what every step of one sequence shares."""
        return self.weight_ih.T, self.weight_hh.T, self.bias_ih + self.bias_hh, _Position()

    def step(self, shared: tuple, x, h) -> Value:
        self._check(x, h)
        if len(shape_of(x)) != 2:
            raise ValueError(f"BNRNNCell: batch norm needs batched inputs (B, {self.input_size}), got {shape_of(x)}")
        weight_ih_t, weight_hh_t, bias, position = shared
        position.t += 1
        row = min(position.t, self.max_steps) - 1
        from_input = self._normalise(x @ weight_ih_t, self.gamma_ih, "ih", row)
        from_hidden = self._normalise(h @ weight_hh_t, self.gamma_hh, "hh", row)
        return (from_input + from_hidden + bias).tanh()

    def _normalise(self, z: Value, gamma: Value, term: str, row: int) -> Value:
        """gamma (z - mean) / sqrt(var + eps), per unit: the batch's statistics in training (and an
        update of step ``row``'s running ones), the running statistics of that step in evaluation."""
        means, variances = getattr(self, f"running_mean_{term}"), getattr(self, f"running_var_{term}")
        if self.training:
            count = z.shape[0]
            if count < 2:
                raise ValueError(f"BNRNNCell: training needs a batch of at least 2, got shape {z.shape}")
            mean = z.mean(axis=0, keepdims=True)
            centered = z - mean
            variance = (centered * centered).mean(axis=0, keepdims=True)
            m = self.momentum
            means, variances = means.copy(), variances.copy()
            means[row] = (1 - m) * means[row] + m * np.asarray(mean.data).reshape(-1)
            variances[row] = (1 - m) * variances[row] + m * np.asarray(variance.data).reshape(-1) * count / (count - 1)
            self.register_buffer(f"running_mean_{term}", means)
            self.register_buffer(f"running_var_{term}", variances)
            return centered * (variance + self.eps) ** -0.5 * gamma
        scale = 1.0 / np.sqrt(variances[row] + self.eps)
        return (z - means[row]) * scale * gamma

    def extra_repr(self) -> str:
        return super().extra_repr() + f", max_steps={self.max_steps}"

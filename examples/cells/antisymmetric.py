"""AntisymmetricRNN, gated: a recurrence whose Jacobian's eigenvalues sit near the unit circle."""

from __future__ import annotations

import numpy as np

from cells.common import ZooCell


class GatedAntisymmetricCell(ZooCell):
    """The gated AntisymmetricRNN (Chang, Chen, Haber & Chi 2019, "AntisymmetricRNN: A Dynamical
    System View on Recurrent Neural Networks", ICLR; arXiv:1902.09689), eq. (12):

        A  = W - W^T - gamma I
        z  = sigmoid(A h + V_z x + b_z)
        h' = h + epsilon * z * tanh(A h + V_h x + b_h)

    W - W^T is antisymmetric, so its eigenvalues are imaginary: the ODE dh/dt = tanh(A h + ...) it
    discretises neither grows nor decays, and ``gamma`` (diffusion) moves the eigenvalues slightly
    left so the forward Euler step of size ``epsilon`` stays stable. The Jacobian of a step is
    I + epsilon (...): near the identity, so gradients keep their size over many steps.

    With rows as batch entries, A h is h A^T = h (W^T - W) - gamma h: no identity matrix is built.
    ``weight_hh`` W (H, H), ``weight_zx`` V_z and ``weight_hx`` V_h (H, I), ``bias_z``, ``bias_h`` (H,).
    """

    def __init__(self, input_size: int, hidden_size: int, epsilon: float = 0.1, gamma: float = 0.01, rng=None,
                 dtype=np.float64):
        super().__init__(input_size, hidden_size, dtype)
        rng = np.random.default_rng(rng)
        self.epsilon, self.gamma = float(epsilon), float(gamma)
        self.weight_hh = self.uniform(rng, hidden_size, hidden_size)
        self.weight_zx = self.uniform(rng, hidden_size, input_size)
        self.weight_hx = self.uniform(rng, hidden_size, input_size)
        self.bias_z = self.uniform(rng, hidden_size)
        self.bias_h = self.uniform(rng, hidden_size)

    def forward(self, x, h):
        recurrent = h @ (self.weight_hh.T - self.weight_hh) - self.gamma * h
        z = (recurrent + x @ self.weight_zx.T + self.bias_z).sigmoid()
        return h + self.epsilon * z * (recurrent + x @ self.weight_hx.T + self.bias_h).tanh()

"""PyTorch's documented cell equations in plain numpy, and the step numbers of a recurrence computed
from them by central differences: the independent answers tests compare the framework against.

The framework never sees this file.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sigmoid", "numpy_rnn_cell", "numpy_lstm_cell", "numpy_gru_cell", "numerical_jacobian",
           "reference_steps"]


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def numpy_rnn_cell(p, x, h, nonlinearity="tanh"):
    pre = x @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"]
    return {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0), "sigmoid": sigmoid}[nonlinearity](pre)


def numpy_lstm_cell(p, x, h, c):
    W_ii, W_if, W_ig, W_io = np.split(p["weight_ih"], 4)
    W_hi, W_hf, W_hg, W_ho = np.split(p["weight_hh"], 4)
    b_ii, b_if, b_ig, b_io = np.split(p["bias_ih"], 4)
    b_hi, b_hf, b_hg, b_ho = np.split(p["bias_hh"], 4)
    i = sigmoid(x @ W_ii.T + b_ii + h @ W_hi.T + b_hi)
    f = sigmoid(x @ W_if.T + b_if + h @ W_hf.T + b_hf)
    g = np.tanh(x @ W_ig.T + b_ig + h @ W_hg.T + b_hg)
    o = sigmoid(x @ W_io.T + b_io + h @ W_ho.T + b_ho)
    c_next = f * c + i * g
    return o * np.tanh(c_next), c_next


def numpy_gru_cell(p, x, h):
    W_ir, W_iz, W_in = np.split(p["weight_ih"], 3)
    W_hr, W_hz, W_hn = np.split(p["weight_hh"], 3)
    b_ir, b_iz, b_in = np.split(p["bias_ih"], 3)
    b_hr, b_hz, b_hn = np.split(p["bias_hh"], 3)
    r = sigmoid(x @ W_ir.T + b_ir + h @ W_hr.T + b_hr)
    z = sigmoid(x @ W_iz.T + b_iz + h @ W_hz.T + b_hz)
    n = np.tanh(x @ W_in.T + b_in + r * (h @ W_hn.T + b_hn))
    return (1 - z) * n + z * h


def numerical_jacobian(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d f / d x of a vector function of a flat vector, by central differences (rows: outputs)."""
    columns = []
    for k in range(x.size):
        up, down = x.copy(), x.copy()
        up[k] += eps
        down[k] -= eps
        columns.append((np.ravel(f(up)) - np.ravel(f(down))) / (2 * eps))
    return np.stack(columns, axis=1)


def reference_steps(step, losses, xs, s0: np.ndarray, eps: float = 1e-6) -> list[dict]:
    """The step numbers of a recurrence s_t = step(x_t, s_{t-1}) on flat state vectors, with loss
    L = sum_t losses(t, s_t), from central differences alone:

    - J_t = d step(x_t, s)/ds at s_{t-1};
    - delta_t = d R_t/ds at s_t, where R_t(s) = losses(t, s) + the losses of the steps after t run
      from s: the gradient reaching s_t from outside step t;
    - grad_norm = ||delta_t||, gain = ||J_t^T delta_t|| / ||delta_t||, bound = ||J_t||_2.
    """
    states = [np.asarray(s0, dtype=np.float64)]
    for x in xs:
        states.append(np.ravel(step(x, states[-1])))

    def rest(t, s):
        total = losses(t, s)
        for k in range(t + 1, len(states)):
            s = np.ravel(step(xs[k - 1], s))
            total += losses(k, s)
        return total

    rows = []
    for t, s in enumerate(states):
        delta = numerical_jacobian(lambda v, t=t: np.array([rest(t, v)]), s, eps)[0]
        row = {"t": t, "grad_norm": float(np.linalg.norm(delta)), "delta": delta}
        if t >= 1:
            J = numerical_jacobian(lambda v, t=t: step(xs[t - 1], v), states[t - 1], eps)
            row["jacobian"] = J
            row["bound"] = float(np.linalg.norm(J, 2))
        rows.append(row)
    for t in range(1, len(rows)):
        delta = rows[t]["delta"]
        rows[t]["gain"] = float(np.linalg.norm(rows[t]["jacobian"].T @ delta) / np.linalg.norm(delta))
    return rows

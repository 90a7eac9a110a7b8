"""Chrono initialisation: gate biases that give the units memory time scales from 1 to T_max."""

from __future__ import annotations

import numpy as np

from cells.janet import JANETCell
from cells.lstm_variants import CIFGLSTMCell, PeepholeLSTMCell
from tinygrad_rnn import nn


def chrono_biases(hidden_size: int, t_max: float, rng=None) -> np.ndarray:
    """b_f = log(u), u ~ U(1, t_max - 1), one per unit (Tallec & Ollivier 2018, eq. (16))."""
    if not t_max > 2:
        raise ValueError(f"chrono_init: t_max must exceed 2 (the longest time scale, in steps), got {t_max!r}")
    return np.log(np.random.default_rng(rng).uniform(1.0, t_max - 1.0, hidden_size))


def chrono_init(cell, t_max: float, rng=None):
    """Chrono initialisation (Tallec & Ollivier 2018, "Can recurrent neural networks warp time?", ICLR;
    arXiv:1804.11188), in place; returns the cell.

        b_f = log(u),  u ~ U(1, T_max - 1),    b_i = -b_f

    A unit with input and state near 0 then keeps f = sigmoid(b_f) = u / (1 + u) of its cell at each
    step: it forgets on the time scale 1 / (1 - f) = 1 + u, anywhere from 2 to T_max steps. The paper
    derives this from asking the gated update to be a leaky integrator with time constant 1 + u.

    - ``nn.LSTMCell`` and ``PeepholeLSTMCell`` (gates i, f, g, o): the forget rows of ``bias_hh`` get
      b_f and the input rows -b_f; those rows of ``bias_ih`` become 0, so the sum is b_f (-b_f).
    - ``CIFGLSTMCell`` (f = 1 - i): the input rows get -b_f, so that f = 1 - sigmoid(-b_f) = sigmoid(b_f).
    - ``JANETCell``: ``bias_f`` is b_f (van der Westhuizen & Lasenby 2018 use this initialisation).
    """
    H = cell.hidden_size
    biases = chrono_biases(H, t_max, rng)
    if isinstance(cell, JANETCell):
        cell.bias_f.data = biases.astype(cell.bias_f.dtype)
        return cell
    if isinstance(cell, (nn.LSTMCell, PeepholeLSTMCell)):
        rows = {"i": slice(0, H), "f": slice(H, 2 * H)}
        values = {"i": -biases, "f": biases}
    elif isinstance(cell, CIFGLSTMCell):
        rows, values = {"i": slice(0, H)}, {"i": -biases}
    else:
        raise TypeError(f"chrono_init: knows the forget gates of LSTMCell, PeepholeLSTMCell, CIFGLSTMCell and "
                        f"JANETCell, not of {type(cell).__name__}")
    if cell.bias_ih is None:
        raise ValueError(f"chrono_init: this {type(cell).__name__} has no biases to set")
    bias_ih, bias_hh = np.array(cell.bias_ih.data), np.array(cell.bias_hh.data)
    for gate, where in rows.items():
        bias_ih[where], bias_hh[where] = 0.0, values[gate]
    cell.bias_ih.data, cell.bias_hh.data = bias_ih, bias_hh.astype(bias_ih.dtype)
    return cell

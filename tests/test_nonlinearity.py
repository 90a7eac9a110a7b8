"""RNNCell(nonlinearity=...): each choice computes its textbook formula, backpropagates its textbook
derivative, and passes gradcheck through unrolled steps."""

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn

SLOPE = 0.2  # a leaky slope large enough that a wrong one would show

# f and f' written out independently of the library, as a textbook would.
FORMULAS = {
    "tanh": (np.tanh, lambda a: 1 - np.tanh(a) ** 2),
    "relu": (lambda a: np.where(a > 0, a, 0.0), lambda a: (a > 0).astype(float)),
    "sigmoid": (lambda a: 1 / (1 + np.exp(-a)), lambda a: np.exp(-a) / (1 + np.exp(-a)) ** 2),
    "leaky_relu": (lambda a: np.where(a > 0, a, SLOPE * a), lambda a: np.where(a > 0, 1.0, SLOPE)),
    "identity": (lambda a: a, lambda a: np.ones_like(a)),
}
NAMES = list(FORMULAS)


def _cell(nonlinearity, dtype=np.float64):
    return nn.RNNCell(3, 5, nonlinearity=nonlinearity, negative_slope=SLOPE, rng=0, dtype=dtype)


def _preactivation(cell, x, h):
    p = cell.state_dict()
    return x @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"]


def _inputs(seed=1):
    rng = np.random.default_rng(seed)
    # Scaled up so the pre-activations cover both signs and tanh's and sigmoid's flat tails.
    return 2.0 * rng.normal(size=(4, 3)), 2.0 * rng.normal(size=(4, 5))


@pytest.mark.parametrize("nonlinearity", NAMES)
def test_rnn_cell_output_is_f_of_the_preactivation(nonlinearity):
    cell = _cell(nonlinearity)
    x, h = _inputs()
    f, _ = FORMULAS[nonlinearity]
    pre = _preactivation(cell, x, h)
    assert (pre > 0).any() and (pre < 0).any()
    np.testing.assert_allclose(cell(x, tg.Value(h)).data, f(pre), rtol=0, atol=1e-12)


@pytest.mark.parametrize("nonlinearity", NAMES)
def test_gradient_to_the_previous_state_is_w_hh_times_f_prime(nonlinearity):
    # dL/dh = (g * f'(pre)) W_hh for L = sum(g * h'): the one-step BPTT formula with the textbook f'.
    cell = _cell(nonlinearity)
    x, h_data = _inputs()
    h = tg.Value(h_data)
    g = np.random.default_rng(3).normal(size=(4, 5))
    (cell(x, h) * g).sum().backward()
    _, f_prime = FORMULAS[nonlinearity]
    expected = (g * f_prime(_preactivation(cell, x, h_data))) @ cell.weight_hh.data
    np.testing.assert_allclose(h.grad, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("nonlinearity", NAMES)
def test_gradcheck_through_four_unrolled_steps(nonlinearity):
    cell = _cell(nonlinearity)
    xs = np.random.default_rng(2).normal(size=(4, 2, 3))
    weights = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]

    def loss(*_):
        outputs, _ = nn.RNN(cell)(xs)
        return (outputs[-1] * outputs[-1]).sum()

    assert tg.gradcheck(loss, weights)


def test_sigmoid_and_tanh_derivatives_are_bounded_by_a_quarter_and_one():
    a = np.linspace(-8, 8, 1001)
    assert FORMULAS["sigmoid"][1](a).max() == pytest.approx(0.25)
    assert FORMULAS["tanh"][1](a).max() == pytest.approx(1.0)
    for name, bound in (("sigmoid", 0.25), ("tanh", 1.0)):
        cell = nn.RNNCell(1, 1, nonlinearity=name, bias=False, rng=0)
        pre = tg.Value(a)
        y = cell.activation(pre)
        y.sum().backward()
        assert pre.grad.max() <= bound + 1e-12


@pytest.mark.parametrize("nonlinearity", NAMES)
def test_float32_cell_stays_float32_for_every_nonlinearity(nonlinearity):
    cell = _cell(nonlinearity, dtype=np.float32)
    out = cell(np.ones((2, 3), np.float32), cell.initial_state(2))
    assert out.dtype == np.float32


def test_leaky_relu_default_slope_is_pytorchs_and_repr_shows_it():
    cell = nn.RNNCell(2, 3, nonlinearity="leaky_relu", rng=0)
    assert cell.negative_slope == 0.01
    assert "negative_slope=0.01" in repr(cell)
    assert "negative_slope" not in repr(nn.RNNCell(2, 3, rng=0))


def test_unknown_nonlinearity_error_lists_every_choice():
    with pytest.raises(ValueError, match="'tanh', 'relu', 'sigmoid', 'leaky_relu', 'identity'.*'gelu'"):
        nn.RNNCell(3, 4, nonlinearity="gelu")


def test_negative_leaky_slope_is_refused():
    with pytest.raises(ValueError, match="negative_slope"):
        nn.RNNCell(3, 4, nonlinearity="leaky_relu", negative_slope=-1.0)

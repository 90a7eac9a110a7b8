"""Cells follow PyTorch's equations, names, shapes and gate order, and their gradients through an
unrolled sequence agree with finite differences."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from numpy_cells import numpy_gru_cell, numpy_lstm_cell, numpy_rnn_cell
from numpy_cells import sigmoid as _sigmoid

import tinygrad_rnn as tg
from tinygrad_rnn import nn


def _random(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu", "sigmoid"])
@pytest.mark.parametrize("batch_shape", [(4,), ()], ids=["batched", "unbatched"])
def test_rnn_cell_matches_pytorch_equation(nonlinearity, batch_shape):
    cell = nn.RNNCell(3, 5, nonlinearity=nonlinearity, rng=0)
    x, h = _random(*batch_shape, 3, seed=1), _random(*batch_shape, 5, seed=2)
    out = cell(x, tg.Value(h))
    assert out.shape == batch_shape + (5,)
    np.testing.assert_allclose(out.data, numpy_rnn_cell(cell.state_dict(), x, h, nonlinearity), rtol=0, atol=1e-12)


@pytest.mark.parametrize("batch_shape", [(4,), ()], ids=["batched", "unbatched"])
def test_lstm_cell_matches_pytorch_equations_in_gate_order_ifgo(batch_shape):
    cell = nn.LSTMCell(3, 5, rng=0)
    x, h, c = _random(*batch_shape, 3, seed=1), _random(*batch_shape, 5, seed=2), _random(*batch_shape, 5, seed=3)
    h_next, c_next = cell(x, (h, c))
    expected_h, expected_c = numpy_lstm_cell(cell.state_dict(), x, h, c)
    np.testing.assert_allclose(h_next.data, expected_h, rtol=0, atol=1e-12)
    np.testing.assert_allclose(c_next.data, expected_c, rtol=0, atol=1e-12)


@pytest.mark.parametrize("batch_shape", [(4,), ()], ids=["batched", "unbatched"])
def test_gru_cell_matches_pytorch_equations_in_gate_order_rzn(batch_shape):
    cell = nn.GRUCell(3, 5, rng=0)
    x, h = _random(*batch_shape, 3, seed=1), _random(*batch_shape, 5, seed=2)
    out = cell(x, h)
    np.testing.assert_allclose(out.data, numpy_gru_cell(cell.state_dict(), x, h), rtol=0, atol=1e-12)


def test_gru_reset_gate_scales_only_the_recurrent_term_with_its_bias():
    """PyTorch's n = tanh(W_in x + b_in + r * (W_hn h + b_hn)): with r = 0 (a very negative reset bias)
    neither h nor b_hn reach n, but b_in does. (The original paper put r on h before the matmul.)"""
    cell = nn.GRUCell(2, 3, rng=0)
    H = 3
    cell.bias_hh.data = cell.bias_hh.data.copy()
    cell.bias_hh.data[:H] = -1e3  # r = sigmoid(-1000) = 0
    x = _random(2, seed=1)
    z = _sigmoid(x @ cell.weight_ih.data[H : 2 * H].T + cell.bias_ih.data[H : 2 * H]
                 + cell.bias_hh.data[H : 2 * H])  # h = 0 below
    n = np.tanh(x @ cell.weight_ih.data[2 * H :].T + cell.bias_ih.data[2 * H :])
    np.testing.assert_allclose(cell(x, np.zeros(3)).data, (1 - z) * n, atol=1e-12)


@pytest.mark.parametrize(
    ("cell_type", "gates"), [(nn.RNNCell, 1), (nn.LSTMCell, 4), (nn.GRUCell, 3)], ids=["rnn", "lstm", "gru"]
)
def test_cell_parameters_have_pytorch_names_shapes_and_default_init(cell_type, gates):
    hidden, inputs = 50, 7
    cell = cell_type(inputs, hidden, rng=0)
    shapes = {name: p.shape for name, p in cell.named_parameters()}
    assert shapes == {
        "weight_ih": (gates * hidden, inputs), "weight_hh": (gates * hidden, hidden),
        "bias_ih": (gates * hidden,), "bias_hh": (gates * hidden,),
    }
    assert [p.name for p in cell.parameters()] == list(shapes)
    bound = 1 / np.sqrt(hidden)
    everything = np.concatenate([p.data.ravel() for p in cell.parameters()])
    assert np.all(np.abs(everything) <= bound)
    # U(-b, b) has standard deviation b / sqrt(3); thousands of draws pin it to a few percent.
    assert abs(everything.std() / (bound / np.sqrt(3)) - 1) < 0.05


def test_cells_with_the_same_seed_are_identical_and_other_seeds_differ():
    a, b, c = nn.LSTMCell(3, 4, rng=5), nn.LSTMCell(3, 4, rng=5), nn.LSTMCell(3, 4, rng=6)
    assert all(np.array_equal(p.data, q.data) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not np.array_equal(a.weight_hh.data, c.weight_hh.data)


@pytest.mark.parametrize("cell_type", [nn.RNNCell, nn.LSTMCell, nn.GRUCell])
def test_cells_without_bias_have_only_weights_and_map_zero_to_zero(cell_type):
    cell = cell_type(3, 4, bias=False, rng=0)
    assert [name for name, _ in cell.named_parameters()] == ["weight_ih", "weight_hh"]
    # Zero input and zero state: every pre-activation is 0, and each cell then outputs h = 0
    # (tanh(0) = 0; the LSTM's candidate g and the GRU's n are tanh(0) too). With biases it would not.
    assert not np.any(nn.hidden_of(cell(np.zeros((2, 3)))).data)
    assert np.any(nn.hidden_of(cell_type(3, 4, rng=0)(np.zeros((2, 3)))).data)


def test_initial_state_is_zeros_without_gradient():
    h = nn.RNNCell(3, 4).initial_state(2)
    assert h.shape == (2, 4) and not h.requires_grad and not np.any(h.data)
    h, c = nn.LSTMCell(3, 4).initial_state(5, dtype=np.float32)
    assert h.shape == c.shape == (5, 4) and h.dtype == c.dtype == np.float32
    assert nn.GRUCell(3, 4).initial_state().shape == (4,)


def test_float32_cell_stays_float32():
    cell = nn.LSTMCell(3, 4, rng=0, dtype=np.float32)
    h, c = cell(np.ones((2, 3), np.float32))
    assert h.dtype == c.dtype == np.float32


def test_cell_shape_error_names_the_cell_and_both_shapes():
    with pytest.raises(ValueError, match=r"RNNCell\(input_size=3, hidden_size=4\).*\(2, 5\).*\(2, 4\)"):
        nn.RNNCell(3, 4)(np.ones((2, 5)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNNCell(3, 4, nonlinearity="gelu")


def test_cell_inside_rnn_computes_what_direct_calls_compute():
    """RNN makes the transposed weights once per sequence; the numbers are the same as calling the
    cell step by step."""
    cell = nn.GRUCell(3, 4, rng=0)
    xs = _random(6, 2, 3, seed=1)
    outputs, final = nn.RNN(cell)(xs)
    h = None
    for t in range(6):
        h = cell(xs[t], h)
        np.testing.assert_array_equal(outputs[t].data, h.data)
    np.testing.assert_array_equal(final.data, h.data)


def test_rnn_honours_a_subclass_that_overrides_forward():
    class Doubled(nn.RNNCell):
        def forward(self, x, h=None):
            return super().forward(x, h) * 2.0

    cell = Doubled(2, 2, rng=0)
    outputs, _ = nn.RNN(cell)(np.ones((1, 1, 2)))
    np.testing.assert_allclose(outputs[0].data, 2 * nn.RNNCell.forward(cell, np.ones((1, 2))).data)


# ---- gradients through 5 unrolled steps, against central differences in float64 ----------------

def _load_example_cell():
    path = Path(__file__).resolve().parent.parent / "examples" / "custom_cell.py"
    spec = importlib.util.spec_from_file_location("custom_cell", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MinimalGatedCell


@pytest.mark.parametrize("make_cell", [
    lambda: nn.RNNCell(2, 3, rng=0),
    lambda: nn.RNNCell(2, 3, nonlinearity="sigmoid", rng=0),
    lambda: nn.LSTMCell(2, 3, rng=0),
    lambda: nn.GRUCell(2, 3, rng=0),
    lambda: _load_example_cell()(2, 3, rng=0),
], ids=["rnn-tanh", "rnn-sigmoid", "lstm", "gru", "example-custom-cell"])
def test_gradcheck_through_five_unrolled_steps(make_cell):
    cell = make_cell()
    steps, batch = 5, 2
    x = tg.Value(_random(steps, batch, 2, seed=1))
    start = cell.initial_state(batch)
    h0 = tuple(tg.Value(_random(*s.shape, seed=2 + k) * 0.5) for k, s in enumerate(start)) \
        if isinstance(start, tuple) else tg.Value(_random(*start.shape, seed=2) * 0.5)
    readout = _random(steps, batch, 3, seed=9)

    def loss(*_):
        # A weighted sum of every h_t, so each step's output and the path through time are checked.
        outputs, _ = nn.RNN(cell)(x, h0)
        return sum((h * readout[t]).sum() for t, h in enumerate(outputs))

    initial = h0 if isinstance(h0, tuple) else (h0,)
    assert tg.gradcheck(loss, [x, *initial, *cell.parameters()])


def test_gradcheck_through_a_plain_callable_cell():
    weight = tg.Value(_random(3, 3, seed=4) * 0.5)

    def cell(x, h):
        return (x + h @ weight).tanh()

    x = tg.Value(_random(5, 2, 3, seed=5))
    h0 = tg.Value(_random(2, 3, seed=6))
    assert tg.gradcheck(lambda *_: nn.RNN(cell)(x, h0)[1].sum(), [x, h0, weight])


def test_gradcheck_fails_on_a_wrong_gradient():
    """The check above could not pass by accident: a cell whose backward is wrong is caught."""
    weight = tg.Value(_random(3, 3, seed=4) * 0.5)

    def lying_cell(x, h):
        # The detached copy computes the same numbers, but hides the path through weight.
        return (x + h @ weight.detach() + 0.0 * weight.sum()).tanh()

    x, h0 = tg.Value(_random(5, 2, 3, seed=5)), tg.Value(_random(2, 3, seed=6))
    with pytest.raises(tg.GradcheckError):
        tg.gradcheck(lambda *_: nn.RNN(lying_cell)(x, h0)[1].sum(), [weight])

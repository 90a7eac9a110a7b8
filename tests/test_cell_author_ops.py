"""The ops a cell author reaches for: sqrt, log1p, softplus, minimum, split. The op table
(tests/op_table.py) checks them against central differences; here are their edges, where PyTorch's
answer is the reference (sqrt'(0) = inf, softplus for large |x|, minimum's ties and nans, log1p of a
tiny x), numpy's np.split semantics and errors, replay, and, where torch is installed, random inputs
against torch itself."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

import tinygrad_rnn as tg
from tinygrad_rnn import Value, minimum, softplus, split

INF, NAN = np.inf, np.nan


def gradient_of(fn, x):
    value = Value(np.asarray(x, dtype=np.float64))
    out = fn(value)
    out.backward(np.ones(out.shape))
    return out.data, value.grad


# ---- sqrt ----------------------------------------------------------------------------------------


def test_sqrt_has_an_infinite_derivative_at_zero_as_pytorch():
    with np.errstate(divide="ignore"):
        y, g = gradient_of(lambda x: x.sqrt(), [0.0, 4.0])
    assert list(y) == [0.0, 2.0] and list(g) == [INF, 0.25]


def test_sqrt_of_a_negative_number_is_nan_and_so_is_its_gradient():
    with np.errstate(invalid="ignore"):
        y, g = gradient_of(lambda x: x.sqrt(), [-1.0, -2.0])
    assert np.isnan(y).all() and np.isnan(g).all()


def test_sqrt_is_numpys_sqrt_bit_for_bit():
    x = np.random.default_rng(0).uniform(0.0, 1e6, 1000)
    assert np.array_equal(Value(x).sqrt().data, np.sqrt(x))
    assert np.array_equal(Value(x.astype(np.float32)).sqrt().data, np.sqrt(x.astype(np.float32)))


# ---- log1p ---------------------------------------------------------------------------------------


def test_log1p_keeps_the_digits_log_of_one_plus_x_loses():
    y, g = gradient_of(lambda x: x.log1p(), [1e-20])
    assert y[0] == 1e-20 and g[0] == 1.0
    assert Value(1e-20).__add__(1.0).log().data == 0.0  # the composite it replaces


def test_log1p_at_minus_one_is_minus_infinity_with_an_infinite_gradient():
    with np.errstate(divide="ignore"):
        y, g = gradient_of(lambda x: x.log1p(), [-1.0])
    assert y[0] == -INF and g[0] == INF


# ---- softplus ------------------------------------------------------------------------------------


def test_softplus_does_not_overflow_for_large_x():
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # (e^-1000 underflows to 0, rightly)
        y, g = gradient_of(softplus, [1000.0, -1000.0, 800.0])
    assert list(y) == [1000.0, 0.0, 800.0] and list(g) == [1.0, 0.0, 1.0]


def test_softplus_keeps_the_digits_of_a_tiny_result():
    y, g = gradient_of(softplus, [-50.0])
    np.testing.assert_allclose(y, np.exp(-50.0), rtol=1e-15)  # ln(1 + e^-50) = e^-50 to 1e-22
    np.testing.assert_allclose(g, np.exp(-50.0), rtol=1e-15)


def test_softplus_derivative_at_zero_is_one_half():
    y, g = gradient_of(softplus, [0.0])
    assert y[0] == np.log(2.0) and g[0] == 0.5


def test_softplus_at_infinities_and_nan():
    with np.errstate(invalid="ignore"):
        y, g = gradient_of(softplus, [INF, -INF, NAN])
    assert y[0] == INF and y[1] == 0.0 and np.isnan(y[2])
    assert g[0] == 1.0 and g[1] == 0.0 and np.isnan(g[2])


def test_softplus_is_a_method_and_keeps_float32():
    x = Value(np.array([-3.0, 0.0, 3.0], dtype=np.float32))
    y = x.softplus()
    y.sum().backward()
    assert y.dtype == np.float32 and x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad, 1 / (1 + np.exp(-x.data)), rtol=1e-6)


# ---- minimum -------------------------------------------------------------------------------------


def test_minimum_splits_the_gradient_at_ties_as_maximum_does():
    a, b = Value(np.array([1.0, 2.0, 3.0])), Value(np.array([1.0, 5.0, 0.0]))
    minimum(a, b).sum().backward()
    assert list(a.grad) == [0.5, 1.0, 0.0] and list(b.grad) == [0.5, 0.0, 1.0]


def test_minimum_with_nan_is_nan_and_both_sides_get_the_gradient():
    a, b = Value(np.array([NAN, 1.0])), Value(np.array([0.0, NAN]))
    y = minimum(a, b)
    y.sum().backward()
    assert np.isnan(y.data).all() and list(a.grad) == [1.0, 1.0] and list(b.grad) == [1.0, 1.0]


def test_minimum_with_a_python_number_keeps_float32():
    x = Value(np.array([-1.0, 2.0], dtype=np.float32))
    y = minimum(x, 0.5)
    y.sum().backward()
    assert y.dtype == np.float32 and list(y.data) == [-1.0, 0.5] and list(x.grad) == [1.0, 0.0]


# ---- split ---------------------------------------------------------------------------------------


@given(shape=array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6), data=st.data())
@settings(max_examples=40, deadline=None)
def test_split_is_numpys_split(shape, data):
    x = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    length = shape[axis]
    divisors = [n for n in range(1, 7) if length % n == 0]
    sections = data.draw(st.one_of(st.sampled_from(divisors),
                                   st.lists(st.integers(-8, 8), max_size=3).map(sorted)), label="sections")
    pieces = split(Value(x), sections, axis=axis)
    expected = np.split(x, sections, axis=axis)
    assert len(pieces) == len(expected)
    for piece, reference in zip(pieces, expected):
        assert piece.shape == reference.shape and np.array_equal(piece.data, reference)


def test_split_pieces_send_their_gradients_back_to_their_places():
    x = Value(np.arange(6.0))
    first, second, third = split(x, [1, 4])
    (first.sum() * 1.0 + second.sum() * 2.0 + third.sum() * 3.0).backward()
    assert list(x.grad) == [1.0, 2.0, 2.0, 2.0, 3.0, 3.0]


def test_split_gates_of_an_lstm_along_the_last_axis():
    gates = Value(np.arange(24.0).reshape(2, 12))
    i, f, g, o = split(gates, 4, axis=-1)
    assert [p.shape for p in (i, f, g, o)] == [(2, 3)] * 4 and np.array_equal(o.data, gates.data[:, 9:])


@pytest.mark.parametrize("x, sections, axis, message", [
    (np.zeros(5), 2, 0, "does not divide into 2 equal sections"),
    (np.zeros(5), 0, 0, "does not divide into 0 equal sections"),
    (np.zeros((2, 3)), 2, 2, "axis 2 is out of range for shape (2, 3)"),
    (np.float64(1.0), 1, 0, "zero-dimensional"),
])
def test_split_errors_name_the_op_and_the_shape(x, sections, axis, message):
    with pytest.raises(ValueError, match="split: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        split(Value(x), sections, axis=axis)


# ---- replay --------------------------------------------------------------------------------------


def test_the_new_ops_replay_as_they_run_eagerly():
    w = Value(np.array([0.5, -1.5, 2.0, 0.25]))

    def loss(x):
        a, b = split(x * w, 2)
        return (minimum(a.softplus(), b.abs().sqrt()) + (x * w).abs().log1p().sum()).sum()

    step = tg.replay(loss)
    for seed in range(3):
        x = np.random.default_rng(seed).uniform(-2, 2, 4)
        w.grad = None
        expected = loss(Value(x, requires_grad=False))
        expected.backward()
        eager = w.grad
        w.grad = None
        assert step(x) == expected.item()
        np.testing.assert_array_equal(w.grad, eager)


# ---- against PyTorch itself ----------------------------------------------------------------------

FLOATS = st.one_of(st.sampled_from([0.0, -0.0, 1.0, -1.0, 25.0, -25.0, 800.0, -800.0]),
                   st.floats(-40, 40, width=32))


@given(x=arrays(np.float64, array_shapes(max_dims=2, max_side=4), elements=FLOATS),
       y=arrays(np.float64, array_shapes(max_dims=2, max_side=4), elements=FLOATS))
@settings(max_examples=40, deadline=None)
def test_the_new_ops_agree_with_pytorch(x, y):
    torch = pytest.importorskip("torch")
    functional = pytest.importorskip("torch.nn.functional")
    y = np.resize(y, x.shape)
    cases = {
        "sqrt": (lambda v: v[0].sqrt(), lambda t: t[0].sqrt(), [np.abs(x)]),
        "log1p": (lambda v: v[0].log1p(), lambda t: t[0].log1p(), [np.abs(x)]),
        "softplus": (lambda v: v[0].softplus(), lambda t: functional.softplus(t[0]), [x]),
        "minimum": (lambda v: minimum(v[0], v[1]), lambda t: torch.minimum(t[0], t[1]), [x, np.round(y / 20)]),
    }
    for name, (ours, theirs, inputs) in cases.items():
        values = [Value(a) for a in inputs]
        tensors = [torch.tensor(a, requires_grad=True) for a in inputs]
        with np.errstate(divide="ignore", invalid="ignore"):
            out = ours(values)
            out.backward(np.ones(out.shape))
        expected = theirs(tensors)
        expected.backward(torch.ones_like(expected))
        # softplus: PyTorch returns x itself above 20, which differs from ln(1 + e^x) by e^-x
        np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-8, atol=0, err_msg=name)
        for value, tensor in zip(values, tensors):
            np.testing.assert_allclose(value.grad, tensor.grad.numpy(), rtol=1e-8, atol=0, err_msg=name)

"""The engine where PyTorch's answer is not the textbook's: infinite and nan gradients through masks,
sigmoid's far tails, == on Values, nan maxima, dtype promotion, division by zero in derivatives, empty
axes, threads. Every expected value is PyTorch's (its documented semantics, checked against PyTorch
once by hand); torch is not needed to run these tests."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

import tinygrad_rnn as tg
from tinygrad_rnn import Value, grad, log_softmax, logsumexp, maximum, ops, softmax, where

INF, NAN = np.inf, np.nan
SETTINGS = settings(max_examples=40, deadline=None)


def finite_arrays(dtype=np.float64, min_dims=1):
    """Arrays with plenty of zeros and negatives (where masks close)."""
    elements = st.one_of(st.sampled_from([0.0, -0.0, -1.0, 2.0]), st.floats(-4, 4, width=32))
    return arrays(dtype, array_shapes(min_dims=min_dims, max_dims=2, max_side=4), elements=elements)


# ---- 1. a zero local derivative stops even an infinite gradient (PyTorch's masked ops select) -----


@given(x=finite_arrays())
@SETTINGS
def test_sqrt_of_relu_has_gradient_zero_where_relu_clamps(x):
    # d sqrt(relu(x)) / dx: 1 / (2 sqrt(x)) for x > 0, and 0 for x <= 0, where sqrt's derivative at
    # relu's 0 is inf but relu passes nothing (PyTorch: 0, not 0 * inf = nan).
    value = Value(x)
    with np.errstate(divide="ignore"):
        (value.relu() ** 0.5).sum().backward()
        expected = np.where(x > 0, 0.5 / np.sqrt(np.where(x > 0, x, 1.0)), 0.0)
    np.testing.assert_allclose(value.grad, expected, rtol=1e-15)


@pytest.mark.parametrize("x", [-1.0, 0.0, -0.0])
def test_sqrt_of_relu_on_a_python_float_has_gradient_zero(x):
    value = Value(x)
    with np.errstate(divide="ignore"):
        (value.relu() ** 0.5).backward()
    assert value.grad == 0.0 and type(value.grad) is float


MASKED = {  # op, an input, and where it passes the gradient (PyTorch's rule)
    "relu": (lambda x: x.relu(), [-1.0, 0.0, 2.0, NAN], [False, False, True, True]),  # nan passes: y is not 0
    "clip": (lambda x: x.clip(-1.0, 1.0), [-2.0, -1.0, 0.5, 1.0, 3.0, NAN], [False, True, True, True, False, False]),
    "where": (lambda x: where(np.array([True, False, True]), x, 0.0), [1.0, 2.0, NAN], [True, False, True]),
    "maximum": (lambda x: maximum(x, 0.0), [-1.0, 2.0, NAN], [False, True, True]),  # nan: both sides get it
    "max": (lambda x: x.max(keepdims=True).reshape(1), [1.0, 3.0, 2.0], [False, True, False]),
    "max_axis": (lambda x: x.reshape(3, 1).max(axis=1), [1.0, 3.0, 2.0], [True, True, True]),
}


@pytest.mark.parametrize("name", MASKED)
@pytest.mark.parametrize("incoming", [INF, -INF, NAN])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_masked_op_passes_an_infinite_or_nan_gradient_only_where_its_mask_is_open(name, incoming, dtype):
    call, data, passes = MASKED[name]
    x = Value(np.array(data, dtype=dtype))
    y = call(x)
    y.backward(np.full(y.shape, incoming, dtype=dtype))
    expected = np.where(passes, incoming, 0.0)
    np.testing.assert_array_equal(x.grad, expected)
    assert x.grad.dtype == dtype


def test_maximum_gives_half_an_infinite_gradient_to_each_side_of_a_tie_and_none_to_the_loser():
    a, b = Value(np.array([1.0, 2.0, 2.0])), Value(np.array([2.0, 1.0, 2.0]))
    maximum(a, b).backward(np.full(3, INF))
    np.testing.assert_array_equal(a.grad, [0.0, INF, INF])
    np.testing.assert_array_equal(b.grad, [INF, 0.0, INF])


def test_leaky_relu_multiplies_by_its_slope_as_pytorch_does():
    # PyTorch's leaky_relu backward is grad where x > 0, else grad * slope: a product, so with slope 0
    # an infinite gradient gives nan (not 0) at x <= 0. The slope is exact, and 1 is exactly 1.
    x = Value(np.array([-1.0, 0.0, 2.0, NAN]))
    with np.errstate(invalid="ignore"):
        x.leaky_relu(0.0).backward(np.array([INF, INF, INF, 1.0]))
    np.testing.assert_array_equal(x.grad, [NAN, NAN, INF, 0.0])
    for slope in (0.3, 1e20, -2.0):
        x = Value(np.array([-1.0, 3.0]))
        x.leaky_relu(slope).backward(np.array([0.7, 0.7]))
        np.testing.assert_array_equal(x.grad, [0.7 * slope, 0.7])


def test_abs_has_gradient_zero_at_nan_and_nan_for_an_infinite_gradient_at_zero():
    # PyTorch: grad * sgn(x), with sgn(nan) = 0; a product, so inf * sgn(0) is nan.
    x = Value(np.array([NAN, 0.0, -3.0, 2.0]))
    with np.errstate(invalid="ignore"):
        x.abs().backward(np.array([1.0, INF, 1.0, 1.0]))
    np.testing.assert_array_equal(x.grad, [0.0, NAN, -1.0, 1.0])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_masks_keep_float32_gradients_float32(dtype):
    x = Value(np.array([-1.0, 2.0], dtype=dtype))
    total = x.relu().sum() + x.clip(0.0, 1.0).sum() + maximum(x, 1.0).sum() + x.max()
    total = total + where(np.array([True, False]), x, x * 2.0).sum()
    total.backward()
    assert x.grad.dtype == dtype
    np.testing.assert_array_equal(x.grad, [0.0 + 0.0 + 0.0 + 0.0 + 1.0, 1.0 + 0.0 + 1.0 + 1.0 + 2.0])


def test_second_derivative_of_sqrt_relu_is_pytorchs():
    # d/dx sqrt(relu(x)) = [x > 0] / (2 sqrt(x)); d2/dx2 = -[x > 0] / (4 x^1.5): at x = 1, 0.5 and -0.25;
    # at x <= 0, 0 and 0 (the masks select, also when the backward pass is recorded).
    x = Value(np.array([-1.0, 0.0, 1.0]))
    with np.errstate(divide="ignore", invalid="ignore"):
        (first,) = grad((x.relu() ** 0.5).sum(), [x], create_graph=True)
        np.testing.assert_array_equal(first.data, [0.0, 0.0, 0.5])
        first.sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, -0.25])


@pytest.mark.parametrize("name", ["relu", "clip", "where", "maximum", "max"])
def test_a_masked_ops_recorded_gradient_equals_its_raw_one(name):
    call, data, _ = MASKED[name]
    x = Value(np.nan_to_num(np.array(data), nan=0.5))
    y = call(x)
    seed = np.arange(1.0, y.size + 1).reshape(y.shape)
    (fast,) = grad(y, [x], seed)
    (recorded,) = grad(y, [x], Value(seed, requires_grad=False), create_graph=True)
    assert isinstance(recorded, Value)
    np.testing.assert_array_equal(recorded.data, fast)


def test_x_to_the_zero_under_create_graph_has_first_and_second_derivative_zero():
    # PyTorch's rule d(x^0)/dx = 0 (0^0 = 1 for every x), recorded: its derivative is 0 too, also at 0.
    x = Value(np.array([0.0, 2.0, -1.0]))
    with np.errstate(divide="ignore", invalid="ignore"):
        (first,) = grad((x**0.0).sum(), [x], create_graph=True)
        (second,) = grad(first.sum(), [x])
    np.testing.assert_array_equal(first.data, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(second, [0.0, 0.0, 0.0])


def test_pows_exponent_zero_rule_stops_an_infinite_gradient_when_the_backward_pass_is_recorded():
    # d(a^b)/da = b a^(b-1), with 0 where b = 0 (a select: PyTorch's masked_fill). Its own gradient,
    # where an infinite one arrives at such an entry, is 0 there (a = 3, b = 0), not inf * 0 = nan.
    a, b = Value(np.array([0.0, 2.0, 3.0])), Value(np.array([0.0, 1.0, 0.0]))
    with np.errstate(all="ignore"):
        da, _ = grad((a**b).sum(), [a, b], create_graph=True)
        (da * np.array([INF, 1.0, INF])).sum().backward()
    np.testing.assert_array_equal(da.data, [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(a.grad, [NAN, 0.0, 0.0])  # d(b a^(b-1))/da = b (b-1) a^(b-2); 0^-1 at a = b = 0
    np.testing.assert_array_equal(b.grad, [NAN, 1.0 + np.log(2.0), 0.0])  # a^(b-1) (1 + b ln a)


def test_a_value_exponent_of_zero_gives_base_gradient_zero_even_at_base_zero():
    a, b = Value(np.array([0.0, 0.0, 2.0])), Value(np.array([0.0, 2.0, 0.0]))
    with np.errstate(divide="ignore", invalid="ignore"):
        (a**b).sum().backward()
    np.testing.assert_array_equal(a.grad, [0.0, 0.0, 0.0])  # b a^(b-1), with 0 where b = 0
    np.testing.assert_array_equal(b.grad, [0.0, 0.0, np.log(2.0)])  # y ln a, with 0 where a = 0, b >= 0


# ---- 2. sigmoid in its tails ----------------------------------------------------------------------


@given(x=st.floats(-700.0, 30.0))
@SETTINGS
def test_sigmoid_keeps_its_digits_far_into_the_left_tail(x):
    # sigmoid(x) = e^x / (1 + e^x): about e^x on the left, where 0.5 + 0.5 tanh(x/2) rounds to 0.
    expected = np.exp(x) / (1.0 + np.exp(x))
    for data in (x, np.array([x])):
        np.testing.assert_allclose(Value(data).sigmoid().data, expected, rtol=1e-14)


@given(x=st.floats(-87.0, 15.0, width=32))
@SETTINGS
def test_float32_sigmoid_keeps_its_digits_down_to_where_float32_ends(x):
    expected = np.exp(np.float64(x)) / (1.0 + np.exp(np.float64(x)))
    got = Value(np.array([x], dtype=np.float32)).sigmoid().data
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=2e-6)


@pytest.mark.parametrize("dtype, far", [(np.float64, -700.0), (np.float64, -100.0), (np.float32, -85.0)])
def test_log_sigmoid_in_the_tails_is_finite_with_gradient_one_minus_sigmoid(dtype, far):
    # log sigmoid(x) = x - log(1 + e^x): about x on the left, with derivative 1 - sigmoid(x), about 1.
    # (``far``: as far left as the dtype holds e^x; beyond, sigmoid is 0 in PyTorch too.)
    x = Value(np.array([far, -40.0, -17.5, 0.0, 40.0], dtype=dtype))
    y = x.sigmoid().log()
    y.sum().backward()
    np.testing.assert_allclose(y.data, [far, -40.0, -17.5 - np.log1p(np.exp(-17.5)), -np.log(2.0), 0.0],
                               rtol=1e-6 if dtype == np.float32 else 1e-14, atol=1e-15)
    np.testing.assert_allclose(x.grad, [1.0, 1.0, 1.0, 0.5, 0.0], rtol=1e-6, atol=1e-17)
    assert y.dtype == dtype and x.grad.dtype == dtype


def test_sigmoid_of_python_floats_past_where_exp_overflows_is_its_limit():
    with np.errstate(over="ignore"):
        assert Value(-1000.0).sigmoid().data == 0.0
        assert Value(-np.inf).sigmoid().data == 0.0
        assert Value(np.inf).sigmoid().data == 1.0
        assert np.isnan(Value(np.nan).sigmoid().data)
        # Where e^-x overflows, 1 / (1 + inf) is 0, for a Python float as for an array (and in PyTorch).
        for x in (-709.78, -709.79, -720.0, -1000.0, -np.inf, np.inf, 3.0):
            assert Value(x).sigmoid().data == Value(np.array([x])).sigmoid().data[0]


# ---- 3. == and != are elementwise, as the other comparisons ----------------------------------------


@given(x=finite_arrays(min_dims=0), y=st.sampled_from([0.0, -1.0, 2.0]))
@SETTINGS
def test_equality_is_elementwise_like_the_other_comparisons(x, y):
    value, other = Value(x), Value(np.full_like(x, y))
    for got, expected in [(value == y, x == y), (value != y, x != y), (value == other, x == y),
                          (value != other, x != y), (y == value, x == y), (x == value, x == x)]:
        np.testing.assert_array_equal(got, expected)
        assert np.asarray(got).dtype == bool


def test_where_on_an_equality_picks_by_the_data():
    x = Value(np.array([0.0, 1.0, 0.0]))
    y = where(x == 0, 5.0, x * 2.0)
    np.testing.assert_array_equal(y.data, [5.0, 2.0, 5.0])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 2.0, 0.0])


def test_values_stay_hashable_by_identity():
    a, b = Value(1.0), Value(1.0)
    assert len({a, b}) == 2 and {a: 1, b: 2}[b] == 2 and a in {a} and b not in {a}
    assert (a == None) is False and (a != None) is True  # noqa: E711 (Python's default for non-numbers)


def test_an_equality_read_inside_a_replay_is_checked_again_on_the_next_call():
    w = Value(np.array([0.0, 1.0, 2.0]))

    def fn(x):
        return where(w == x, w * 10.0, w).sum()

    step = tg.replay(fn)
    for x in (np.array([0.0, 0.0, 0.0]), np.array([2.0, 2.0, 2.0]), np.array([1.0, 1.0, 1.0])):
        tg.zero_grad([w])
        expected = fn(Value(x, requires_grad=False))
        expected.backward()
        want = w.grad.copy()
        tg.zero_grad([w])
        assert step(x) == expected.item()
        np.testing.assert_array_equal(w.grad, want)


# ---- 4. nan in a maximum -----------------------------------------------------------------------


@given(a=finite_arrays(), data=st.data())
@SETTINGS
def test_maximum_with_a_nan_gives_both_inputs_the_gradient_there(a, data):
    # PyTorch: grad where a > b, grad / 2 at a tie, 0 where a < b; a nan compares false both ways, so
    # at a nan both inputs get the whole gradient.
    b = data.draw(arrays(np.float64, a.shape, elements=st.sampled_from([0.0, -1.0, 2.0, NAN])))
    a = np.where(data.draw(arrays(bool, a.shape)), NAN, a)
    va, vb = Value(a), Value(b)
    g = np.arange(1.0, a.size + 1).reshape(a.shape)
    maximum(va, vb).backward(g)
    weight_a = np.where(a < b, 0.0, np.where(a == b, 0.5, 1.0))
    weight_b = np.where(b < a, 0.0, np.where(a == b, 0.5, 1.0))
    np.testing.assert_array_equal(va.grad, g * weight_a)
    np.testing.assert_array_equal(vb.grad, g * weight_b)


@given(x=finite_arrays(), data=st.data())
@SETTINGS
def test_max_with_nans_shares_the_gradient_among_the_nans(x, data):
    # PyTorch's max(): the maximum of a slice holding a nan is nan, and its gradient goes evenly to
    # the nans (to the tied maxima when there is none).
    x = np.where(data.draw(arrays(bool, x.shape)), NAN, x)
    for axis in (None, -1):
        value = Value(x)
        value.max(axis=axis).sum().backward()
        winners = np.isnan(x) if axis is None and np.isnan(x).any() else None
        if winners is None:
            peak = np.max(x, axis=axis, keepdims=True)
            winners = (x == peak) | (np.isnan(x) & np.isnan(peak))
        expected = winners / winners.sum(axis=axis, keepdims=True)
        np.testing.assert_array_equal(value.grad, expected)


# ---- 5. dtype promotion: PyTorch's rules, 0-d included --------------------------------------------

F32, F64 = np.float32, np.float64
PROMOTIONS = [  # (a, b, the dtype of a * b) with PyTorch's rules
    (lambda: Value(np.array(2.0, F64)), lambda: Value(np.array(3.0, F32)), F64),  # 0-d with 0-d: the wider
    (lambda: Value(2.0), lambda: Value(np.array(3.0, F32)), F64),  # Value(2.0) is a 0-d float64
    (lambda: Value(np.ones(3, F32)), lambda: Value(np.array(2.0, F64)), F32),  # a 0-d does not promote an array
    (lambda: Value(np.ones(3, F32)), lambda: Value(np.ones(3)).sum(), F32),  # nor does a 0-d float64 result
    (lambda: Value(np.ones(3, F32)), lambda: Value(2.0), F32),
    (lambda: Value(np.ones(3, F32)), lambda: Value(np.ones(3, F64)), F64),  # arrays: the wider
    (lambda: Value(np.ones((2, 3), F64)), lambda: Value(np.ones(3, F32)), F64),
    (lambda: Value(np.array(3.0, F32)), lambda: 2.0, F32),  # a Python float is weak
    (lambda: Value(np.ones(3, F32)), lambda: np.float64(2.0), F32),  # so is a numpy number given as one
    (lambda: Value(np.ones(3, F32)), lambda: np.ones(3), F64),  # an array given as such is an array
    (lambda: Value(np.ones(3, F32)).sum(), lambda: Value(2.0), F64),  # a float32 0-d result with Value(2.0)
]


@pytest.mark.filterwarnings("ignore::tinygrad_rnn.dtypes.PromotionWarning")  # (promoting is the point here)
@pytest.mark.parametrize("make_a, make_b, expected", PROMOTIONS)
@pytest.mark.parametrize("op", ["mul", "add", "sub", "div", "pow", "maximum", "where"])
def test_two_input_ops_promote_by_pytorchs_rules_in_either_order(make_a, make_b, expected, op):
    function = {"mul": lambda a, b: a * b, "add": lambda a, b: a + b, "sub": lambda a, b: a - b,
                "div": lambda a, b: a / b, "pow": lambda a, b: a ** b, "maximum": maximum,
                "where": lambda a, b: where(True, a, b)}[op]
    for a, b in ((make_a(), make_b()), (make_b(), make_a())):
        out = function(a, b)
        assert out.dtype == expected, (op, a, b)


def test_number_parameters_are_weak_as_pytorchs_python_scalars():
    x = Value(np.array([-2.0, 0.25, 3.0], F32))
    for out in (x.clip(np.float64(-1.0), np.float64(1.0)), x.leaky_relu(np.float64(0.1)), x ** np.float64(2.0)):
        assert out.dtype == F32
    np.testing.assert_array_equal(x.clip(np.float64(-1.0), np.float64(1.0)).data, np.array([-1.0, 0.25, 1.0], F32))


def test_a_leafs_gradient_has_the_leafs_dtype():
    x, w = Value(np.ones(3, F32)), Value(np.full(3, 2.0))
    y = (x * w).sum()
    assert y.dtype == F64
    y.backward()
    assert x.grad.dtype == F32 and w.grad.dtype == F64
    gx, gw = grad((x * w).sum(), [x, w])
    assert gx.dtype == F32 and gw.dtype == F64
    s = Value(2.0)  # a 0-d float64 times a float32 array: float32 out, a Python float gradient in
    (s * x).sum().backward()
    assert type(s.grad) is float and s.grad == 3.0
    z = Value(np.array(1.5, F32))  # a 0-d float32 with Value(2.0): float64 out, a float32 gradient in
    (z * s).backward()
    assert np.result_type(z.grad) == F32 and z.grad == 2.0


def test_every_gradient_has_its_own_values_dtype_through_mixed_ops():
    # PyTorch computes an op in the common type and casts each input's gradient back to its type.
    x, w = Value(np.array([0.5, -1.0], F32)), Value(np.array([2.0, 3.0]))
    h = x.tanh()
    (h * w).sum().backward()
    assert h.grad.dtype == F32 and x.grad.dtype == F32 and w.grad.dtype == F64
    np.testing.assert_allclose(x.grad, (1 - np.tanh(x.data) ** 2) * w.data, rtol=1e-6)
    a, b = Value(np.ones(2, F32)), Value(np.ones(2))
    tg.stack([a, b]).sum().backward()
    assert a.grad.dtype == F32 and b.grad.dtype == F64
    y = Value(np.ones(2, F32))
    (y * 3.0).backward(np.array([1.0, 2.0]))  # a float64 seed for a float32 output
    assert y.grad.dtype == F32
    np.testing.assert_array_equal(y.grad, [3.0, 6.0])


# ---- 6. division by zero in derivatives on Python floats: numpy's rules ---------------------------


def test_backward_through_one_over_zero_on_python_floats_is_infinite_not_an_exception():
    x = Value(0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        (1.0 / x).backward()
        assert x.grad == -INF  # d(1/x)/dx = -1/x^2
        z = Value(0.0)
        (z / z).backward()
        assert np.isnan(z.grad)


def test_second_derivative_of_log_at_zero_is_minus_infinity():
    x = Value(0.0)
    with np.errstate(divide="ignore"):
        (first,) = grad(x.log(), [x], create_graph=True)
        assert first.data == INF
        first.backward()
    assert x.grad == -INF  # d2 log x / dx2 = -1/x^2


# ---- 7. empty axes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, axis", [((2, 0), -1), ((0,), 0), ((3, 0, 2), 1)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_logsumexp_over_an_empty_axis_is_minus_infinity_and_softmax_is_empty(shape, axis, keepdims):
    x = Value(np.zeros(shape))
    out = logsumexp(x, axis=axis, keepdims=keepdims)
    expected_shape = np.sum(np.zeros(shape), axis=axis, keepdims=keepdims).shape
    np.testing.assert_array_equal(out.data, np.full(expected_shape, -INF))
    with np.errstate(divide="ignore"):  # d log(s)/ds = 1/0 on the way to an empty gradient
        out.sum().backward()
    assert x.grad.shape == shape
    for f in (softmax, log_softmax):
        y = f(Value(np.zeros(shape)), axis=axis)
        assert y.shape == shape


# ---- 8. threads backpropagating into one leaf -----------------------------------------------------


def test_threads_backpropagating_into_one_leaf_lose_no_update():
    # numpy lets go of the interpreter while it adds large arrays: without a lock around a leaf's
    # read-add-write, another thread's sum lands in between and is overwritten (half were lost).
    w = Value(np.zeros(200_000))
    threads, calls = 4, 100
    barrier = threading.Barrier(threads)

    def work():
        barrier.wait()
        for _ in range(calls):
            (w * 1.0).sum().backward()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: a race shows at once
    try:
        workers = [threading.Thread(target=work) for _ in range(threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert w.grad.min() == w.grad.max() == threads * calls


# ---- 9. a matmul edge's norm from the thin side ------------------------------------------------------


def explicit_jacobian_norm(a, b, k):
    """||d(a @ b)/d(input k)||_2 from the Jacobian written out column by column."""
    x = (a, b)[k]
    out = a @ b
    columns = []
    for i in range(x.size):
        d = np.zeros(x.size)
        d[i] = 1.0
        d = d.reshape(x.shape)
        columns.append(((d @ b) if k == 0 else (a @ d)).ravel())
    return np.linalg.norm(np.array(columns).T, 2) if out.size and x.size else 0.0


@st.composite
def matmul_pair(draw):
    n, k, m = (draw(st.integers(1, 4)) for _ in range(3))
    kind = draw(st.sampled_from(["mm", "vm", "mv", "vv", "batched", "broadcast", "both"]))
    shapes = {"mm": ((n, k), (k, m)), "vm": ((k,), (k, m)), "mv": ((n, k), (k,)), "vv": ((k,), (k,)),
              "batched": ((2, n, k), (k, m)), "broadcast": ((3, 1, n, k), (2, k, m)),
              "both": ((2, 1, n, k), (1, 3, k, m))}[kind]
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])


@given(pair=matmul_pair())
@SETTINGS
def test_matmul_edge_norm_is_the_spectral_norm_of_the_explicit_jacobian(pair):
    a, b = pair
    for k in (0, 1):
        expected = explicit_jacobian_norm(a, b, k)
        assert ops.MatMul().jacobian_norm(k, a @ b, [a, b]) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_a_wide_matmul_edge_norm_is_computed_from_its_thin_side():
    # (1, 3000) @ (3000, 4): the norms are those of b (as a 3000 x 4 matrix) and of the row a.
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((1, 3000)), rng.standard_normal((3000, 4))
    norms = [ops.MatMul().jacobian_norm(k, a @ b, [a, b]) for k in (0, 1)]
    assert norms == pytest.approx([np.linalg.norm(b, 2), np.linalg.norm(a)], rel=1e-12)
    assert ops.MatMul().jacobian_norm(0, np.zeros((0, 2)), [np.zeros((0, 3)), b[:3, :2]]) == 0.0

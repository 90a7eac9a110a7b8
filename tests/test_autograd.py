"""The backward pass: fan-out, diamonds, reuse, accumulation, higher derivatives, deep chains,
freeing, no_grad, scopes, grad()."""

from __future__ import annotations

import gc
import sys
import weakref

import numpy as np
import pytest

from tinygrad_rnn import (
    Value,
    enable_grad,
    grad,
    gradcheck,
    log_softmax,
    logsumexp,
    no_grad,
    scope,
    softmax,
    stack,
)
from tinygrad_rnn.functional import subgraph


def test_fan_out_doubles_gradient():
    x = Value(3.0)
    y = x * x
    assert y.parents == (x, x)
    y.backward()
    assert x.grad == 6.0


def test_diamond_adds_both_paths():
    x = Value(1.5)
    y = (x * x) + (x * x)
    y.backward()
    assert x.grad == pytest.approx(4 * 1.5)


def test_reused_intermediate_gets_the_sum_of_its_childrens_gradients():
    x = Value(0.3)
    h = x.tanh()
    y = h * 2.0 + h.exp() + h
    y.backward()
    expected_h = 2.0 + np.exp(np.tanh(0.3)) + 1.0
    assert h.grad == pytest.approx(expected_h)
    assert x.grad == pytest.approx(expected_h * (1 - np.tanh(0.3) ** 2))


def test_gradients_accumulate_across_backward_calls_until_zero_grad():
    x = Value(np.array([1.0, -2.0]))
    (x * 3.0).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [6.0, 6.0])
    x.zero_grad()
    assert x.grad is None


def test_constants_get_no_gradient():
    w = Value(np.ones(3))
    c = Value(np.arange(3.0), requires_grad=False)
    (w * c).sum().backward()
    assert c.grad is None
    np.testing.assert_array_equal(w.grad, [0.0, 1.0, 2.0])


def test_array_on_the_left_records_through_reflected_operators():
    w = Value(np.ones((2, 2)))
    y = np.eye(2) @ w * np.array([1.0, 2.0])
    assert isinstance(y, Value)
    y.sum().backward()
    np.testing.assert_array_equal(w.grad, [[1.0, 2.0], [1.0, 2.0]])


def test_second_derivative_of_tanh():
    x = Value(0.7)
    (dx,) = grad(x.tanh(), x, create_graph=True)
    dx.backward()
    t = np.tanh(0.7)
    assert dx.data == pytest.approx(1 - t * t)
    assert x.grad == pytest.approx(-2 * t * (1 - t * t), rel=1e-12)


def test_hessian_vector_product_matches_finite_differences():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 3))
    x0, v = rng.standard_normal(3), rng.standard_normal(3)

    def gradient(x_data):
        x = Value(x_data)
        loss = ((Value(w, requires_grad=False) @ x).tanh() ** 2).sum() + (x * x * x).sum()
        return x, grad(loss, x, create_graph=True)[0]

    x, g = gradient(x0)
    (g * v).sum().backward()  # d/dx (grad . v) = H v
    eps = 1e-6
    numeric = (gradient(x0 + eps * v)[1].data - gradient(x0 - eps * v)[1].data) / (2 * eps)
    np.testing.assert_allclose(x.grad, numeric, rtol=1e-6, atol=1e-8)


def test_hundred_thousand_step_chain_runs_under_the_default_recursion_limit():
    assert sys.getrecursionlimit() == 1000  # Python's default: the walk must not need more
    w, b = Value(0.5), Value(0.1)
    h = Value(0.0, requires_grad=False)
    for _ in range(100_000):
        h = (w * h + b).tanh()
    h.backward()
    # Fixed point h* = tanh(0.5 h* + 0.1); far from the start dh/db converges to its fixed point too.
    h_star = h.data
    slope = 1 - h_star**2
    assert b.grad == pytest.approx(slope / (1 - 0.5 * slope), rel=1e-9)


def test_graph_is_freed_by_reference_counting_alone():
    gc.disable()
    try:
        x = Value(np.ones(3))
        y = (x * 2.0).tanh().sum()
        probe = weakref.ref(y.parents[0])
        y.backward()
        del y
        assert probe() is None, "an intermediate node outlived its graph: a reference cycle"
    finally:
        gc.enable()


def test_no_grad_records_nothing():
    w = Value(2.0)
    with no_grad():
        y = w * 3.0
    assert y.op is None and y.parents == () and not y.requires_grad


def test_enable_grad_records_again_inside_no_grad_and_restores_it_after():
    w = Value(2.0)
    with no_grad():
        with enable_grad():
            y = w * 3.0
        z = w * 3.0
    assert y.op is not None and y.requires_grad  # as torch.enable_grad inside torch.no_grad
    assert z.op is None and not z.requires_grad
    y.backward()
    assert w.grad == 3.0


def test_detach_cuts_the_graph():
    x = Value(2.0)
    y = x * x.detach()
    y.backward()
    assert x.grad == 2.0


def test_scope_tags_every_value_made_inside_and_nests():
    x = Value(1.0)
    with scope("encoder"):
        with scope("t=3"):
            y = x * 2.0
        z = y + 1.0
    assert (x.scope, y.scope, z.scope) == ("", "encoder/t=3", "encoder")


def test_grad_leaves_dot_grad_untouched_and_returns_zeros_for_unused_inputs():
    x, unused = Value(np.array([1.0, 2.0])), Value(np.array([5.0]))
    gx, gu = grad((x * x).sum(), [x, unused])
    np.testing.assert_array_equal(gx, [2.0, 4.0])
    np.testing.assert_array_equal(gu, [0.0])
    assert x.grad is None


def test_subgraph_restricts_the_walk_and_gives_the_same_gradient():
    w = Value(np.array([[0.5, -0.2], [0.1, 0.9]]))
    states = [Value(np.array([0.3, -0.4]))]
    for _ in range(4):
        states.append((states[-1] @ w).tanh())
    order = subgraph([states[3]], [states[2]])
    ids = {id(node) for node in order}  # (by identity: == on Values is elementwise, as on tensors)
    assert id(states[1]) not in ids and id(states[0]) not in ids
    seed = np.array([1.0, 0.0])
    np.testing.assert_allclose(grad(states[3], states[2], seed, order=order)[0], grad(states[3], states[2], seed)[0])


def test_softmax_and_log_softmax_are_stable_and_agree():
    logits = Value(np.array([[1000.0, 1001.0, 999.0], [-5.0, 0.0, 5.0]]))
    p = softmax(logits, axis=1)
    np.testing.assert_allclose(p.data.sum(axis=1), [1.0, 1.0])
    np.testing.assert_allclose(np.exp(log_softmax(logits, axis=1).data), p.data, rtol=1e-12)
    assert np.all(np.isfinite(log_softmax(logits).data))


@pytest.mark.parametrize("axis, keepdims", [(-1, False), (0, False), (1, True), (-1, True)])
def test_logsumexp_is_log_of_summed_exp_stable_and_its_gradient_is_softmax(axis, keepdims):
    x = np.random.default_rng(4).normal(size=(3, 4)) * 3.0
    value = Value(x)
    out = logsumexp(value, axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(out.data, np.log(np.exp(x).sum(axis=axis, keepdims=keepdims)), rtol=1e-12)
    out.sum().backward()
    np.testing.assert_allclose(value.grad, softmax(Value(x), axis=axis).data, rtol=1e-12)
    huge = logsumexp(Value(x + 1000.0), axis=axis, keepdims=keepdims).data  # exp(1000) overflows
    np.testing.assert_allclose(huge, out.data + 1000.0, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_logsumexp_of_infinite_rows_is_infinite_not_nan(dtype):
    # log(e^-inf + e^-inf) = -inf, log(e^inf + e^1) = inf, log(e^-inf + e^0) = 0 (PyTorch's answers)
    rows = np.array([[-np.inf, -np.inf], [np.inf, 1.0], [-np.inf, 0.0]], dtype=dtype)
    with np.errstate(invalid="raise"):  # no inf - inf on the way
        out = logsumexp(Value(rows), axis=-1).data
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, [-np.inf, np.inf, 0.0])


def test_composites_pass_gradcheck():
    rng = np.random.default_rng(3)
    a, b = Value(rng.standard_normal((3, 4))), Value(rng.standard_normal((3, 4)))
    assert gradcheck(lambda a: softmax(a, axis=0)[:, 1:3] * 2.0, [a])
    assert gradcheck(lambda a: log_softmax(a)[np.arange(3), np.array([0, 3, 1])].sum(), [a])
    assert gradcheck(lambda a: logsumexp(a, axis=0) * np.arange(4.0), [a])
    assert gradcheck(lambda a, b: stack([a, b], axis=1).mean(axis=(0, 2)), [a, b])
    assert gradcheck(lambda a, b: (a.abs() + 0.5) ** b, [a, b])  # a Value exponent: exp(b ln a)


def test_subgraph_reaches_a_constant_initial_state_and_skips_the_weights():
    w = Value(np.array([[0.5, -0.2], [0.1, 0.9]]))
    h0 = Value(np.zeros(2), requires_grad=False)
    h1 = (h0 @ w + 0.3).tanh()
    order = subgraph([h1], [h0])
    ids = {id(node) for node in order}
    assert id(h0) in ids and id(w) not in ids
    (row,) = grad(h1, h0, np.array([1.0, 0.0]), order=order)
    np.testing.assert_allclose(row, (1 - np.tanh(0.3) ** 2) * w.data[:, 0])
    assert w.grad is None


def test_grad_without_hooks_leaves_hooks_unrun():
    x = Value(np.ones(2))
    y = x * 3.0
    calls = []
    y.register_hook(lambda g: calls.append(g))
    grad(y.sum(), x, hooks=False)
    assert calls == []
    grad(y.sum(), x)
    assert len(calls) == 1


def test_scalar_graphs_follow_numpys_rules_for_infinities_and_nans():
    with np.errstate(divide="ignore", invalid="ignore"):
        zero = Value(0.0)
        assert zero.log().data == -np.inf
        assert (Value(1.0) / zero).data == np.inf
        assert (zero ** -1).data == np.inf
        assert np.isnan((Value(-8.0) ** (1 / 3)).data)  # not a complex number
        y = zero.log()
        y.backward()
        assert zero.grad == np.inf

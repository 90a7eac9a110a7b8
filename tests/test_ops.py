"""Every primitive, from one table (tests/op_table.py): forward against numpy, the elementwise
derivative and every vector-Jacobian product against central differences in float64, edge norms against the SVD of the
numerical Jacobian; over hypothesis-drawn shapes, broadcasting included. The table's composites
(softplus, minimum, split) are checked as wholes: forward, gradient, float32, recorded gradient."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes
from op_table import OPS

from tinygrad_rnn import Value, grad

EPS = 1e-6
SETTINGS = settings(max_examples=30, deadline=None)
PRIMITIVES = [case for case in OPS if case.primitive]
ELEMENTWISE = [case for case in PRIMITIVES if case.elementwise]


def draw_inputs(data, case, shapes=None):
    shapes = data.draw(case.shapes, label="shapes") if shapes is None else shapes
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    return case.make_inputs(rng, shapes)


def numerical_vjp(reference, arrays, k, g):
    """d/d arrays[k] of sum(reference(*arrays) * g), one central difference per element."""
    x = arrays[k]
    result = np.zeros_like(x)
    for j in range(x.size):
        values = []
        for step in (EPS, -EPS):
            shifted = x.copy()
            shifted.flat[j] += step
            values.append(np.sum(reference(*arrays[:k], shifted, *arrays[k + 1:]) * g))
        result.flat[j] = (values[0] - values[1]) / (2 * EPS)
    return result


def numerical_jacobian(reference, arrays, k):
    out_size = np.size(reference(*arrays))
    rows = [numerical_vjp(reference, arrays, k, np.eye(out_size)[i].reshape(np.shape(reference(*arrays))))
            for i in range(out_size)]
    return np.array([r.ravel() for r in rows]).reshape(out_size, arrays[k].size)


def recorded(case, arrays):
    values = [Value(a) for a in arrays]
    out = case.call(*values)
    assert [p for p in out.parents] == values, f"{case.name} should record one node over its inputs"
    return values, out, [p.data for p in out.parents]


@pytest.mark.parametrize("case", OPS, ids=lambda c: c.name)
@given(data=st.data())
@SETTINGS
def test_forward_matches_numpy(case, data):
    arrays = draw_inputs(data, case)
    out = case.call(*[Value(a) for a in arrays])
    expected = case.reference(*arrays)
    assert np.shape(out.data) == np.shape(expected)
    np.testing.assert_allclose(out.data, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", ELEMENTWISE, ids=lambda c: c.name)
@given(data=st.data())
@SETTINGS
def test_elementwise_derivative_matches_central_differences(case, data):
    # Same-shaped inputs: each output element depends on one element of each input, so shifting a
    # whole input by eps measures every diagonal entry of the Jacobian at once.
    shape = data.draw(array_shapes(min_dims=0, max_dims=3, max_side=4), label="shape")
    arity = case.call.__code__.co_argcount
    arrays = draw_inputs(data, case, [shape] * arity)
    values, out, inputs = recorded(case, arrays)
    for k in range(arity):
        plus = case.reference(*arrays[:k], arrays[k] + EPS, *arrays[k + 1:])
        minus = case.reference(*arrays[:k], arrays[k] - EPS, *arrays[k + 1:])
        derivative = np.broadcast_to(out.op.derivative(k, out.data, *inputs), np.shape(out.data))
        np.testing.assert_allclose(derivative, (plus - minus) / (2 * EPS), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", [case for case in OPS if not case.primitive], ids=lambda c: c.name)
@given(data=st.data())
@SETTINGS
def test_composite_gradient_matches_central_differences(case, data):
    arrays = draw_inputs(data, case)
    values = [Value(a) for a in arrays]
    out = case.call(*values)
    g = np.random.default_rng(1).standard_normal(np.shape(out.data))
    out.backward(g if out.shape else float(g))
    for k, value in enumerate(values):
        assert np.shape(value.grad) == value.shape, "a gradient has its input's shape"
        np.testing.assert_allclose(value.grad, numerical_vjp(case.reference, arrays, k, g), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", PRIMITIVES, ids=lambda c: c.name)
@given(data=st.data())
@SETTINGS
def test_vjp_matches_central_differences_and_backward(case, data):
    arrays = draw_inputs(data, case)
    values, out, inputs = recorded(case, arrays)
    g = np.random.default_rng(1).standard_normal(np.shape(out.data))
    out.backward(g if out.shape else float(g))
    for k, value in enumerate(values):
        analytic = out.op.vjp(k, g if out.shape else float(g), out.data, inputs)
        assert np.shape(analytic) == value.shape, "a gradient has its input's shape"
        np.testing.assert_allclose(analytic, numerical_vjp(case.reference, arrays, k, g), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(value.grad, analytic, rtol=1e-12, atol=0)


@pytest.mark.parametrize("case", PRIMITIVES, ids=lambda c: c.name)
@given(data=st.data())
@settings(max_examples=10, deadline=None)
def test_jacobian_norm_is_the_spectral_norm(case, data):
    arrays = draw_inputs(data, case)
    values, out, inputs = recorded(case, arrays)
    for k in range(len(values)):
        expected = np.linalg.norm(numerical_jacobian(case.reference, arrays, k), 2)
        assert out.op.jacobian_norm(k, out.data, inputs) == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("case", OPS, ids=lambda c: c.name)
@given(data=st.data())
@settings(max_examples=10, deadline=None)
def test_vjp_formula_records_itself_on_values(case, data):
    # With create_graph=True the same formulas run on Values; they must give the same numbers.
    arrays = draw_inputs(data, case)
    values = [Value(a) for a in arrays]
    out = case.call(*values)
    g = np.random.default_rng(2).standard_normal(np.shape(out.data))
    seed = g if out.shape else float(g)
    on_arrays = grad(out, values, seed)
    on_values = grad(out, values, seed, create_graph=True)
    for fast, recorded_grad in zip(on_arrays, on_values):
        assert isinstance(recorded_grad, Value)
        np.testing.assert_allclose(recorded_grad.data, fast, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("case", OPS, ids=lambda c: c.name)
@given(data=st.data())
@settings(max_examples=5, deadline=None)
def test_float32_stays_float32(case, data):
    arrays = [a.astype(np.float32) for a in draw_inputs(data, case)]
    values = [Value(a) for a in arrays]
    out = case.call(*values)
    assert np.result_type(out.data) == np.float32
    out.sum().backward()
    for v in values:
        assert np.result_type(v.grad) == np.float32


def test_each_op_gives_its_own_label():
    from tinygrad_rnn import ops

    assert ops.Add().label() == "+" and ops.MatMul().label() == "@" and ops.Sigmoid().label() == "σ"
    assert ops.Tanh().label() == "tanh"  # no symbol: its name
    assert ops.Pow(2.0).label() == "x^2" and ops.Pow().label() == "x^y"
    assert ops.Sum().label() == "Σ" and ops.Sum(axis=1).label() == "Σ axis 1" and ops.Max(axis=0).label() == "max axis 0"
    assert ops.Reshape((3, 4)).label() == "reshape 3×4" and ops.BroadcastTo((2, 5)).label() == "broadcast 2×5"
    assert ops.GetItem((slice(None), 0)).label() == "[:, 0]"
    assert ops.ScatterAdd((slice(None), 0), (2, 3)).label() == "scatter + [:, 0]"

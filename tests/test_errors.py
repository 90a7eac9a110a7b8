"""Bad input gets an error that names the op and the shapes or values at fault."""

from __future__ import annotations

import numpy as np
import pytest

from tinygrad_rnn import GradcheckError, Value, concat, grad, gradcheck, stack


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: Value(np.ones((3, 4))) @ Value(np.ones((5, 2))), ValueError, r"matmul: shapes \(3, 4\) and \(5, 2\) do not align \(4 != 5\)"),
        (lambda: Value(np.ones(3)) + Value(np.ones(4)), ValueError, r"add: shapes \(3,\) and \(4,\) cannot be broadcast"),
        (lambda: Value(np.ones(3)) * np.ones((2, 2)), ValueError, r"mul: shapes \(3,\) and \(2, 2\) cannot be broadcast"),
        (lambda: Value("abc"), TypeError, r"Value: data must be a number or a numeric array, got str"),
        (lambda: Value(None), TypeError, r"got NoneType"),
        (lambda: Value(np.array([1, "a"], dtype=object)), TypeError, r"dtype object"),
        (lambda: Value(np.ones(3)) * "x", TypeError, r"got str"),
        (lambda: Value(np.ones(3))[5], IndexError, r"getitem: index 5 is out of bounds for axis 0 with size 3"),
        (lambda: Value(np.ones(3))[np.array([0, 7])], IndexError, r"getitem: index 7 is out of bounds"),
        (lambda: Value(np.ones(3)).backward(), ValueError, r"backward: output has shape \(3,\); only a single number"),
        (lambda: Value(np.ones(3)).backward(np.ones(2)), ValueError, r"backward: grad has shape \(2,\) but the output has shape \(3,\)"),
        (lambda: grad(Value(np.ones(2)).sum(), [Value(1.0)], [np.ones(3)]), ValueError, r"grad: grad has shape \(3,\)"),
        (lambda: Value(np.ones(3)).reshape(2, 2), ValueError, r"reshape: cannot reshape array of size 3"),
        (lambda: stack([Value(np.ones(2)), Value(np.ones(3))]), ValueError, r"stack: all Values need the same shape"),
        (lambda: concat([Value(np.ones((2, 2))), Value(np.ones((2, 3)))]), ValueError, r"concat: .*input shapes \(2, 2\) and \(2, 3\)"),
        (lambda: Value(np.ones(3)).item(), ValueError, r"item: only a one-element Value"),
    ],
)
def test_bad_input_names_the_op_and_what_is_wrong(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_hook_returning_the_wrong_shape_is_named():
    x = Value(np.ones(3))

    def halve_wrongly(g):
        return g[:2]

    x.register_hook(halve_wrongly)
    with pytest.raises(ValueError, match=r"hook halve_wrongly on Value\(shape=\(3,\).*shape \(2,\), expected .*\(3,\)"):
        (x * 2.0).sum().backward()


def test_gradcheck_names_the_input_and_element_of_a_wrong_derivative():
    x = Value(np.array([0.1, 0.9, -0.4]), name="x")

    def wrong(v):  # forward tanh(v), but a gradient of 1 as if it were the identity
        return v.tanh().detach() + v - v.detach()

    with pytest.raises(GradcheckError, match=r"input 0 \('x'\) of shape \(3,\), element \(1,\).*analytic 1 vs numeric 0.4869"):
        gradcheck(wrong, [x])


def test_gradcheck_demands_float64():
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda v: v * 2.0, [Value(np.ones(2, dtype=np.float32))])

"""Elementwise primitives: the local derivative of each is the diagonal of its Jacobian."""

from __future__ import annotations

import math

import numpy as np

from tinygrad_rnn.ops.base import Op, mask, raw, shape_of, unbroadcast

# ---- elementwise, two inputs -------------------------------------------------------------------

class Add(Op):
    """add: y = a + b;  dy/da = 1, dy/db = 1"""

    name = "add"

    def forward(self, a, b):
        return a + b

    def local(self, out, a, b):
        return (1.0, 1.0)

    def vjp(self, k, grad, out, a, b):
        return unbroadcast(grad, shape_of((a, b)[k]))


class Sub(Op):
    """sub: y = a - b;  dy/da = 1, dy/db = -1"""

    name = "sub"

    def forward(self, a, b):
        return a - b

    def local(self, out, a, b):
        return (1.0, -1.0)

    def vjp(self, k, grad, out, a, b):
        return unbroadcast(grad if k == 0 else -grad, shape_of((a, b)[k]))


class Mul(Op):
    """mul: y = a * b;  dy/da = b, dy/db = a"""

    name = "mul"

    def forward(self, a, b):
        return a * b

    def local(self, out, a, b):
        return (b, a)


class Div(Op):
    """div: y = a / b;  dy/da = 1/b, dy/db = -a/b^2 = -y/b"""

    name = "div"

    def forward(self, a, b):
        return np.divide(a, b)  # numpy's rules for Python floats too: 1/0 is inf, not an exception

    def local(self, out, a, b):
        return (reciprocal(b), -out / b)


def reciprocal(x):
    """1/x on arrays and Values (recorded) alike, and on Python floats by numpy's rules: 1/0 is inf
    (with numpy's warning), not a ZeroDivisionError, so scalar graphs behave as arrays do."""
    return Div()(1.0, x)


class Maximum(Op):
    """maximum: y = max(a, b) elementwise;  dy/da = [a > b], dy/db = [b > a], ties split 1/2 each
    (PyTorch's rule)."""

    name = "maximum"

    def forward(self, a, b):
        return np.maximum(a, b)

    def local(self, out, a, b):
        a, b = raw(a), raw(b)
        tie = 0.5 * mask(a == b, a)
        return (mask(a > b, a) + tie, mask(b > a, a) + tie)


class Where(Op):
    """where: y = a where cond else b (cond is a constant mask);  dy/da = cond, dy/db = 1 - cond"""

    name = "where"

    def __init__(self, cond):
        self.cond = np.asarray(cond, dtype=bool)

    def forward(self, a, b):
        return np.where(self.cond, a, b)

    def local(self, out, a, b):
        return (mask(self.cond, raw(a)), mask(~self.cond, raw(a)))

    def params(self):
        return {"cond": f"mask{self.cond.shape}"}


# ---- elementwise, one input --------------------------------------------------------------------

class Neg(Op):
    """neg: y = -x;  dy/dx = -1"""

    name = "neg"

    def forward(self, x):
        return -x

    def local(self, out, x):
        return (-1.0,)

    def vjp(self, k, grad, out, x):
        return -grad


class Pow(Op):
    """pow: y = x^p for a constant p;  dy/dx = p x^(p-1)"""

    name = "pow"

    def __init__(self, exponent: float):
        self.exponent = exponent

    def forward(self, x):
        return np.power(x, self.exponent)  # a negative base to a fractional power is nan, not complex

    def local(self, out, x):
        return (self.exponent * Pow(self.exponent - 1)(x),)


class Exp(Op):
    """exp: y = e^x;  dy/dx = y"""

    name = "exp"

    def forward(self, x):
        return np.exp(x)

    def local(self, out, x):
        return (out,)


class Log(Op):
    """log: y = ln x;  dy/dx = 1/x"""

    name = "log"

    def forward(self, x):
        return np.log(x)

    def local(self, out, x):
        return (reciprocal(x),)


class Tanh(Op):
    """tanh: y = tanh(x);  dy/dx = 1 - y^2"""

    name = "tanh"

    def forward(self, x):
        return math.tanh(x) if type(x) is float else np.tanh(x)

    def local(self, out, x):
        return (1.0 - out * out,)


class Sigmoid(Op):
    """sigmoid: y = 1 / (1 + e^-x);  dy/dx = y (1 - y)"""

    name = "sigmoid"

    def forward(self, x):
        # 0.5 (1 + tanh(x/2)) is the same function and never overflows.
        return 0.5 + 0.5 * (math.tanh(0.5 * x) if type(x) is float else np.tanh(0.5 * x))

    def local(self, out, x):
        return (out * (1.0 - out),)


class Relu(Op):
    """relu: y = max(x, 0);  dy/dx = [x > 0]"""

    name = "relu"

    def forward(self, x):
        return (x if x > 0.0 else 0.0) if type(x) is float else np.maximum(x, 0.0)

    def local(self, out, x):
        return (mask(raw(x) > 0.0, raw(x)),)


class LeakyRelu(Op):
    """leaky_relu: y = x if x > 0 else slope x;  dy/dx = 1 if x > 0 else slope"""

    name = "leaky_relu"

    def __init__(self, slope: float):
        self.slope = slope

    def forward(self, x):
        return np.where(x > 0.0, x, self.slope * x)

    def local(self, out, x):
        x = raw(x)
        return (self.slope + (1.0 - self.slope) * mask(x > 0.0, x),)


class Abs(Op):
    """abs: y = |x|;  dy/dx = sign(x) (0 at 0)"""

    name = "abs"

    def forward(self, x):
        return np.abs(x)

    def local(self, out, x):
        return (np.sign(raw(x)),)


class Clip(Op):
    """clip: y = min(max(x, lo), hi);  dy/dx = [lo <= x <= hi]"""

    name = "clip"

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def forward(self, x):
        return np.clip(x, self.lo, self.hi)

    def local(self, out, x):
        x = raw(x)
        inside = np.ones_like(x, dtype=bool)
        if self.lo is not None:
            inside &= x >= self.lo
        if self.hi is not None:
            inside &= x <= self.hi
        return (mask(inside, x),)

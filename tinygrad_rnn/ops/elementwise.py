"""Elementwise primitives. Each states its derivative once, as the diagonal of its Jacobian
(``Elementwise`` in base.py turns that into the vector-Jacobian product and the edge norm)."""

from __future__ import annotations

import math

import numpy as np

from tinygrad_rnn.ops.base import Elementwise, mask, raw

# ---- two inputs --------------------------------------------------------------------------------


class Add(Elementwise):
    """add: y = a + b;  dy/da = dy/db = 1"""

    name, symbol = "add", "+"

    def forward(self, a, b):
        return a + b

    def derivative(self, k, out, a, b):
        return 1.0


class Sub(Elementwise):
    """sub: y = a - b;  dy/da = 1, dy/db = -1"""

    name, symbol = "sub", "−"

    def forward(self, a, b):
        return a - b

    def derivative(self, k, out, a, b):
        return (1.0, -1.0)[k]


class Mul(Elementwise):
    """mul: y = a * b;  dy/da = b, dy/db = a"""

    name, symbol = "mul", "×"

    def forward(self, a, b):
        return a * b

    def derivative(self, k, out, a, b):
        return b if k == 0 else a


class Div(Elementwise):
    """div: y = a / b;  dy/da = 1/b, dy/db = -a/b^2 = -y/b"""

    name, symbol = "div", "÷"

    def forward(self, a, b):
        if type(a) is float and type(b) is float:
            return float(np.divide(a, b))  # numpy's rules, not Python's: 1/0 is inf, not an exception
        return np.divide(a, b)

    def derivative(self, k, out, a, b):
        return reciprocal(b) if k == 0 else -out / b


def reciprocal(x):
    """1/x on arrays and Values (recorded) alike, and on Python floats by numpy's rules."""
    return Div()(1.0, x)


class Pow(Elementwise):
    """pow: y = a^b;  dy/da = b a^(b-1), dy/db = y ln a.

    ``Pow(2.0)(x)`` holds a constant exponent as a parameter (one input, drawn as x^2); ``Pow()(a, b)``
    takes the exponent as a second input. PyTorch's conventions where the formulas break down:
    dy/da = 0 where b = 0 (a^0 = 1 for every a, 0 included), and dy/db = 0 where a = 0 and b >= 0.
    A negative base to a fractional power is nan, as in numpy, not a complex number.
    """

    name = "pow"

    def __init__(self, exponent: float | None = None):
        self.exponent = None if exponent is None else float(exponent)

    def forward(self, a, b=None):
        b = self.exponent if b is None else b
        if type(a) is float and type(b) is float:
            return float(np.power(a, b))
        return np.power(a, b)

    def derivative(self, k, out, a, b=None):
        b = self.exponent if b is None else b
        with np.errstate(divide="ignore", invalid="ignore"):  # the masked-out entries may be inf or nan
            if k == 0:
                return _unless(raw(b) == 0, b * Pow()(a, b - 1.0))
            return _unless((raw(a) == 0) & (raw(b) >= 0), out * Log()(a))

    def params(self):
        return {} if self.exponent is None else {"exponent": self.exponent}

    def label(self) -> str:
        return "x^y" if self.exponent is None else f"x^{self.exponent:.3g}"


def _unless(condition, value):
    """``value``, with 0 where ``condition`` holds (a select, not a product: 0 * inf would be nan)."""
    if not np.any(condition):
        return value
    if np.ndim(condition) == 0:
        return 0.0
    return Where(condition)(0.0, value)


class Maximum(Elementwise):
    """maximum: y = max(a, b);  dy/da = [a > b], dy/db = [b > a], ties split 1/2 each (PyTorch's rule)"""

    name, symbol = "maximum", "max"

    def forward(self, a, b):
        return float(np.maximum(a, b)) if type(a) is float and type(b) is float else np.maximum(a, b)

    def derivative(self, k, out, a, b):
        mine, other = (raw(a), raw(b)) if k == 0 else (raw(b), raw(a))
        return mask(mine > other, mine) + 0.5 * mask(mine == other, mine)


class Where(Elementwise):
    """where: y = a where cond else b (cond is a constant mask);  dy/da = cond, dy/db = 1 - cond"""

    name = "where"

    def __init__(self, cond):
        self.cond = np.asarray(cond, dtype=bool)

    def forward(self, a, b):
        out = np.where(self.cond, a, b)
        return float(out) if out.ndim == 0 and type(a) is float and type(b) is float else out  # as other ops

    def derivative(self, k, out, a, b):
        return mask(self.cond if k == 0 else ~self.cond, raw(out))

    def params(self):
        return {"cond": f"mask{self.cond.shape}"}


# ---- one input ---------------------------------------------------------------------------------


class Neg(Elementwise):
    """neg: y = -x;  dy/dx = -1"""

    name, symbol = "neg", "−x"

    def forward(self, x):
        return -x

    def derivative(self, k, out, x):
        return -1.0


class Exp(Elementwise):
    """exp: y = e^x;  dy/dx = y"""

    name = "exp"

    def forward(self, x):
        return float(np.exp(x)) if type(x) is float else np.exp(x)  # numpy's rules: overflow is inf

    def derivative(self, k, out, x):
        return out


class Log(Elementwise):
    """log: y = ln x;  dy/dx = 1/x"""

    name = "log"

    def forward(self, x):
        return float(np.log(x)) if type(x) is float else np.log(x)  # numpy's rules: log 0 is -inf

    def derivative(self, k, out, x):
        return reciprocal(x)


class Tanh(Elementwise):
    """tanh: y = tanh(x);  dy/dx = 1 - y^2"""

    name = "tanh"

    def forward(self, x):
        return math.tanh(x) if type(x) is float else np.tanh(x)

    def derivative(self, k, out, x):
        return 1.0 - out * out


class Sigmoid(Elementwise):
    """sigmoid: y = 1 / (1 + e^-x);  dy/dx = y (1 - y)"""

    name, symbol = "sigmoid", "σ"

    def forward(self, x):
        # 0.5 (1 + tanh(x/2)) is the same function and never overflows.
        return 0.5 + 0.5 * (math.tanh(0.5 * x) if type(x) is float else np.tanh(0.5 * x))

    def derivative(self, k, out, x):
        return out * (1.0 - out)


class Relu(Elementwise):
    """relu: y = max(x, 0);  dy/dx = [x > 0]"""

    name = "relu"

    def forward(self, x):
        return (x if x > 0.0 else 0.0) if type(x) is float else np.maximum(x, 0.0)

    def derivative(self, k, out, x):
        return mask(raw(x) > 0.0, raw(x))


class LeakyRelu(Elementwise):
    """leaky_relu: y = x if x > 0 else slope x;  dy/dx = 1 if x > 0 else slope"""

    name, symbol = "leaky_relu", "leaky relu"

    def __init__(self, slope: float):
        self.slope = float(slope)

    def forward(self, x):
        if type(x) is float:
            return x if x > 0.0 else self.slope * x
        return np.where(x > 0.0, x, x * self.slope)

    def derivative(self, k, out, x):
        x = raw(x)
        return self.slope + (1.0 - self.slope) * mask(x > 0.0, x)


class Abs(Elementwise):
    """abs: y = |x|;  dy/dx = sign(x) (0 at 0)"""

    name, symbol = "abs", "|x|"

    def forward(self, x):
        return abs(x) if type(x) is float else np.abs(x)

    def derivative(self, k, out, x):
        x = raw(x)
        return float(np.sign(x)) if type(x) is float else np.sign(x)


class Clip(Elementwise):
    """clip: y = min(max(x, lo), hi);  dy/dx = [lo <= x <= hi]"""

    name = "clip"

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def forward(self, x):
        if type(x) is np.ndarray:  # the method: np.clip's wrapper costs nearly as much as the clip (as Reshape)
            return x.clip(self.lo, self.hi)
        out = np.clip(x, self.lo, self.hi)
        return float(out) if type(x) is float else out

    def derivative(self, k, out, x):
        x = raw(x)
        inside = np.ones_like(x, dtype=bool)
        if self.lo is not None:
            inside &= x >= self.lo
        if self.hi is not None:
            inside &= x <= self.hi
        return mask(inside, x)

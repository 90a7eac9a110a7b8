"""Elementwise primitives. Each states its derivative once, as the diagonal of its Jacobian
(``Elementwise`` in base.py turns that into the vector-Jacobian product and the edge norm; ``Masked``
below does the same for the ops whose derivative says only where the gradient passes)."""

from __future__ import annotations

import math

import numpy as np

from tinygrad_rnn.ops.base import Elementwise, mask, raw, shape_of, unbroadcast

# ---- masks -------------------------------------------------------------------------------------


def select(passes, grad):
    """``grad`` where ``passes`` is nonzero (scaled by it: maximum's 1/2 at a tie), 0 where it is 0.

    A select, not a product: where nothing passes the result is 0 even if the gradient there is
    inf or nan (a product would give 0 * inf = nan), as PyTorch's relu, clamp, where and max give.
    ``passes`` is a boolean mask, or weights that are 0 exactly where nothing passes.
    """
    if type(grad) is np.ndarray:
        passed = np.where(passes, grad, 0.0)  # (then scaled: no 0 * inf is computed, not even to be dropped)
        weighted = type(passes) is float or (type(passes) is not bool and passes.dtype.kind != "b")
        return passed * passes if weighted else passed
    if type(grad) is float:  # a scalar graph
        if passes is True:
            return grad
        return grad * float(passes) if passes else 0.0  # (float(): a weight, or numpy's True, as 1.0)
    if isinstance(grad, np.floating):
        return grad * float(passes) if passes else type(grad)(0.0)
    # A Value (create_graph=True): the selection is recorded, and is differentiated as one.
    passed = Where(passes)(grad, 0.0)
    return passed if np.result_type(passes).kind == "b" else passed * passes


class Masked(Elementwise, abstract=True):
    """An elementwise op whose derivative is a mask of where the gradient passes (relu, clip, where,
    maximum): booleans, or weights that are 0 exactly where nothing passes.

    Its vjp selects by the mask instead of multiplying: where nothing passes the gradient is 0, even
    an infinite or nan one, as in PyTorch (a product would give 0 * inf = nan).
    """

    def vjp(self, k, grad, out, inputs):
        if len(inputs) == 2:  # (spelled out as in Elementwise.vjp, so that the compiled replay inlines it)
            passes = self.derivative(k, out, inputs[0], inputs[1])
        else:
            passes = self.derivative(k, out, inputs[0])
        grad = select(passes, grad)
        x = inputs[k]
        if type(x) is float:  # (the shortcuts of Elementwise.vjp: no call where nothing was broadcast)
            return grad if type(grad) is float else unbroadcast(grad, ())
        if type(grad) is not float and grad.shape == x.shape:
            return grad
        return unbroadcast(grad, shape_of(x))


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
        return reciprocal(b) if k == 0 else divide(-out, b)

    def vjp(self, k, grad, out, inputs):
        if k == 0:  # grad / b, PyTorch's formula, as Log's (see there)
            return unbroadcast(divide(grad, inputs[1]), shape_of(inputs[0]))
        return Elementwise.vjp(self, k, grad, out, inputs)


def divide(a, b):
    """a / b on arrays and Values (recorded) alike, and on Python floats by numpy's rules: 1/0 is inf
    and 0/0 is nan, where Python's ``/`` raises ZeroDivisionError."""
    return Div()(a, b)


def reciprocal(x):
    """1/x, as ``divide``."""
    return divide(1.0, x)


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


class Maximum(Masked):
    """maximum: y = max(a, b);  dy/da = [a > b], dy/db = [b > a], ties split 1/2 each (PyTorch's rule).
    Where a or b is nan, y is nan and both get the whole gradient, as in PyTorch."""

    name, symbol = "maximum", "max"

    def forward(self, a, b):
        return float(np.maximum(a, b)) if type(a) is float and type(b) is float else np.maximum(a, b)

    def derivative(self, k, out, a, b):
        mine, other = (raw(a), raw(b)) if k == 0 else (raw(b), raw(a))
        like = raw(out)  # (weights of the output's float type: float32 gradients stay float32)
        # 1 - [mine < other] - 1/2 [tie]: nan compares false both ways, so a nan passes the whole gradient.
        return 1.0 - mask(mine < other, like) - 0.5 * mask(mine == other, like)


class Where(Masked):
    """where: y = a where cond else b (cond is a constant mask);  dy/da = cond, dy/db = 1 - cond"""

    name = "where"

    def __init__(self, cond):
        self.cond = np.asarray(cond, dtype=bool)

    def forward(self, a, b):
        out = np.where(self.cond, a, b)
        return float(out) if out.ndim == 0 and type(a) is float and type(b) is float else out  # as other ops

    def derivative(self, k, out, a, b):
        return self.cond if k == 0 else ~self.cond

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

    def vjp(self, k, grad, out, inputs):
        # grad / x, PyTorch's formula, not grad * (1/x): for a subnormal x, 1/x overflows to inf and
        # a zero gradient would become nan (and the product rounds twice).
        return divide(grad, inputs[0])


class Log1p(Elementwise):
    """log1p: y = ln(1 + x);  dy/dx = 1/(1 + x). Its own op for precision: for a tiny x, 1 + x rounds
    x's digits away before a log could see them (log(1 + 1e-20) is 0, log1p(1e-20) is 1e-20)."""

    name = "log1p"

    def forward(self, x):
        return float(np.log1p(x)) if type(x) is float else np.log1p(x)  # numpy's rules: log1p(-1) is -inf

    def derivative(self, k, out, x):
        return reciprocal(1.0 + x)

    def vjp(self, k, grad, out, inputs):
        return divide(grad, 1.0 + inputs[0])  # as Log's: grad / (1 + x), PyTorch's formula


class Tanh(Elementwise):
    """tanh: y = tanh(x);  dy/dx = 1 - y^2"""

    name = "tanh"

    def forward(self, x):
        return math.tanh(x) if type(x) is float else np.tanh(x)

    def derivative(self, k, out, x):
        return 1.0 - out * out


_EXP_LIMIT = math.log(np.finfo(np.float64).max)  # e^x is finite up to here (709.78...), inf beyond


def logistic(x):
    """1 / (1 + e^-x), as PyTorch computes it. Far left, e^-x overflows to inf and the result is 0, the
    nearest number, quietly as there; until then it keeps its digits (0.5 + 0.5 tanh(x/2) never
    overflows, but rounds to 0 below -17 in float32)."""
    if type(x) is float:  # (math.exp raises where np.exp gives inf)
        return 0.0 if x < -_EXP_LIMIT else 1.0 / (1.0 + math.exp(-x))
    with np.errstate(over="ignore"):  # (so the compiled replay calls this function, by its name)
        return 1.0 / (1.0 + np.exp(-x))


class Sigmoid(Elementwise):
    """sigmoid: y = 1 / (1 + e^-x);  dy/dx = y (1 - y)"""

    name, symbol = "sigmoid", "σ"

    def forward(self, x):
        return logistic(x)

    def derivative(self, k, out, x):
        return out * (1.0 - out)


class Relu(Masked):
    """relu: y = max(x, 0);  dy/dx = [x > 0] (and, as in PyTorch, the gradient passes where x is nan)"""

    name = "relu"

    def forward(self, x):
        return (0.0 if x <= 0.0 else x) if type(x) is float else np.maximum(x, 0.0)  # (nan stays nan)

    def derivative(self, k, out, x):
        return raw(out) != 0.0  # PyTorch's test, on the output: not where relu gave 0


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
        # A product (PyTorch's too): with slope 0, an infinite gradient at x <= 0 gives nan, as there.
        x = raw(x)
        if type(x) is float:
            return 1.0 if x > 0.0 else self.slope
        return np.where(x > 0.0, 1.0, self.slope).astype(np.result_type(x))


class Abs(Elementwise):
    """abs: y = |x|;  dy/dx = sign(x) (0 at 0, and at nan as in PyTorch)"""

    name, symbol = "abs", "|x|"

    def forward(self, x):
        return abs(x) if type(x) is float else np.abs(x)

    def derivative(self, k, out, x):
        x = raw(x)  # [x > 0] - [x < 0], not np.sign: that is nan at nan
        if type(x) is float:
            return float((x > 0.0) - (x < 0.0))
        return mask(x > 0.0, x) - mask(x < 0.0, x)


class Clip(Masked):
    """clip: y = min(max(x, lo), hi);  dy/dx = [lo <= x <= hi]"""

    name = "clip"

    def __init__(self, lo, hi):
        # A number bound is weak, as in PyTorch: numpy's float64 scalar would make a float32 x float64.
        self.lo, self.hi = (float(b) if isinstance(b, (int, float, np.generic)) else b for b in (lo, hi))

    def forward(self, x):
        if type(x) is np.ndarray:  # the method: np.clip's wrapper costs nearly as much as the clip (as Reshape)
            return x.clip(self.lo, self.hi)
        out = np.clip(x, self.lo, self.hi)
        return float(out) if type(x) is float else out

    def derivative(self, k, out, x):
        x = raw(x)  # (nan is inside neither bound: no gradient, as in PyTorch)
        inside = True
        if self.lo is not None:
            inside = x >= self.lo
        if self.hi is not None:
            inside = inside & (x <= self.hi)
        return inside


class Cast(Elementwise):
    """cast: y = x as another float type;  dy/dx = 1, and the gradient is cast back to x's type.

    The engine inserts it where an op's inputs must meet in PyTorch's float type rather than
    numpy's (a 0-d float32 times Value(2.0) is computed in float64): see ``value.apply``.
    """

    name = "cast"

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)

    def forward(self, x):
        y = np.asarray(x, dtype=self.dtype)
        return float(y) if y.ndim == 0 and self.dtype == np.float64 else y  # (as Value keeps a 0-d float64)

    def derivative(self, k, out, x):
        return 1.0

    def vjp(self, k, grad, out, inputs):
        return Cast(np.result_type(inputs[0]))(grad)  # as PyTorch: x's gradient has x's type

    def params(self):
        return {"dtype": str(self.dtype)}

    def label(self) -> str:
        return f"as {self.dtype}"

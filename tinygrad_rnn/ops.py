"""Primitive ops: each class holds its forward and its local derivative side by side.

An op instance carries only its parameters (an axis, a slope, an index), never data, so a recorded
graph holds no closures and no cycles. The data lives on the Values; an op is handed it when asked:

- ``forward(*inputs)`` computes the output from the inputs' data.
- ``local(out, *inputs)`` gives, per input, the local derivative in its natural compact form: for an
  elementwise op, the diagonal of the Jacobian d(out)/d(input) (an array of the output's shape, or a
  number that stands for a constant diagonal); for matmul, the other operand.
- ``vjp(k, grad, out, *inputs)`` turns the output's gradient into input k's contribution. The default,
  right for every elementwise op, is ``unbroadcast(grad * local_k, shape of input k)``; the others
  (matmul, reductions, shape ops) override it.
- ``jacobian_norm(k, out, *inputs)`` is the spectral norm of d(out)/d(input k): how much this edge can
  stretch a gradient. The renderer asks it; it is exact and cheap for every primitive here.

Derivative formulas use only operators that numpy arrays and Values share (``*``, ``@``, ``.T``,
``.sum``, ``1 - y*y``) or call other ops. The backward pass hands them raw arrays for speed, or Values
when ``create_graph=True``, in which case the backward pass is itself recorded and can be
differentiated again. Masks (which input was the max, which side of a kink) are computed from raw data:
they are constants whose derivative is zero almost everywhere.

Calling an op, ``Tanh()(x)``, records a node when any argument is a Value and otherwise just runs the
forward on raw data; that one rule lets derivative formulas call ops on either kind of argument.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "Op", "Add", "Sub", "Mul", "Div", "Neg", "Pow", "Exp", "Log", "Tanh", "Sigmoid", "Relu",
    "LeakyRelu", "Abs", "Clip", "Maximum", "Where", "Sum", "Max", "MatMul", "Reshape", "Transpose",
    "BroadcastTo", "GetItem", "ScatterAdd", "Concat", "unbroadcast", "shape_of", "raw",
]


def shape_of(x) -> tuple:
    """The shape of an array, a Value or a Python number (``()``)."""
    return () if type(x) in (float, int, bool) else x.shape


# Raw data: what the backward pass hands formulas when it is not recording them.
RAW_TYPES = (np.ndarray, np.generic, float, int, bool)


def raw(x):
    """The data behind a Value; raw data unchanged."""
    return x if isinstance(x, RAW_TYPES) else x.data


def mask(condition, like):
    """A condition as 0/1 numbers of ``like``'s float type (so float32 gradients stay float32)."""
    if type(condition) is bool:
        return float(condition)
    return np.asarray(condition, dtype=np.result_type(like))


def unbroadcast(grad, shape: tuple):
    """Sum ``grad`` back to ``shape``: the one place where numpy broadcasting is undone.

    Broadcasting copies an input along new leading axes and along axes of length 1, so by the chain
    rule the gradient of the input is the sum of the gradient over those copies.
    """
    grad_shape = () if type(grad) is float else grad.shape  # shape_of, inlined: a hot path
    if grad_shape == shape:
        return grad
    if shape == ():
        return grad.sum()
    extra = len(grad_shape) - len(shape)
    axes = tuple(range(extra)) + tuple(
        extra + i for i, n in enumerate(shape) if n == 1 and grad_shape[extra + i] != 1
    )
    return grad.sum(axis=axes, keepdims=True).reshape(shape)


def _swap_last(x):
    """Transpose the last two axes (a matrix's .T, batched)."""
    return x.T if len(shape_of(x)) == 2 else Transpose(_last_two_swapped(len(shape_of(x))))(x)


def _last_two_swapped(ndim: int) -> tuple:
    return tuple(range(ndim - 2)) + (ndim - 1, ndim - 2)


class Op:
    """Base class of the primitives. Subclasses define ``forward`` and ``local`` (and ``vjp`` where
    the default elementwise rule does not hold)."""

    name = "op"
    elementwise = True

    def __call__(self, *args):
        for a in args:
            if not isinstance(a, RAW_TYPES):
                from tinygrad_rnn.value import apply  # value.py imports this module

                return apply(self, *args)
        return self.forward(*args)

    def forward(self, *inputs):
        raise NotImplementedError

    def local(self, out, *inputs) -> tuple:
        raise NotImplementedError

    def vjp(self, k: int, grad, out, *inputs):
        return unbroadcast(grad * self.local(out, *inputs)[k], shape_of(inputs[k]))

    def jacobian_norm(self, k: int, out, *inputs) -> float:
        # Elementwise: J = diag(local) B, where B copies each input element to its broadcast
        # positions. J^T J is diagonal, holding per input element the sum of local^2 over its
        # copies; so the spectral norm is the square root of the largest such sum (without
        # broadcasting: the largest |local derivative|).
        out_shape = shape_of(raw(out))
        squares = np.broadcast_to(np.square(raw(self.local(out, *inputs)[k])), out_shape)
        return float(np.sqrt(np.max(unbroadcast(squares, shape_of(raw(inputs[k]))), initial=0.0)))

    def params(self) -> dict:
        """The op's parameters, for labels and repr."""
        return {k: v for k, v in vars(self).items()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{self.name}({args})" if args else self.name


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
        return a / b

    def local(self, out, a, b):
        return (1.0 / b, -out / b)


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
        return x**self.exponent

    def local(self, out, x):
        return (self.exponent * x ** (self.exponent - 1),)


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
        return (1.0 / x,)


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


# ---- reductions --------------------------------------------------------------------------------

def _kept_shape(shape: tuple, axis) -> tuple:
    """The shape a reduction over ``axis`` has with keepdims=True."""
    if axis is None:
        return (1,) * len(shape)
    axes = {a % len(shape) for a in (axis if isinstance(axis, tuple) else (axis,))}
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


class Sum(Op):
    """sum: y = sum_i x_i over the axes;  dy/dx_i = 1 (the gradient is copied back to every x_i)"""

    name = "sum"
    elementwise = False

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        return np.sum(x, axis=self.axis, keepdims=self.keepdims)

    def local(self, out, x):
        return (1.0,)

    def vjp(self, k, grad, out, x):
        shape = shape_of(x)
        return BroadcastTo(shape)(Reshape(_kept_shape(shape, self.axis))(grad))

    def jacobian_norm(self, k, out, x):
        # Each output sums n inputs: a block of n ones per row, singular value sqrt(n).
        return math.sqrt(max(np.size(raw(x)), 1) / max(np.size(raw(out)), 1))


class Max(Op):
    """max: y = max_i x_i over the axes;  dy/dx_i = [x_i is the max] / (number of maxima)"""

    name = "max"
    elementwise = False

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        return np.max(x, axis=self.axis, keepdims=self.keepdims)

    def local(self, out, x):
        x = raw(x)
        winners = mask(x == np.max(x, axis=self.axis, keepdims=True), x)
        return (winners / np.sum(winners, axis=self.axis, keepdims=True),)

    def vjp(self, k, grad, out, x):
        shape = shape_of(x)
        return BroadcastTo(shape)(Reshape(_kept_shape(shape, self.axis))(grad)) * self.local(out, x)[0]

    def jacobian_norm(self, k, out, x):
        # Each output row holds weights 1/m on its m maxima: norm 1/sqrt(m) <= 1.
        return float(np.max(np.sqrt(np.sum(self.local(out, x)[0] ** 2, axis=self.axis))))


# ---- linear algebra ----------------------------------------------------------------------------

class MatMul(Op):
    """matmul: y = a @ b;  dL/da = g @ b^T, dL/db = a^T @ g (local derivatives: b and a)"""

    name = "matmul"
    elementwise = False

    def forward(self, a, b):
        sa, sb = shape_of(a), shape_of(b)
        if len(sa) == 0 or len(sb) == 0:
            raise ValueError(f"matmul: needs arrays of at least one dimension, got shapes {sa} and {sb}")
        inner_a, inner_b = sa[-1], sb[0] if len(sb) == 1 else sb[-2]
        if inner_a != inner_b:
            raise ValueError(f"matmul: shapes {sa} and {sb} do not align ({inner_a} != {inner_b})")
        return a @ b

    def local(self, out, a, b):
        return (b, a)

    def vjp(self, k, grad, out, a, b):
        # A vector operand acts as a one-row (a) or one-column (b) matrix, as in numpy; the
        # gradient of a batch-broadcast operand is summed over the batches it was copied to.
        a2, b2 = _as_matrix(a, row=True), _as_matrix(b, row=False)
        if a2 is not a or b2 is not b:
            grad = Reshape(_matmul_shape(shape_of(a2), shape_of(b2)))(grad)
        if k == 0:
            return _restore(unbroadcast(grad @ _swap_last(b2), shape_of(a2)), shape_of(a))
        return _restore(unbroadcast(_swap_last(a2) @ grad, shape_of(b2)), shape_of(b))

    def jacobian_norm(self, k, out, a, b):
        # d(a @ b)/da maps g to g @ b^T, so J^T J multiplies by b b^T (summed over the batches an
        # operand was broadcast to); the norm is the square root of its largest eigenvalue:
        # for plain matrices, the largest singular value of the other operand.
        a2, b2 = _as_matrix(raw(a), row=True), _as_matrix(raw(b), row=False)
        gram = b2 @ np.swapaxes(b2, -1, -2) if k == 0 else np.swapaxes(a2, -1, -2) @ a2
        mine = (a2 if k == 0 else b2).shape[:-2] + gram.shape[-2:]
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
        gram = unbroadcast(np.broadcast_to(gram, batch + gram.shape[-2:]), mine)
        return float(np.sqrt(max(np.max(np.linalg.eigvalsh(gram)), 0.0)))


def _as_matrix(x, row: bool):
    shape = shape_of(x)
    if len(shape) != 1:
        return x
    return Reshape((1,) + shape if row else shape + (1,))(x)


def _restore(x, shape: tuple):
    return x if shape_of(x) == shape else Reshape(shape)(x)


def _matmul_shape(a_shape: tuple, b_shape: tuple) -> tuple:
    return np.broadcast_shapes(a_shape[:-2], b_shape[:-2]) + (a_shape[-2], b_shape[-1])


# ---- shape ops ---------------------------------------------------------------------------------

class _Reshuffle(Op):
    """Shape ops move entries without changing them: every Jacobian is a permutation or a
    selection, whose spectral norm is 1."""

    elementwise = False

    def local(self, out, *inputs):
        return (1.0,) * len(inputs)

    def jacobian_norm(self, k, out, *inputs):
        return 1.0


class Reshape(_Reshuffle):
    """reshape: y = x viewed with a new shape;  dL/dx = g reshaped back"""

    name = "reshape"

    def __init__(self, shape: tuple):
        self.shape = tuple(shape)

    def forward(self, x):
        return np.reshape(x, self.shape)

    def vjp(self, k, grad, out, x):
        return Reshape(shape_of(x))(grad)


class Transpose(_Reshuffle):
    """transpose: y = x with its axes permuted;  dL/dx = g permuted back"""

    name = "transpose"

    def __init__(self, axes: tuple):
        self.axes = tuple(axes)

    def forward(self, x):
        return np.transpose(x, self.axes)

    def vjp(self, k, grad, out, x):
        return Transpose(tuple(np.argsort(self.axes)))(grad)


class BroadcastTo(_Reshuffle):
    """broadcast_to: y = x copied along broadcast axes;  dL/dx = g summed over the copies"""

    name = "broadcast_to"

    def __init__(self, shape: tuple):
        self.shape = tuple(shape)

    def forward(self, x):
        return np.broadcast_to(x, self.shape)

    def vjp(self, k, grad, out, x):
        return unbroadcast(grad, shape_of(x))

    def jacobian_norm(self, k, out, x):
        return math.sqrt(max(np.size(raw(out)), 1) / max(np.size(raw(x)), 1))


class GetItem(_Reshuffle):
    """getitem: y = x[index];  dL/dx = zeros with g added at index (repeats accumulate)"""

    name = "getitem"

    def __init__(self, index):
        self.index = index

    def forward(self, x):
        return x[self.index]

    def vjp(self, k, grad, out, x):
        return ScatterAdd(self.index, shape_of(x))(grad)

    def jacobian_norm(self, k, out, x):
        return _selection_norm(self.index, shape_of(raw(x)))

    def params(self):
        return {"index": _index_label(self.index)}


class ScatterAdd(_Reshuffle):
    """scatter_add: y = zeros(shape) with x added at index (the adjoint of getitem);  dL/dx = g[index]"""

    name = "scatter_add"

    def __init__(self, index, shape: tuple):
        self.index, self.shape = index, tuple(shape)

    def forward(self, x):
        out = np.zeros(self.shape, dtype=np.result_type(x, np.float32))
        np.add.at(out, self.index, x)
        return out

    def vjp(self, k, grad, out, x):
        return GetItem(self.index)(grad)

    def jacobian_norm(self, k, out, x):
        return _selection_norm(self.index, self.shape)


def _selection_norm(index, shape: tuple) -> float:
    """A selection's Jacobian has one 1 per picked entry; its columns are orthogonal, so its
    spectral norm is sqrt(the most times one entry is picked): 1 without repeats."""
    picked = np.zeros(shape)
    np.add.at(picked, index, 1.0)
    return math.sqrt(np.max(picked, initial=0.0))

    def params(self):
        return {"index": _index_label(self.index), "shape": self.shape}


def _index_label(index) -> str:
    parts = index if isinstance(index, tuple) else (index,)
    return "[" + ", ".join(
        f"array{np.shape(p)}" if isinstance(p, (np.ndarray, list)) else
        (f"{p.start or ''}:{p.stop or ''}" + (f":{p.step}" if p.step else "") if isinstance(p, slice) else repr(p))
        for p in parts
    ) + "]"


class Concat(_Reshuffle):
    """concat: y = [x_1, ..., x_n] joined along an axis;  dL/dx_k = the slice of g where x_k sits"""

    name = "concat"

    def __init__(self, axis: int = 0):
        self.axis = axis

    def forward(self, *xs):
        return np.concatenate(xs, axis=self.axis)

    def vjp(self, k, grad, out, *xs):
        axis = self.axis % len(shape_of(out))
        start = sum(shape_of(x)[axis] for x in xs[:k])
        index = (slice(None),) * axis + (slice(start, start + shape_of(xs[k])[axis]),)
        return GetItem(index)(grad)

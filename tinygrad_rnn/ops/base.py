"""The Op contract, the Elementwise base, and the helpers every op shares: shapes, raw data, masks,
unbroadcast. Nothing here knows what a Value is."""

from __future__ import annotations

import numpy as np

# Raw data: what the backward pass hands formulas when it is not recording them.
RAW_TYPES = (np.ndarray, np.generic, float, int, bool)


def shape_of(x) -> tuple:
    """The shape of an array, a Value or a Python number (``()``)."""
    return () if type(x) in (float, int, bool) else x.shape


def raw(x):
    """The data behind a Value; raw data unchanged."""
    return x if isinstance(x, RAW_TYPES) else x.data


def mask(condition, like):
    """A condition as 0/1 numbers of ``like``'s float type (so float32 gradients stay float32)."""
    if type(condition) is bool or (type(like) is float and np.ndim(condition) == 0):
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
    if extra:  # summed away without keepdims: no reshape after, so no view for a leaf to copy
        grad = grad.sum(axis=tuple(range(extra)))
    ones = tuple(i for i, n in enumerate(shape) if n == 1 and grad_shape[extra + i] != 1)
    return grad.sum(axis=ones, keepdims=True) if ones else grad


def required(method):
    """Marks a method every concrete op must define for itself."""
    method.required = True
    return method


class Op:
    """A primitive: ``forward`` and ``vjp`` side by side, and the norm of each edge's Jacobian.

    - ``forward(*inputs)`` computes the output from the inputs' data.
    - ``vjp(k, grad, out, inputs)`` is the gradient flowing to input k: grad^T d(out)/d(input k).
      ``inputs`` is the sequence of inputs, never unpacked, so an op with n inputs (stack, concat)
      backpropagates in O(n).
    - ``jacobian_norm(k, out, inputs)`` is the spectral norm of d(out)/d(input k): the most this
      edge can stretch a gradient.

    Every concrete op must define all three itself (or inherit them from ``Elementwise``): a
    missing one is an error when the class is defined, never a silently wrong default.

    Calling an op, ``Tanh()(x)``, runs ``forward`` on raw data; when an argument is not raw data (a
    Value), it hands the call to ``Op.record``, which the engine installs. That one rule lets a
    derivative formula call ops on arrays (fast) or on Values (recorded, for higher derivatives).
    """

    name = "op"
    symbol = None  # how pictures write the op ("+", "σ"); None: its name
    record = None  # set by tinygrad_rnn.value: record(op, *inputs) -> Value

    def __init_subclass__(cls, abstract: bool = False, **kwargs):
        super().__init_subclass__(**kwargs)
        missing = [name for name in dir(cls) if getattr(getattr(cls, name), "required", False)]
        if missing and not abstract:
            raise TypeError(f"op {cls.__name__} must define {', '.join(missing)}")
        if "vjp_term" not in vars(cls) and not getattr(cls.vjp, "required", False):
            cls.vjp_term = cls.vjp  # the vjp itself (see Op.vjp_term), without a call in between

    def __call__(self, *args):
        for a in args:
            if not isinstance(a, RAW_TYPES):
                return Op.record(self, *args)
        return self.forward(*args)

    @required
    def forward(self, *inputs):
        ...

    @required
    def vjp(self, k: int, grad, out, inputs):
        ...

    @required
    def jacobian_norm(self, k: int, out, inputs) -> float:
        ...

    def vjp_term(self, k: int, grad, out, inputs):
        """What the backward pass adds up for input k: the vjp itself, unless the op can hold it in a
        form that adds up more cheaply and becomes an array once the sum is complete (a ``LazySum``:
        MatMul's ``Products``, GetItem's ``Scattered``). Everything else (pictures, tests) asks
        ``vjp``. An op that does not define ``vjp_term`` gets its ``vjp`` under this name."""
        return self.vjp(k, grad, out, inputs)

    def params(self) -> dict:
        """The op's parameters, for labels and repr."""
        return dict(vars(self))

    def label(self) -> str:
        """How pictures write this op on its node (plain text): its symbol, or its name; an op with
        parameters that matter to a reader (an exponent, an axis, a shape) says them."""
        return self.symbol or self.name

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{self.name}({args})" if args else self.name


class Elementwise(Op, abstract=True):
    """An op whose output element i depends only on element i of each (broadcast) input.

    Its Jacobian with respect to each input is diagonal (before broadcasting), so a subclass states
    its derivative once, ``derivative(k, out, *inputs)``: the diagonal of d(out)/d(input k), an array
    of the output's shape or a number standing for a constant diagonal. The vector-Jacobian product
    and the edge norm follow from it here.
    """

    @required
    def derivative(self, k: int, out, *inputs):
        ...

    def vjp(self, k, grad, out, inputs):
        # One and two inputs spelled out: a call with *inputs costs as much as the rest of this method.
        n = len(inputs)
        if n == 2:
            d = self.derivative(k, out, inputs[0], inputs[1])
        elif n == 1:
            d = self.derivative(k, out, inputs[0])
        else:
            d = self.derivative(k, out, *inputs)
        if not (type(d) is float and d == 1.0):  # add, and sub's first input: pass the gradient through
            grad = grad * d
        x = inputs[k]
        if type(x) is float:
            return grad if type(grad) is float else unbroadcast(grad, ())  # a scalar graph: nothing to do, so no call
        if type(grad) is not float and grad.shape == x.shape:  # no broadcast, no call
            return grad
        return unbroadcast(grad, x.shape)

    def jacobian_norm(self, k, out, inputs) -> float:
        # J = diag(d) B, where B copies each input element to its broadcast positions. J^T J is
        # diagonal, holding per input element the sum of d^2 over its copies; so the spectral norm
        # is the square root of the largest such sum (without broadcasting: the largest |d|).
        squares = np.square(raw(self.derivative(k, out, *inputs)), dtype=np.float64)  # (a mask: booleans)
        squares = np.broadcast_to(squares, shape_of(raw(out)))
        return float(np.sqrt(np.max(unbroadcast(squares, shape_of(raw(inputs[k]))), initial=0.0)))

"""The Op base class and the helpers every op shares: shapes, raw data, masks, unbroadcast."""

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


class Op:
    """Base class of the primitives. Subclasses define ``forward`` and ``local`` (and ``vjp`` where
    the default elementwise rule does not hold)."""

    name = "op"

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

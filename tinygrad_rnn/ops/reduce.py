"""Primitives whose outputs combine many input entries: sums, maxima, and matrix products."""

from __future__ import annotations

import functools
import math

import numpy as np

from tinygrad_rnn.lazy_sums import Products
from tinygrad_rnn.ops.base import Op, mask, raw, shape_of, unbroadcast
from tinygrad_rnn.ops.elementwise import select
from tinygrad_rnn.ops.movement import BroadcastTo, Reshape, Transpose

# ---- reductions --------------------------------------------------------------------------------

@functools.cache
def _kept_shape(shape: tuple, axis) -> tuple:
    """The shape a reduction over ``axis`` has with keepdims=True (kept: a few distinct ones per program)."""
    if axis is None:
        return (1,) * len(shape)
    axes = {a % len(shape) for a in (axis if isinstance(axis, tuple) else (axis,))}
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _spread(grad, shape: tuple, axis):
    """The gradient of a reduction's output, copied back over the axes it reduced."""
    kept = _kept_shape(shape, axis)
    if shape_of(grad) != kept:  # (a reduction with keepdims=True made it so already)
        grad = Reshape(kept)(grad)
    return BroadcastTo(shape)(grad)


class Sum(Op):
    """sum: y = sum_i x_i over the axes;  dy/dx_i = 1 (the gradient is copied back to every x_i)"""

    name = "sum"

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        if type(x) is np.ndarray:  # the method: np.sum's wrapper costs as much as a small sum
            return x.sum(axis=self.axis, keepdims=self.keepdims)
        return np.sum(x, axis=self.axis, keepdims=self.keepdims)

    def vjp(self, k, grad, out, inputs):
        return _spread(grad, shape_of(inputs[0]), self.axis)

    def jacobian_norm(self, k, out, inputs):
        # Each output sums n inputs: a block of n ones per row, singular value sqrt(n).
        return math.sqrt(max(np.size(raw(inputs[0])), 1) / max(np.size(raw(out)), 1))

    def label(self) -> str:
        return "Σ" if self.axis is None else f"Σ axis {self.axis}"


class Max(Op):
    """max: y = max_i x_i over the axes;  dy/dx_i = [x_i is the max] / (number of maxima).

    A nan is the max of any slice it is in (as in numpy and PyTorch), so there the nans share the
    gradient, as PyTorch's max() gives it to them.
    """

    name = "max"

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        if type(x) is np.ndarray:  # (as Sum)
            return x.max(axis=self.axis, keepdims=self.keepdims)
        return np.max(x, axis=self.axis, keepdims=self.keepdims)

    def share(self, x):
        """Each input's share of its maximum: 1/m for each of m tied maxima (or m nans), 0 elsewhere."""
        x = raw(x)
        winners = mask((x == np.max(x, axis=self.axis, keepdims=True)) | (x != x), x)  # x != x: the nans
        return winners / np.sum(winners, axis=self.axis, keepdims=True)

    def vjp(self, k, grad, out, inputs):
        # A select: the gradient reaches the maxima only, even an infinite one (0 * inf would be nan).
        share = self.share(inputs[0])  # (named: the compiled replay computes it once, not per use)
        return select(share, _spread(grad, shape_of(inputs[0]), self.axis))

    def jacobian_norm(self, k, out, inputs):
        # Each output row holds weights 1/m on its m maxima: norm 1/sqrt(m) <= 1.
        return float(np.max(np.sqrt(np.sum(self.share(inputs[0]) ** 2, axis=self.axis))))

    def label(self) -> str:
        return "max" if self.axis is None else f"max axis {self.axis}"


# ---- linear algebra ----------------------------------------------------------------------------

class MatMul(Op):
    """matmul: y = a @ b;  dL/da = g @ b^T, dL/db = a^T @ g"""

    name, symbol = "matmul", "@"

    def forward(self, a, b):
        try:
            return a @ b
        except (ValueError, TypeError):  # numpy refused: say why in the op's words (shapes checked only now)
            sa, sb = shape_of(a), shape_of(b)
            if len(sa) == 0 or len(sb) == 0:
                raise ValueError(f"matmul: needs arrays of at least one dimension, got shapes {sa} and {sb}") from None
            inner_a, inner_b = sa[-1], sb[0] if len(sb) == 1 else sb[-2]
            if inner_a != inner_b:
                raise ValueError(f"matmul: shapes {sa} and {sb} do not align ({inner_a} != {inner_b})") from None
            raise

    def vjp(self, k, grad, out, inputs):
        a, b = inputs
        if a.ndim == 2 and b.ndim == 2:  # the common case, said plainly
            return grad @ b.T if k == 0 else a.T @ grad
        # A vector operand acts as a one-row (a) or one-column (b) matrix, as in numpy; the
        # gradient of a batch-broadcast operand is summed over the batches it was copied to.
        a2, b2 = _as_matrix(a, row=True), _as_matrix(b, row=False)
        if a2 is not a or b2 is not b:
            grad = Reshape(_matmul_shape(shape_of(a2), shape_of(b2)))(grad)
        if k == 0:
            return _restore(unbroadcast(grad @ _swap_last(b2), shape_of(a2)), shape_of(a))
        return _restore(unbroadcast(_swap_last(a2) @ grad, shape_of(b2)), shape_of(b))

    def vjp_term(self, k, grad, out, inputs):
        a = inputs[0]
        if k == 1 and type(a) is np.ndarray and type(grad) is np.ndarray and a.ndim == 2 and grad.ndim == 2:
            return Products(a, grad)  # a^T g, kept as its factors: see Products
        return self.vjp(k, grad, out, inputs)

    def jacobian_norm(self, k, out, inputs):
        # d(a @ b)/da maps each row of da to that row @ b: the norm is the largest singular value of
        # b (of b^T, the same). Where a was broadcast over batches, one batch of a meets several b's
        # and its gradient adds up their products: the largest singular value of those b^T stacked
        # as one tall matrix. Likewise d(a @ b)/db maps each column of db through a: a's stacked.
        # (An SVD of the thin matrix: (1, 3000) @ (3000, 4) takes a 4 x 3000 one, where the Gram
        # matrix of the wide side, b b^T, would be 3000 x 3000.)
        if np.size(raw(out)) == 0 or np.size(raw(inputs[k])) == 0:
            return 0.0  # a map from or to nothing
        a2, b2 = _as_matrix(raw(inputs[0]), row=True), _as_matrix(raw(inputs[1]), row=False)
        other = np.swapaxes(b2, -1, -2) if k == 0 else a2
        mine = (a2 if k == 0 else b2).shape[:-2]
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
        other = np.broadcast_to(other, batch + other.shape[-2:])
        extra = len(batch) - len(mine)  # the batches summed into one of mine: new ones, and 1s broadcast
        summed = [i for i, n in enumerate(batch) if i < extra or (mine[i - extra] == 1 and n != 1)]
        kept = [i for i in range(len(batch)) if i not in summed]
        other = other.transpose(kept + summed + [len(batch), len(batch) + 1])  # summed copies next to rows
        rows = math.prod(other.shape[len(kept):-1])
        other = other.reshape(other.shape[:len(kept)] + (rows, other.shape[-1]))
        return float(np.max(np.linalg.svd(other, compute_uv=False)))


def _as_matrix(x, row: bool):
    shape = shape_of(x)
    if len(shape) != 1:
        return x
    return Reshape((1,) + shape if row else shape + (1,))(x)


def _restore(x, shape: tuple):
    return x if shape_of(x) == shape else Reshape(shape)(x)


def _matmul_shape(a_shape: tuple, b_shape: tuple) -> tuple:
    return np.broadcast_shapes(a_shape[:-2], b_shape[:-2]) + (a_shape[-2], b_shape[-1])


def _swap_last(x):
    """Transpose the last two axes (a matrix's .T, batched)."""
    return x.T if len(shape_of(x)) == 2 else Transpose(_last_two_swapped(len(shape_of(x))))(x)


def _last_two_swapped(ndim: int) -> tuple:
    return tuple(range(ndim - 2)) + (ndim - 1, ndim - 2)

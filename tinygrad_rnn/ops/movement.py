"""Primitives that move entries without changing them: reshape, transpose, broadcast, index, concat."""

from __future__ import annotations

import math

import numpy as np

from tinygrad_rnn.ops.base import Op, raw, shape_of, unbroadcast

# ---- shape ops ---------------------------------------------------------------------------------

class _Reshuffle(Op):
    """Shape ops move entries without changing them: every Jacobian is a permutation or a
    selection, whose spectral norm is 1."""


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
        if _is_basic(self.index):
            out[self.index] = x  # slices and integers cannot pick an entry twice: no need to add
        else:
            np.add.at(out, self.index, x)  # integer arrays may repeat an entry: contributions add up
        return out

    def vjp(self, k, grad, out, x):
        return GetItem(self.index)(grad)

    def jacobian_norm(self, k, out, x):
        return _selection_norm(self.index, self.shape)


def _is_basic(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(p, (int, np.integer, slice)) or p is None or p is Ellipsis for p in parts)


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


class Stack(_Reshuffle):
    """stack: y = [x_1, ..., x_n] joined along a new axis;  dL/dx_k = g's k-th slice on that axis"""

    name = "stack"

    def __init__(self, axis: int = 0):
        self.axis = axis

    def forward(self, *xs):
        return np.stack(xs, axis=self.axis)

    def vjp(self, k, grad, out, *xs):
        axis = self.axis % len(shape_of(out))
        return GetItem((slice(None),) * axis + (k,))(grad)

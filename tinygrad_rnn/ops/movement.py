"""Primitives that move entries without changing them: reshape, transpose, broadcast, index, concat,
stack. Their Jacobians are permutations, selections or copies; each op writes its own vjp."""

from __future__ import annotations

import functools
import math

import numpy as np

from tinygrad_rnn.lazy_sums import Scattered
from tinygrad_rnn.notation import index_label, is_basic, shape_label
from tinygrad_rnn.ops.base import Op, raw, shape_of, unbroadcast


class _Permutation(Op, abstract=True):
    """An op whose Jacobian moves each input entry to exactly one output place (a permutation or a
    selection of distinct places): its spectral norm is 1."""

    def jacobian_norm(self, k, out, inputs):
        return 1.0


class Reshape(_Permutation):
    """reshape: y = x viewed with a new shape;  dL/dx = g reshaped back"""

    name = "reshape"

    def __init__(self, shape: tuple):
        self.shape = tuple(shape)

    def forward(self, x):
        # The method where there is one: np.reshape's wrapper is most of its cost.
        return x.reshape(self.shape) if type(x) is np.ndarray else np.reshape(x, self.shape)

    def vjp(self, k, grad, out, inputs):
        return Reshape(shape_of(inputs[0]))(grad)

    def label(self) -> str:
        return f"reshape {shape_label(self.shape)}"


class Transpose(_Permutation):
    """transpose: y = x with its axes permuted;  dL/dx = g permuted back"""

    name, symbol = "transpose", "ᵀ"

    def __init__(self, axes: tuple):
        self.axes = tuple(axes)

    def forward(self, x):
        return x.transpose(self.axes) if type(x) is np.ndarray else np.transpose(x, self.axes)  # (see Reshape)

    def vjp(self, k, grad, out, inputs):
        return Transpose(_inverse(self.axes))(grad)


@functools.cache
def _inverse(axes: tuple) -> tuple:
    """The permutation that undoes ``axes`` (sorted: for a few axes np.argsort's overhead costs more;
    cached: a few distinct ones per program)."""
    return tuple(sorted(range(len(axes)), key=axes.__getitem__))


class BroadcastTo(Op):
    """broadcast_to: y = x copied along broadcast axes;  dL/dx = g summed over the copies"""

    name = "broadcast_to"

    def __init__(self, shape: tuple):
        self.shape = tuple(shape)

    def forward(self, x):
        return np.broadcast_to(x, self.shape)

    def vjp(self, k, grad, out, inputs):
        return unbroadcast(grad, shape_of(inputs[0]))

    def jacobian_norm(self, k, out, inputs):
        # Each input entry is copied n times: a column of n ones, singular value sqrt(n).
        return math.sqrt(max(np.size(raw(out)), 1) / max(np.size(raw(inputs[0])), 1))

    def label(self) -> str:
        return f"broadcast {shape_label(self.shape)}"


class GetItem(Op):
    """getitem: y = x[index];  dL/dx = zeros with g added at index (repeats accumulate)"""

    name = "getitem"

    def __init__(self, index):
        self.index = index

    def forward(self, x):
        return x[self.index]

    def vjp(self, k, grad, out, inputs):
        return ScatterAdd(self.index, shape_of(inputs[0]))(grad)

    def vjp_term(self, k, grad, out, inputs):
        x = inputs[0]
        if type(grad) is np.ndarray and type(x) is np.ndarray:
            return Scattered(self.index, x.shape, grad)  # see Scattered
        return self.vjp(k, grad, out, inputs)

    def jacobian_norm(self, k, out, inputs):
        return _selection_norm(self.index, shape_of(raw(inputs[0])))

    def params(self):
        return {"index": index_label(self.index)}

    def label(self) -> str:
        return index_label(self.index).replace("...", "…")


class ScatterAdd(Op):
    """scatter_add: y = zeros(shape) with x added at index (the adjoint of getitem);  dL/dx = g[index]"""

    name = "scatter_add"

    def __init__(self, index, shape: tuple):
        self.index, self.shape = index, tuple(shape)

    def forward(self, x):
        out = np.zeros(self.shape, dtype=np.result_type(x, np.float32))
        if is_basic(self.index):
            out[self.index] = x  # slices and integers cannot pick an entry twice: no need to add
        else:
            np.add.at(out, self.index, x)  # integer arrays may repeat an entry: contributions add up
        return out

    def vjp(self, k, grad, out, inputs):
        return GetItem(self.index)(grad)

    def jacobian_norm(self, k, out, inputs):
        return _selection_norm(self.index, self.shape)

    def params(self):
        return {"index": index_label(self.index), "shape": self.shape}

    def label(self) -> str:
        return "scatter + " + index_label(self.index).replace("...", "…")


def _selection_norm(index, shape: tuple) -> float:
    """A selection's Jacobian has one 1 per picked entry; its columns are orthogonal, so its
    spectral norm is sqrt(the most times one entry is picked): 1 without repeats."""
    picked = np.zeros(shape)
    np.add.at(picked, index, 1.0)
    return math.sqrt(np.max(picked, initial=0.0))


class Concat(_Permutation):
    """concat: y = [x_1, ..., x_n] joined along an axis;  dL/dx_k = the slice of g where x_k sits

    ``sizes`` are the inputs' lengths along the axis, given up front so that each input's place is
    known without looking at the others: backward through n inputs is O(n), not O(n^2).
    """

    name = "concat"

    def __init__(self, axis: int, sizes):
        self.axis, self.sizes = axis, tuple(sizes)
        self.starts = np.cumsum((0,) + self.sizes).tolist()

    def forward(self, *xs):
        out = np.concatenate(xs, axis=self.axis)
        if out.shape[self.axis] != self.starts[-1]:
            raise ValueError(f"concat: inputs of lengths {[np.shape(x)[self.axis] for x in xs]} along axis "
                             f"{self.axis}, but the op was made for {list(self.sizes)}")
        return out

    def vjp(self, k, grad, out, inputs):
        axis = self.axis % len(shape_of(out))
        return grad[(slice(None),) * axis + (slice(self.starts[k], self.starts[k + 1]),)]

    def params(self):
        return {"axis": self.axis}


class Stack(_Permutation):
    """stack: y = [x_1, ..., x_n] joined along a new axis;  dL/dx_k = g's k-th slice on that axis"""

    name = "stack"

    def __init__(self, axis: int = 0):
        self.axis = axis

    def forward(self, *xs):
        first = xs[0] if xs else None  # (none at all: np.stack says so)
        if self.axis == 0 and type(first) is np.ndarray and first.ndim:
            shape = first.shape
            if all(type(x) is np.ndarray and x.shape == shape for x in xs):
                # Joined end to end, then given the new axis: np.stack's per-input expansion costs more
                # than the copy.
                return np.concatenate(xs).reshape((len(xs),) + shape)
        return np.stack(xs, axis=self.axis)

    def vjp(self, k, grad, out, inputs):
        # A view of an array; a recorded GetItem of a Value.
        if self.axis == 0:  # the common case, without building an index tuple per slice
            return grad[k]
        return grad[(slice(None),) * (self.axis % len(shape_of(out))) + (k,)]

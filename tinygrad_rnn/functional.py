"""Functions of several Values, and composites built from primitives so their insides show in
the graph: concat, stack, split, where, maximum, minimum, softplus, logsumexp, softmax, log_softmax,
grad."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinygrad_rnn import autograd, ops
from tinygrad_rnn.value import Value, _seed, apply, as_value

__all__ = ["concat", "stack", "split", "where", "maximum", "minimum", "softplus", "logsumexp", "softmax",
           "log_softmax", "grad", "subgraph", "zero_grad"]


def concat(values: Sequence, axis: int = 0) -> Value:
    """Join Values along an existing axis (numpy's concatenate)."""
    if not values:
        raise ValueError("concat: needs at least one Value")
    values = [as_value(v) for v in values]  # numbers and lists join as constants
    shapes = [v.shape for v in values]
    if any(len(shape) == 0 for shape in shapes):
        raise ValueError(f"concat: zero-dimensional inputs cannot be joined, got shapes {shapes}")
    try:
        sizes = [shape[axis] for shape in shapes]
    except IndexError:
        raise ValueError(f"concat: axis {axis} is out of range for shapes {shapes}") from None
    return apply(ops.Concat(axis, sizes), *values)


def stack(values: Sequence, axis: int = 0) -> Value:
    """Join Values of one shape along a new axis (numpy's stack)."""
    if not values:
        raise ValueError("stack: needs at least one Value")
    values = [as_value(v) for v in values]
    shapes = {v.shape for v in values}
    if len(shapes) > 1:
        raise ValueError(f"stack: all Values need the same shape, got {sorted(shapes)}")
    return apply(ops.Stack(axis), *values)


def split(x, sections, axis: int = 0) -> list:
    """``x`` cut along ``axis`` into pieces, as numpy's ``np.split``: ``sections`` is a number n (n
    pieces of one length; an error if the axis does not divide by n) or a list of the indices where
    the cuts fall (``[2, 5]`` gives x[:2], x[2:5], x[5:]; an index past the end gives empty pieces).

    Each piece is a getitem of x (a slice), so the gradients of the pieces add up into x's.
    """
    x = as_value(x)
    if x.ndim == 0:
        raise ValueError("split: a zero-dimensional Value has no axis to split")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"split: axis {axis} is out of range for shape {x.shape}")
    axis, length = axis % x.ndim, x.shape[axis]
    if isinstance(sections, (int, np.integer)) and not isinstance(sections, bool):
        if sections < 1 or length % sections:
            raise ValueError(f"split: axis {axis} of shape {x.shape} (length {length}) does not divide into "
                             f"{sections} equal sections")
        cuts = [i * (length // sections) for i in range(1, sections)]
    else:
        cuts = [int(i) for i in sections]
    bounds, before = [0, *cuts, length], (slice(None),) * axis
    return [x[(*before, slice(start, stop))] for start, stop in zip(bounds[:-1], bounds[1:])]


def where(condition, a, b) -> Value:
    """``a`` where ``condition`` holds, else ``b``; the condition is data, not differentiated."""
    return apply(ops.Where(ops.raw(condition)), a, b)


def maximum(a, b) -> Value:
    """Elementwise maximum; at ties the gradient is split evenly."""
    return apply(ops.Maximum(), a, b)


def minimum(a, b) -> Value:
    """Elementwise minimum, as -maximum(-a, -b) (negation is exact): at ties the gradient is split
    evenly, and where a or b is nan the result is nan and both get the whole gradient, as maximum's
    and PyTorch's."""
    return -maximum(-a, -b)


def softplus(x) -> Value:
    """softplus(x) = ln(1 + e^x), computed as max(x, 0) + log1p(e^-|x|);  d/dx = sigmoid(x).

    e^-|x| is at most 1, so nothing overflows however large |x| is (ln(1 + e^x) overflows at x > 709),
    and log1p keeps the digits of a tiny e^-|x|. At x = 0 the derivative comes out as 1/2: maximum's
    tie gives 1/2 and |x|'s derivative there is 0. (PyTorch returns x itself above x = 20, which
    differs from this by e^-x at most: 2e-9.)
    """
    x = as_value(x)
    return maximum(x, 0.0) + (-x.abs()).exp().log1p()


Value.softplus = softplus  # x.softplus(): a method too, set here because value.py cannot import what is built on it


def logsumexp(x: Value, axis: int = -1, keepdims: bool = False) -> Value:
    """log sum_i exp(x_i) along ``axis``, as m + log sum_i exp(x_i - m) with m = max(x).

    Subtracting the (detached) max changes nothing mathematically but keeps exp from overflowing.
    Its gradient is softmax(x). Over an empty axis it is log 0 = -inf, as in PyTorch.
    """
    x = as_value(x)
    if _empty_along(x, axis):  # no max to subtract, and nothing that could overflow
        with np.errstate(divide="ignore"):
            return x.exp().sum(axis=axis, keepdims=keepdims).log()
    # An infinite max (a row all -inf, or holding +inf) would make x - max nan; clipped to the largest
    # finite number, the shift gives -inf and inf there, as PyTorch does.
    limit = float(np.finfo(x.dtype).max)
    peak = x.max(axis=axis, keepdims=True).detach().clip(-limit, limit)
    total = (x - peak).exp().sum(axis=axis, keepdims=keepdims).log()
    return total + (peak if keepdims else peak.reshape(total.shape))


def log_softmax(x: Value, axis: int = -1) -> Value:
    """log softmax(x)_i = z_i - log sum_j exp(z_j), with z = x - max(x) (over an empty axis: empty).

    The same as x_i - logsumexp(x), but that loses the small part to the large one: for x all -1e30,
    logsumexp(x) rounds to -1e30 and x - logsumexp(x) to 0, where z - log sum exp(z) is -log n, as in
    PyTorch.
    """
    x = as_value(x)
    if _empty_along(x, axis):
        return x - logsumexp(x, axis=axis, keepdims=True)
    z = x - x.max(axis=axis, keepdims=True).detach()
    return z - z.exp().sum(axis=axis, keepdims=True).log()


def softmax(x: Value, axis: int = -1) -> Value:
    """softmax(x)_i = exp(z_i) / sum_j exp(z_j), with z = x - max(x) for stability (over an empty
    axis: empty, as in PyTorch)."""
    x = as_value(x)
    e = x.exp() if _empty_along(x, axis) else (x - x.max(axis=axis, keepdims=True).detach()).exp()
    return e / e.sum(axis=axis, keepdims=True)


def _empty_along(x: Value, axis) -> bool:
    """Whether ``axis`` of x has length 0 (an axis out of range is left for the max to name)."""
    try:
        return x.shape[axis] == 0
    except (IndexError, TypeError):
        return False


def subgraph(outputs: Sequence, inputs: Sequence) -> list:
    """The nodes on some path from an input to an output, parents first: all that a gradient of
    ``outputs`` with respect to ``inputs`` needs. Computed once, it serves many seeds (one per row
    of a Jacobian) without walking the rest of the graph again."""
    reaches = {id(x) for x in inputs}
    order = []
    for node in autograd.topological_order(outputs, constants=True):  # an input may be a constant (h_0)
        if id(node) in reaches or any(id(p) in reaches for p in node.parents):
            reaches.add(id(node))
            order.append(node)
    return order



def grad(outputs, inputs, grad_outputs=None, create_graph: bool = False, order=None, hooks: bool = True,
         stop=()) -> list:
    """d(outputs)/d(inputs), weighted by ``grad_outputs``, returned without touching any ``.grad``.

    The one public gradient function. Accepts one Value or a sequence for ``outputs`` and ``inputs``;
    returns a list with one gradient per input (zeros for an input the outputs do not depend on).
    Pass ``order=subgraph(outputs, inputs)`` (below) to reuse one walk for
    many seeds, as Jacobians do; there an input may also be a constant, such as a zero initial
    state. ``hooks=False`` skips hooks. ``stop``: nodes whose gradient goes no further back (a walk that
    ends at the states, where one state may be made straight from another).
    """
    outputs = [outputs] if isinstance(outputs, Value) else list(outputs)
    inputs = [inputs] if isinstance(inputs, Value) else list(inputs)
    if grad_outputs is None or isinstance(grad_outputs, (Value, np.ndarray, float, int)):
        grad_outputs = [grad_outputs] * len(outputs) if grad_outputs is None else [grad_outputs]
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"grad: {len(outputs)} outputs but {len(grad_outputs)} grad_outputs")
    seeds = [_seed(out, g, "grad", create_graph) for out, g in zip(outputs, grad_outputs)]
    found = autograd.backpropagate(outputs, seeds, create_graph, into_grad=False, order=order, hooks=hooks,
                                   wanted=inputs, stop=stop)
    return [found[x] if x in found else 0.0 if type(x.data) is float else np.zeros(x.shape, x.dtype) for x in inputs]


def zero_grad(values) -> None:
    """Clear ``.grad`` on every Value given."""
    for v in values:
        v.grad = None

"""One table of every primitive op, and of the composites a cell author reaches for (softplus,
minimum, split): how to call it, what numpy says it computes, where its inputs may live. Every op test
in tests/test_ops.py is driven from here, so adding an op means adding a row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, mutually_broadcastable_shapes

from tinygrad_rnn import concat, maximum, minimum, split, stack, where

# ---- shapes ----------------------------------------------------------------------------------------


def one_shape(min_dims: int = 0):
    return array_shapes(min_dims=min_dims, max_dims=3, min_side=1, max_side=4).map(lambda s: (s,))


BROADCASTING_PAIR = mutually_broadcastable_shapes(num_shapes=2, max_dims=3, min_side=1, max_side=4).map(
    lambda shapes: shapes.input_shapes
)


@st.composite
def matmul_shapes(draw):
    """Matrix @ matrix, vector @ matrix, matrix @ vector, vector @ vector, and batched (broadcast)."""
    n, k, m = (draw(st.integers(1, 4)) for _ in range(3))
    kind = draw(st.sampled_from(["mm", "vm", "mv", "vv", "batched"]))
    if kind == "batched":
        return ((2, n, k), (k, m)) if draw(st.booleans()) else ((3, 1, n, k), (2, k, m))
    return {"mm": ((n, k), (k, m)), "vm": ((k,), (k, m)), "mv": ((n, k), (k,)), "vv": ((k,), (k,))}[kind]


@st.composite
def concat_shapes(draw):
    rest = draw(array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3))
    return ((draw(st.integers(1, 3)),) + rest, (draw(st.integers(1, 3)),) + rest)


# ---- input data ------------------------------------------------------------------------------------


def _any(rng, shape):
    return rng.uniform(-2.0, 2.0, shape)


def _positive(rng, shape):
    return rng.uniform(0.2, 3.0, shape)


def _above_minus_one(rng, shape):
    return rng.uniform(-0.8, 2.0, shape)


def _away_from(*kinks: float):
    """Values at least 0.1 from each kink, where a one-sided derivative would fool finite differences."""

    def make(rng, shape):
        x = rng.uniform(-2.0, 2.0, shape)
        for kink in kinks:
            near = np.abs(x - kink) < 0.1
            x = np.where(near, x + np.where(x >= kink, 0.2, -0.2), x)
        return x

    return make


def _distinct_pair(rng, shapes):
    """Two inputs that never tie (maximum's derivative jumps at ties)."""
    a = _any(rng, shapes[0])
    gap = rng.uniform(0.1, 1.0, np.broadcast_shapes(*shapes)) * rng.choice([-1, 1], np.broadcast_shapes(*shapes))
    b = np.broadcast_to(a, np.broadcast_shapes(*shapes)) + gap
    # b must have its own shape: where b broadcasts, take one representative per broadcast slice.
    return [a, _reduce_to(b, shapes[1])]


def _reduce_to(x, shape):
    extra = x.ndim - len(shape)
    x = x[(0,) * extra] if extra else x
    return x[tuple(slice(0, 1) if n == 1 else slice(None) for n in shape)].reshape(shape)


def _distinct_entries(rng, shape):
    """Entries that differ pairwise by at least 0.05 (max's derivative jumps at ties)."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * 0.05 + rng.uniform(0, 0.01)).reshape(shape) - 1.0


@dataclass(frozen=True)
class Case:
    name: str
    call: Callable  # on Values
    reference: Callable  # on numpy arrays
    shapes: st.SearchStrategy = one_shape()
    elementwise: bool = True
    inputs: Callable | None = None  # rng, shapes -> list of arrays; default: each from `domain`
    domain: Callable = _any
    primitive: bool = True  # one op over its inputs; False: a composite of several (its inside shows in a graph)

    def make_inputs(self, rng, shapes) -> list:
        arrays = self.inputs(rng, shapes) if self.inputs else [self.domain(rng, shape) for shape in shapes]
        return [np.array(a, dtype=np.float64) for a in arrays]


def _alternating(shape):
    return np.arange(int(np.prod(shape))).reshape(shape) % 2 == 0


def _where_reference(a, b):
    return np.where(_alternating(np.broadcast_shapes(a.shape, b.shape)), a, b)


def _where_call(a, b):
    return where(_alternating(np.broadcast_shapes(a.shape, b.shape)), a, b)


def _pick(shape):
    """An integer-array index on the first axis, with a repeat (its gradients must add up)."""
    return np.array([0, shape[0] - 1, 0])


PAIR, AXIS = BROADCASTING_PAIR, one_shape(min_dims=1)

OPS = [
    Case("add", lambda a, b: a + b, np.add, PAIR),
    Case("sub", lambda a, b: a - b, np.subtract, PAIR),
    Case("mul", lambda a, b: a * b, np.multiply, PAIR),
    Case("div", lambda a, b: a / b, np.divide, PAIR, inputs=lambda rng, s: [_any(rng, s[0]), _positive(rng, s[1])]),
    Case("maximum", maximum, np.maximum, PAIR, inputs=_distinct_pair),
    Case("where", _where_call, _where_reference, PAIR),
    Case("neg", lambda x: -x, np.negative),
    Case("pow", lambda x: x**3, lambda x: x**3),
    Case("pow_fractional", lambda x: x**1.5, lambda x: x**1.5, domain=_positive),
    Case("pow_of_values", lambda a, b: a**b, np.power, PAIR,
         inputs=lambda rng, s: [_positive(rng, s[0]), _any(rng, s[1])]),
    Case("exp", lambda x: x.exp(), np.exp),
    Case("log", lambda x: x.log(), np.log, domain=_positive),
    Case("tanh", lambda x: x.tanh(), np.tanh),
    Case("sigmoid", lambda x: x.sigmoid(), lambda x: 1 / (1 + np.exp(-x))),
    Case("relu", lambda x: x.relu(), lambda x: np.maximum(x, 0), domain=_away_from(0.0)),
    Case("leaky_relu", lambda x: x.leaky_relu(0.1), lambda x: np.where(x > 0, x, 0.1 * x), domain=_away_from(0.0)),
    Case("abs", lambda x: x.abs(), np.abs, domain=_away_from(0.0)),
    Case("clip", lambda x: x.clip(-1.0, 0.5), lambda x: np.clip(x, -1.0, 0.5), domain=_away_from(-1.0, 0.5)),
    Case("sum", lambda x: x.sum(), np.sum, elementwise=False),
    Case("sum_axis", lambda x: x.sum(axis=-1), lambda x: np.sum(x, axis=-1), AXIS, elementwise=False),
    Case("sum_keepdims", lambda x: x.sum(axis=0, keepdims=True), lambda x: np.sum(x, axis=0, keepdims=True),
         AXIS, elementwise=False),
    Case("max", lambda x: x.max(), np.max, elementwise=False, domain=_distinct_entries),
    Case("max_axis", lambda x: x.max(axis=0), lambda x: np.max(x, axis=0), AXIS, elementwise=False,
         domain=_distinct_entries),
    Case("reshape", lambda x: x.reshape(-1), lambda x: np.reshape(x, -1), elementwise=False),
    Case("transpose", lambda x: x.T, np.transpose, elementwise=False),
    Case("getitem_slice", lambda x: x[::2], lambda x: x[::2], AXIS, elementwise=False),
    Case("getitem_array", lambda x: x[_pick(x.shape)], lambda x: x[_pick(x.shape)], AXIS, elementwise=False),
    Case("concat", lambda a, b: concat([a, b]), lambda a, b: np.concatenate([a, b]), concat_shapes(),
         elementwise=False),
    Case("stack", lambda a, b: stack([a, b], axis=-1), lambda a, b: np.stack([a, b], axis=-1),
         one_shape().map(lambda s: s * 2), elementwise=False),
    # Along axis 0 (arrays of one or more dimensions) Stack joins end to end and reshapes: its own path.
    Case("stack_axis_0", lambda a, b, c: stack([a, b, c]), lambda a, b, c: np.stack([a, b, c]),
         one_shape().map(lambda s: s * 3), elementwise=False),
    Case("matmul", lambda a, b: a @ b, np.matmul, matmul_shapes(), elementwise=False),
    Case("sqrt", lambda x: x.sqrt(), np.sqrt, domain=_positive),
    Case("log1p", lambda x: x.log1p(), np.log1p, domain=_above_minus_one),
    # Composites: checked as wholes (forward, gradient, float32, recorded gradient), not per op.
    Case("softplus", lambda x: x.softplus(), lambda x: np.logaddexp(0.0, x), primitive=False),
    Case("minimum", minimum, np.minimum, PAIR, inputs=_distinct_pair, primitive=False),
    # The pieces joined again in reverse order, so each piece's gradient must find its own place.
    Case("split_at_indices", lambda x: concat(split(x, [1, 2], axis=-1)[::-1], axis=-1),
         lambda x: np.concatenate(np.split(x, [1, 2], axis=-1)[::-1], axis=-1), AXIS, elementwise=False,
         primitive=False),
    Case("split_in_sections", lambda x: stack(split(x, x.shape[0])[::-1]), lambda x: np.stack(np.split(x, x.shape[0])[::-1]),
         AXIS, elementwise=False, primitive=False),
]

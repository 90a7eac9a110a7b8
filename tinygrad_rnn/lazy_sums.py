"""Lazy sums: gradient contributions kept as their terms until the sum is complete, because added up
together they cost less than one by one. A speed trick behind the plain path (its figures are in
docs/perf.md): an op's ``vjp_term`` may return one instead of its ``vjp``; the backward loop adds
terms with ``+`` and asks for ``total()`` when the input's gradient is complete. The ops say what
their terms mean; nothing here knows what a Value is."""

from __future__ import annotations

import numpy as np

from tinygrad_rnn.notation import is_basic

__all__ = ["LazySum", "Products", "Scattered"]


class LazySum:
    """A sum of gradient contributions kept as its terms until it is complete.

    An op's ``vjp_term`` returns one where many contributions to one input add up more cheaply
    together than one by one (MatMul's ``Products``, GetItem's ``Scattered``). ``+`` gathers the
    terms of another sum of the same kind; anything else is added to ``total()``, the sum as an
    array, which the backward pass also asks for when the input's gradient is complete.
    """

    __slots__ = ("terms",)
    __array_ufunc__ = None  # array + LazySum comes to __radd__, not to numpy

    def __init__(self, *term):
        self.terms = [term]

    def __add__(self, other):
        if type(other) is type(self) and self.joins(other):
            self.terms += other.terms  # in place: only the backward pass's pending sum holds self
            return self
        return self.total() + other

    def __radd__(self, other):
        return other + self.total()

    def joins(self, other) -> bool:
        return True

    def total(self):
        raise NotImplementedError


class Products(LazySum):
    """A sum of matrix products a_1^T g_1 + ... + a_n^T g_n, kept as its factors until it is complete.

    A weight used at every time step (W_hh^T in h_{t-1} W_hh^T) gets one product h_{t-1}^T delta_t
    from each step's matmul. Stacked, they are one product, [h_0; ...; h_{T-1}]^T [delta_1; ...;
    delta_T], which is how a hand-written BPTT computes dW_hh: one large matmul instead of T small ones
    and T - 1 additions of a whole weight matrix.
    """

    BLOCK_ROWS = 512  # see total

    def total(self):
        # Stack a block of about BLOCK_ROWS rows at a time: large enough for one efficient matmul,
        # small enough that the stacked copies stay small (a large copy freed at once may be handed
        # back to the system by the allocator, only to be paged in again at the next step). The
        # backward pass adds the terms last step first; they are summed first step first, a_1^T g_1
        # first, so that a replay holding the factors as rows in the order the steps ran (stacked
        # states, an input's rows) reads its blocks in place with these very floats (rewrites.py).
        terms, out, start, rows = self.terms[::-1], None, 0, 0
        for end, (a, _) in enumerate(terms, 1):
            rows += a.shape[0]
            if rows >= self.BLOCK_ROWS or end == len(terms):
                block = terms[start:end]
                if len(block) == 1:
                    product = block[0][0].T @ block[0][1]
                else:
                    product = np.concatenate([a for a, _ in block]).T @ np.concatenate([g for _, g in block])
                out = product if out is None else np.add(out, product, out=out)  # out: made here, ours
                start, rows = end, 0
        return out


class Scattered(LazySum):
    """A sum of scatter-adds into arrays of one shape, kept as its pieces until it is complete.

    Step t of an unrolled RNN reads its input's projection as X[t]; the gradient X[t] sends back is
    zero everywhere but row t. Added up as arrays, T of them cost T whole-size additions (T^2 rows);
    kept as pieces, one array of zeros and T writes.
    """

    def joins(self, other) -> bool:
        return self.terms[0][1] == other.terms[0][1]

    def total(self):
        shape, terms = self.terms[0][1], self.terms
        dtype = np.result_type(*[g for _, _, g in terms], np.float32)
        rows = {index for index, _, _ in terms if type(index) is int}
        if shape and len(terms) == shape[0] and rows == set(range(shape[0])):
            # Each row read once, as an unrolled RNN reads its steps: the pieces fill the array, with
            # no zeros to write first and nothing to add to.
            out = np.empty(shape, dtype)
            for index, _, g in terms:
                out[index] = g
            return out
        out = np.zeros(shape, dtype)
        for index, _, g in terms:
            if is_basic(index):
                out[index] += g
            else:
                np.add.at(out, index, g)  # integer arrays may repeat an entry: contributions add up
        return out


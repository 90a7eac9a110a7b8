"""Loop-invariant work done once per unroll, for any cell: what a hand-written BPTT does by hand.

A cell written as its textbook equation, ``(x @ W_ih.T + h @ W_hh.T + b).tanh()``, asks at every time
step for W_ih^T and W_hh^T, and for x_t W_ih^T, which does not depend on the state. While ``nn.RNN``
unrolls a cell, three rules move that work out of the steps, with no help from the cell:

1. **Invariant ops run once.** An op whose inputs are all invariant (a Value needing a gradient that
   was made before the unroll, such as a parameter, or the result of this rule) and numbers is
   computed at its first use; every later step gets the same node. W_hh^T is one node feeding all T
   steps, and its gradient is the sum over them, as the built-in cells have it.
2. **Row-wise ops on the input run once for all steps.** An op whose inputs are row t of the input
   sequence (x_t as the unroll handed it, or a result of this rule at step t), invariants and
   numbers, and which treats rows independently (an elementwise op, or a matmul with the row on the
   left), is computed once on the whole sequence; step t reads its row. x_t W_ih^T + b becomes one
   (T B, I) matmul and one add before step 1, and a row read per step.
3. **An invariant added to a step's sum joins the row.** (r + n) + c, with r a row of rule 2, n the
   step's own work (h W_hh^T) and c invariant (a bias), is computed as (r + c) + n: c is added once,
   by rule 2, for all steps. (r + n) was already made when the add asks: it is left unused.

The results are the same to rounding (a matmul over many rows may sum in another order, a regrouped
sum rounds in another order), and every
gradient follows from the graph as always. Hoisted nodes are made outside the step scopes, where the
built-in cells make their shared terms, so pictures show them once, before step 1. Nothing else is
moved: an op reading the state, data made inside a step, or an op whose parameters are arrays (an
index array, a mask) runs where the cell runs it. ``nn.RNN(cell, hoist=False)`` turns the rules off.
"""

from __future__ import annotations

import numpy as np

from tinygrad_rnn import ops
from tinygrad_rnn.autograd import CLOCK, STATE
from tinygrad_rnn.value import Value, apply, as_value

__all__ = ["Hoist"]

_NUMBERS = (int, float, np.generic)
_UNSEEN = object()


class Hoist:
    """One unroll's hoisting (see the module docstring): installed as ``STATE.hoist`` while a cell runs,
    asked by ``value.apply`` before every op; ``None`` from ``apply`` means the op runs as usual."""

    def __init__(self, sequence):
        self.start = next(CLOCK)  # a Value needing a gradient made before this tick is invariant
        self.scope = STATE.scope  # hoisted nodes are made here, outside the steps
        self.sequence = sequence  # the whole input (T, ...), an array or a Value; None for a list of steps
        self.whole = None  # the sequence as a Value, made at its first use
        self.memo = {}  # key -> node: the work done once
        self.hoisted = set()  # ids of the memo's nodes (it keeps them alive, so the ids stay theirs)
        self.rows = {}  # at the current step: id(row node) -> (the row, the whole node it is a row of)
        self.index, self.x, self.read = None, None, None

    def step(self, index: int, x) -> None:
        """Step ``index`` (0-based) begins; the cell is handed ``x``, row ``index`` of the sequence."""
        self.index, self.x, self.rows, self.read = index, x, {}, ops.GetItem(index)

    def apply(self, op: ops.Op, inputs: tuple):
        kinds = []
        for x in inputs:
            kind = self._kind(x)
            if kind is None:  # (most ops in a step read the state: the first such input decides)
                if type(op) is ops.Add:
                    other = inputs[1] if x is inputs[0] else inputs[0]
                    if self._kind(other) == "invariant":
                        return self._regroup(x, other)
                return None
            kinds.append(kind)
        rows = "row" in kinds
        # (ids: the memo keeps every node a key names alive, so an id stays its own)
        key = [type(op), *vars(op).values(), *[id(self._whole(x)) if kind == "row" else (id(x), x._version)
                                               if kind == "invariant" else (type(x), x)
                                               for x, kind in zip(inputs, kinds)]]
        try:
            node = self.memo.get(tuple(key), _UNSEEN)
        except TypeError:  # an op holding an array or a list (an index, a mask): not hoisted
            return None
        if node is _UNSEEN:  # the first time: hoist it if a rule applies (and remember if none does)
            with _off(self.scope):
                node = self.memo[tuple(key)] = self._once(op, inputs, kinds)
            if node is not None:
                self.hoisted.add(id(node))
        if node is None or not rows:
            return node
        STATE.hoist = None  # (row t of the whole: read at this step, not itself hoisted)
        try:
            row = apply(self.read, node)
        finally:
            STATE.hoist = self
        self.rows[id(row)] = row, node  # (the row kept alive with it: its id stays its own)
        return row

    def _once(self, op: ops.Op, inputs: tuple, kinds: list) -> Value | None:
        """The op's result computed once: as it is (rule 1), or on the whole sequence (rule 2); None
        where rule 2 does not hold."""
        if "row" not in kinds:
            return apply(op, *inputs)
        shape = next(x.shape for x, kind in zip(inputs, kinds) if kind == "row")
        if isinstance(op, ops.Elementwise):
            if any(kind == "row" and x.shape != shape or kind == "invariant" and x.ndim > len(shape)
                   for x, kind in zip(inputs, kinds)):
                return None  # broadcast against the whole sequence, an input would meet another axis
            return apply(op, *[self._whole(x) if kind == "row" else x for x, kind in zip(inputs, kinds)])
        if isinstance(op, ops.MatMul) and kinds == ["row", "invariant"] and len(shape) in (1, 2) \
                and inputs[1].ndim == 2:
            return _rows_times(self._whole(inputs[0]), inputs[1])
        return None

    def _regroup(self, total, invariant) -> Value | None:
        """(r + n) + c as (r + c) + n, for r a row and c invariant (rule 3): c joins the projection."""
        if type(total) is Value and type(total.op) is ops.Add:
            for row, rest in (total.parents, total.parents[::-1]):
                if id(row) in self.rows and self._kind(rest) is None:
                    joined = self.apply(total.op, (row, invariant))
                    if joined is not None:
                        STATE.hoist = None  # (joined + rest reads the state: nothing more to hoist)
                        try:
                            return apply(total.op, joined, rest)
                        finally:
                            STATE.hoist = self
        return None

    def _kind(self, x) -> str | None:
        """"row" (row t of the sequence), "invariant", "number", or None (the op runs as usual)."""
        if type(x) is Value:
            if x._made >= self.start:  # made during the unroll: hoisted, a row, or the step's own work
                if id(x) in self.hoisted:
                    return "invariant"
                return "row" if (id(x) in self.rows or x is self.x) and self.sequence is not None else None
            if x.requires_grad or id(x) in self.hoisted:  # (a constant's tick is 0: hoisted ones too)
                return "invariant"
            if id(x) in self.rows or x is self.x:
                return "row" if self.sequence is not None else None
            if x.op is None and x._data is self.x:  # as_value(x_t) in the cell: the same row
                self.rows[id(x)] = x, self._whole(self.x)
                return "row" if self.sequence is not None else None
            return None
        if x is self.x:
            return "row" if self.sequence is not None else None
        return "number" if isinstance(x, _NUMBERS) else None

    def _whole(self, row) -> Value:
        """The whole-sequence node that ``row`` is row t of."""
        if row is self.x:
            if self.whole is None:
                with _off(self.scope):
                    self.whole = as_value(self.sequence)
            return self.whole
        return self.rows[id(row)][1]


def _rows_times(whole: Value, weight: Value) -> Value:
    """whole @ weight for every row of the sequence: (T, I) @ (I, H) as it is, and (T, B, I) as one
    (T B, I) matmul (a 3-d matmul would be T small ones, and so would its gradient)."""
    if whole.ndim == 2:
        return whole @ weight
    steps, batch, width = whole.shape
    return (whole.reshape(steps * batch, width) @ weight).reshape(steps, batch, weight.shape[1])


class _off:
    """Inside, no hoisting (and, given a scope, nodes are made in it)."""

    def __init__(self, scope: str | None = None):
        self.scope = scope

    def __enter__(self):
        self.saved = STATE.hoist, STATE.scope
        STATE.hoist = None
        if self.scope is not None:
            STATE.scope = self.scope

    def __exit__(self, *exc):
        STATE.hoist, STATE.scope = self.saved

"""The compiled replay's memory plan: where the terms of each sum go, derived from the tape's
structure alone (nothing here knows what an RNN is).

A weight used at every time step gets one product a_t^T g_t per step (MatMul's vjp keeps them as
``Products``), and an array read row by row (X[t]) gets one scattered row per step (``Scattered``).
Eager mode collects those terms at run time; the compiled code knows them all when compiling, so each
term is written into the rows of buffers made once for the recording (they live across calls: no
page faults, no lists of terms), and the sum is one matmul over the rows (in the blocks that
``Products.total`` uses, so the floats are the same) or the filled buffer itself. A stack of results
is written row by row as each is made; a transposed weight read by several matmuls is made contiguous
once; the pick of the targets' gradient is added where it was picked.

This module decides, from the tape, while compile.py writes the lines; rewrites.py then rewrites the
written lines to use the plan (expressions of a stacked row computed once over the buffer, each
step's gradient computed into its row, rows read in place or copied at once).
"""

from __future__ import annotations

import ast

import numpy as np

from tinygrad_rnn.guards import Argument
from tinygrad_rnn.ops import Products, Scattered  # (re-exported there, wherever their module lives)

__all__ = ["stacks", "written_into", "of_sum", "into_rows", "complete", "added_in_place", "made_by_arithmetic",
           "reused_transposes"]


def stacks(tape, examples: dict) -> tuple[dict, dict]:
    """({slot: (buffer, row)}, {stack's slot: buffer}) for each stack along axis 0 of distinct op
    results of one shape and dtype (an RNN's hidden states): each is written into its row of one
    buffer as soon as it is made, and the stack is the buffer, with no copy at the end."""
    made = {out for _, _, out in tape.forward}
    stacked, stacks = {}, {}
    for op, ins, out in tape.forward:
        if op.name != "stack" or op.axis != 0 or len(set(ins)) != len(ins) or not set(ins) <= made:
            continue
        rows = [examples[i][0] for i in ins]
        like = examples[out][0]
        if any(type(r) is not np.ndarray or r.shape != like.shape[1:] or r.dtype != like.dtype for r in rows):
            continue
        if any(i in stacked for i in ins):
            continue  # (a state in two stacks keeps its first)
        stacks[out] = buffer = np.empty(like.shape, like.dtype)
        stacked.update((i, (buffer, row)) for row, i in enumerate(ins))
    return stacked, stacks


def written_into(line: str, row: str, variable: str) -> list[str]:
    """A forward line ``v16 = np.tanh(v15)  # t=1`` made to write its result into ``row`` of a buffer:
    ``np.tanh(v15, out=row)`` for a numpy ufunc (no copy), else the line and a copy into the row."""
    code, _, note = line.partition("  # ")
    value = ast.parse(code).body[0].value
    function = value.func if isinstance(value, ast.Call) else None
    if (isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name) and function.value.id == "np"
            and isinstance(getattr(np, function.attr, None), np.ufunc) and not value.keywords
            and len(value.args) == getattr(np, function.attr).nin):
        value.keywords.append(ast.keyword("out", ast.parse(row, mode="eval").body))
        return [f"{variable} = {ast.unparse(value)}" + (f"  # {note}" if note else "")]
    return [line, f"{row} = {variable}"]


def of_sum(values: list, like):
    """How the terms ``values`` arriving at a slot are summed: ("product",) for one matmul's a^T g,
    ("products", rows of a, rows of g, blocks) or ("rows", buffer), or None (as they come)."""
    if len(values) == 1 and type(values[0]) is Products:
        return ("product",)
    if len(values) < 2 or any(type(t) is not type(values[0]) for t in values):
        return None
    if type(values[0]) is Products:
        a, g = [t.terms[0][0] for t in values], [t.terms[0][1] for t in values]
        if any(x.shape != a[0].shape for x in a) or any(x.shape != g[0].shape for x in g) or a[0].ndim != 2:
            return None
        blocks, start, rows = [], 0, 0
        for end in range(1, len(a) + 1):  # Products.total's blocks, first step first
            rows += a[0].shape[0]
            if rows >= Products.BLOCK_ROWS or end == len(a):
                blocks.append((start, end))
                start, rows = end, 0
        return ("products", np.empty((len(a), *a[0].shape), np.result_type(*a)),
                np.empty((len(g), *g[0].shape), np.result_type(*g)), blocks)
    if type(values[0]) is Scattered:
        rows = [t.terms[0][0] for t in values]
        shape = values[0].terms[0][1]
        if not shape or sorted(r for r in rows if type(r) is int) != list(range(shape[0])) or len(rows) != shape[0]:
            return None
        return ("rows", np.empty(shape, np.result_type(*[t.terms[0][2] for t in values], np.float32)))
    return None


def into_rows(name: str, term: str, plan: tuple, i: int, bind) -> list[str]:
    """The lines writing the i-th term (its code: ``Products(a, g)``, ``Scattered(index, shape, g)``)
    into the plan's buffers."""
    call = ast.parse(term, mode="eval").body
    args = [ast.unparse(a) for a in call.args]
    if plan[0] == "product":  # (Products.total of one term)
        return [f"{name} = {args[0]}.T @ {args[1]}"]
    if plan[0] == "products":  # (the terms come last step first; the rows are first step first)
        row = len(plan[1]) - 1 - i
        return [f"{bind(plan[1], 'a_rows')}[{row}] = {args[0]}", f"{bind(plan[2], 'g_rows')}[{row}] = {args[1]}"]
    return [f"{bind(plan[1], 'rows')}[{args[0]}] = {args[2]}"]


def complete(name: str, plan: tuple, bind) -> list[str]:
    """The line making the slot's gradient from the buffers, once every term is in."""
    if plan[0] == "product":
        return []
    if plan[0] == "rows":
        return [f"{name} = {bind(plan[1], 'rows')}  # every row written in place"]
    a, g = bind(plan[1], "a_rows"), bind(plan[2], "g_rows")
    k, m = plan[1].shape[-1], plan[2].shape[-1]
    blocks = [f"{a}[{s}:{e}].reshape(-1, {k}).T @ {g}[{s}:{e}].reshape(-1, {m})" if e - s > 1
              else f"{a}[{s}].T @ {g}[{s}]" for s, e in plan[3]]
    lines = [f"{name} = {blocks[0]}  # the sum of a_t^T g_t over the rows: one matmul"]
    lines += [f"np.add({name}, {b}, out={name})" for b in blocks[1:]]
    return lines


def added_in_place(index, template, before: list, example: tuple, grad) -> bool:
    """Whether the gradient ``grad`` of ``x[index]`` (GetItem's term, a ``Scattered``: zeros with
    ``grad`` added at ``index``) may be added where it was picked, into a copy of the sum of the terms
    ``before`` it, with eager mode's floats: when those are whole arrays of x's gradient's shape and
    dtype (``example``: x's data and gradient, recorded) and so is ``grad``, and the index picks each
    entry once whatever this call's integer arguments hold. The index must be a tuple of integer
    arrays, the parts not from an argument (``template``'s others than ``Argument`` markers; all of
    them when ``template`` is None) naming each picked position once: cross_entropy's pick, the
    leading positions from ``np.indices`` and the targets. Then each entry gets other + g, as eager
    mode's other + (0 + g) (but for the sign of a zero)."""
    data, gradient = example
    if not (type(index) is tuple and index and type(gradient) is np.ndarray and type(grad) is np.ndarray):
        return False
    if any(type(t) is not np.ndarray or (t.shape, t.dtype) != (gradient.shape, gradient.dtype) for t in before):
        return False
    if grad.dtype != gradient.dtype or len(index) > np.ndim(data):
        return False
    marks = template if type(template) is tuple and len(template) == len(index) else (None,) * len(index)
    if any(not isinstance(part, np.ndarray) or part.dtype.kind not in "iu" for part in index):
        return False
    shape = np.broadcast_shapes(*(part.shape for part in index))
    fixed = [np.broadcast_to(np.asarray(part) % np.shape(data)[axis], shape).ravel()
             for axis, (part, mark) in enumerate(zip(index, marks)) if not isinstance(mark, Argument)]
    if not fixed:
        return False
    named = np.stack(fixed, axis=1)
    return len(np.unique(named, axis=0)) == len(named)


_ARITHMETIC = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.MatMult, ast.Pow)


def made_by_arithmetic(line: str) -> bool:
    """Whether the line's value (``g123 = g125 * v125``, ``np.exp(v)``) is a new array, no one
    else's: not a name, a view (a reshape, a row) or a constant passed on."""
    try:
        (statement,) = ast.parse(line.strip()).body
    except (SyntaxError, ValueError):
        return False
    node = getattr(statement, "value", None)
    if isinstance(node, ast.BinOp):
        return isinstance(node.op, _ARITHMETIC)
    if isinstance(node, ast.UnaryOp):
        return isinstance(node.op, ast.USub)
    function = node.func if isinstance(node, ast.Call) else None
    return (isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name) and function.value.id == "np"
            and isinstance(getattr(np, function.attr, None), np.ufunc) and not node.keywords)


def reused_transposes(tape, examples: dict) -> dict:
    """{W^T's slot: W's slot} for each transpose of a matrix that two or more matmuls read: made
    contiguous once per call, and in the backward pass (W^T)^T is W itself, not a view of the copy.
    Contiguous operands take BLAS's other path, which may round the last bit otherwise: here the
    compiled code's floats agree with eager mode's to rounding, not bit for bit."""
    readers: dict = {}
    for op, ins, _ in tape.forward:
        if op.name == "matmul":
            for i in set(ins):
                readers[i] = readers.get(i, 0) + 1
    found = {}
    for op, ins, out in tape.forward:
        matrix = examples[ins[0]][0] if ins else None
        if (op.name == "transpose" and op.axes == (1, 0) and readers.get(out, 0) >= 2
                and type(matrix) is np.ndarray and matrix.flags.c_contiguous):
            found[out] = ins[0]
    return found

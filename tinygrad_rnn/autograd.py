"""Reverse-mode autodiff over a recorded graph: topological order, the backward pass, no_grad, scopes.

A node is anything with ``data``, ``op``, ``parents``, ``requires_grad``, ``grad``, ``hooks`` and
``_made``, the tick of ``CLOCK`` it was made at (a Value). The walk never recurses, so a
1,000,000-step recurrence backpropagates under Python's default recursion limit.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import threading
from collections.abc import Iterator, Sequence

import numpy as np

from tinygrad_rnn.ops import RAW_TYPES, LazySum, shape_of

__all__ = [
    "STATE", "no_grad", "enable_grad", "scope", "topological_order", "backpropagate", "edge_vjp",
]


class _State(threading.local):
    """Recording state, one copy per thread (as PyTorch's grad mode): whether ops record, the scope
    new nodes are tagged with, and the node whose hooks are running (a hook gets only the gradient,
    as in PyTorch; one that leaves a note on its node, as clipping does, finds the node here)."""

    grad_enabled = True
    scope = ""
    hook_node = None
    tape = None  # while tinygrad_rnn.replay records a call, its Recorder (guards.py): told of every op


STATE = _State()

# A clock for the version check: every write of a Value's data is stamped with the next tick, and a
# node remembers the tick it was made at. A parent stamped later than its child was changed after
# the child used it (PyTorch's version counter); next() on a count is atomic, so threads may share it.
CLOCK = itertools.count(1)


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Inside, ops compute values but record no graph (for evaluation and optimiser steps).
    Per thread: other threads go on recording."""
    previous, STATE.grad_enabled = STATE.grad_enabled, False
    try:
        yield
    finally:
        STATE.grad_enabled = previous


@contextlib.contextmanager
def enable_grad() -> Iterator[None]:
    """Inside, ops record again, even within ``no_grad``."""
    previous, STATE.grad_enabled = STATE.grad_enabled, True
    try:
        yield
    finally:
        STATE.grad_enabled = previous


@contextlib.contextmanager
def scope(name: str) -> Iterator[str]:
    """Tag every Value created inside with ``name``; scopes nest as paths, ``"encoder/t=3"``.

    The RNN unroll wraps each time step in a scope, which is how pictures cluster a step and
    diagnostics find h_t, for any cell, with no help from the cell.
    """
    previous = STATE.scope
    STATE.scope = f"{previous}/{name}" if previous else str(name)
    try:
        yield STATE.scope
    finally:
        STATE.scope = previous


def topological_order(roots: Sequence, constants: bool = False) -> list:
    """Every node reachable from ``roots`` that needs a gradient (or every one, with ``constants``),
    each after all its parents.

    A parent always exists before its child, so the order in which nodes were made is an order
    with every parent first: collect the reachable nodes (an explicit stack, no recursion), then
    sort them by the clock tick each was made at. (One visit per node, where a depth-first
    post-order needs two.)
    """
    found = list(dict.fromkeys(roots))  # in the order first met, so that ties sort the same every time
    reached, stack = set(found), list(found)
    while stack:
        for parent in stack.pop().parents:
            if parent not in reached and (constants or parent.requires_grad):
                reached.add(parent)
                stack.append(parent)
                found.append(parent)
    return sorted(found, key=_made_at)  # (constants made by ops share tick 0: they have no parents)


_made_at = operator.attrgetter("_made")


def backpropagate(roots: Sequence, root_grads: Sequence, create_graph: bool = False, into_grad: bool = True,
                  order: Sequence | None = None, hooks: bool = True, wanted: Sequence = ()) -> dict:
    """The backward pass: the one loop that computes gradients.

    Walks the nodes children-first (only those in ``order``, parents first, when given); a
    node's gradient is complete when it comes up, so its hooks run then, before it flows to the
    parents through each op's vector-Jacobian product. With ``into_grad`` each gradient is added to
    its node's ``.grad`` (PyTorch's rule: they add up across calls until ``zero_grad``). Returns the
    complete gradients of the ``wanted`` nodes (node -> gradient; absent if none reached it).
    """
    if STATE.tape is not None and not create_graph:
        STATE.tape.refuse_backward()  # a replay would not compute it again
    on_path = None if order is None else set(order)
    keep = set(wanted)
    pending, found = {}, {}
    for root, g in zip(roots, root_grads):
        pending[root] = pending[root] + g if root in pending else g
    handed_out = set(map(id, root_grads))
    ndarray = np.ndarray  # (a local: no global and attribute lookup per node)
    for node in reversed(topological_order(roots) if order is None else order):
        g = pending.pop(node, None)
        if g is None:
            continue
        if isinstance(g, LazySum):  # e.g. a shared weight's products from every step: one matmul now
            g = g.total()
        if hooks and node.hooks:
            g = _run_hooks(node, g, handed_out)  # a replacement array is handed out below like any other
        op = node.op
        if type(g) is ndarray:
            # A pass-through op (add) hands one array to several nodes and a view (reshape) shares
            # another's memory. Inside the graph that is safe once the array is read-only; a leaf's
            # gradient (and what grad() returns) is the caller's to scale in place: an own copy.
            if into_grad and op is not None:
                g.setflags(write=False)  # (cheaper than setting flags.writeable)
            elif into_grad or node in keep:
                if id(g) in handed_out or g.base is not None:  # (ids, not flags: reading flags costs)
                    g = g.copy()
            handed_out.add(id(g))
        if into_grad:
            if op is None:
                accumulate(node, g)
            else:
                node.grad = g if node.grad is None else node.grad + g
        if keep and node in keep:
            found[node] = g
        if op is None:
            continue
        parents = node.parents
        # Raw arrays are fast; Values make the formulas record themselves (higher derivatives).
        # (``_data`` is the slot behind the ``data`` property: no property call on the hot path.)
        if create_graph:
            out, inputs = node, parents
        else:  # two parents spelled out: the common case builds its list without a loop
            out = node._data
            inputs = [parents[0]._data, parents[1]._data] if len(parents) == 2 else [p._data for p in parents]
        k = 0
        for parent in parents:
            if parent.requires_grad if on_path is None else parent in on_path:
                if parent._version > node._made:
                    _changed_after_use(parent, node)
                contribution = op.vjp_term(k, g, out, inputs)
                previous = pending.get(parent)
                pending[parent] = contribution if previous is None else previous + contribution
            k += 1
    return found


def accumulate(leaf, grad) -> None:
    """``leaf.grad += grad``, holding a lock: threads may backpropagate into one leaf (a shared weight)
    at once, as in PyTorch, and without it a sum another thread wrote in between would be lost."""
    with _LEAF_LOCK:
        leaf.grad = grad if leaf.grad is None else leaf.grad + grad


_LEAF_LOCK = threading.Lock()


def edge_vjp(node, k: int, grad):
    """The gradient input ``k`` of ``node``'s op receives when ``node``'s gradient is ``grad``: one
    vector-Jacobian product, by the op's own definition, as the loop above computes it for every edge
    (pictures label an edge with it)."""
    return node.op.vjp(k, grad, node.data, [p.data for p in node.parents])


def _run_hooks(node, grad, handed_out: set):
    """Each hook sees the gradient left by the one before; a replacement must be one like it.

    A hook gets the gradient read-only (as PyTorch's hooks must not change theirs, it may be shared
    with other nodes); it returns a replacement instead. The array counts as handed out, so a leaf
    that keeps it as ``.grad`` takes a copy of its own."""
    if type(grad) is np.ndarray:
        grad.setflags(write=False)
        handed_out.add(id(grad))
    previous, STATE.hook_node = STATE.hook_node, node
    try:
        given = grad
        for hook in list(node.hooks):
            grad = _replacement(hook, node, grad, hook(grad))
    finally:
        STATE.hook_node = previous
    # A replacement array stays the hook's own: the graph (which may mark it read-only) gets a copy.
    return grad.copy() if grad is not given and type(grad) is np.ndarray else grad


def _replacement(hook, node, grad, result):
    """What a hook returned, checked: None keeps the gradient; anything else must match it in kind
    (a Python float for a float, an array or Value of the same shape and dtype otherwise)."""
    if result is None:
        return grad
    if type(grad) is float:
        ok = type(result) is float or (isinstance(result, np.floating) and result.dtype == np.float64)
        result = float(result) if ok else result
    else:
        ok = type(result) is type(grad) and shape_of(result) == shape_of(grad) and result.dtype == grad.dtype
    if not ok:
        name = getattr(hook, "__name__", None) or repr(hook)
        kind = (f"{type(result).__name__} of dtype {np.result_type(result)} and shape {shape_of(result)}"
                if isinstance(result, RAW_TYPES) else type(result).__name__)
        expected = "a float" if type(grad) is float else f"shape {shape_of(grad)} and dtype {grad.dtype}"
        error = ValueError if type(result) is type(grad) and shape_of(result) != shape_of(grad) else TypeError
        raise error(f"hook {name} on {node!r}: returned {kind}, expected a gradient of {expected}")
    return result


def _changed_after_use(parent, node):
    raise RuntimeError(
        f"backward: {parent!r} was changed after {node.op.name} used it (its data was replaced or "
        f"updated in place, e.g. by an optimiser step), so the gradient through {node!r} would be "
        "wrong. Run the forward pass again after changing it."
    )

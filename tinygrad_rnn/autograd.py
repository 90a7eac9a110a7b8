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

from tinygrad_rnn.hooks import checked
from tinygrad_rnn.ops import LazySum

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
    hoist = None  # while nn.RNN runs a cell, its Hoist (hoist.py): asked first by every op


STATE = _State()

# A clock for the version check: every write of a Value's data is stamped with the next tick, and a
# node remembers the tick it was made at. A parent stamped later than its child was changed after
# the child used it (PyTorch's version counter); next() on a count is atomic, so threads may share it.
CLOCK = itertools.count(1)


@contextlib.contextmanager
def _grad_mode(enabled: bool) -> Iterator[None]:
    previous, STATE.grad_enabled = STATE.grad_enabled, enabled
    try:
        yield
    finally:
        STATE.grad_enabled = previous


def no_grad():
    """Inside, ops compute values but record no graph (for evaluation and optimiser steps).
    Per thread: other threads go on recording."""
    return _grad_mode(False)


def enable_grad():
    """Inside, ops record again, even within ``no_grad``."""
    return _grad_mode(True)


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
    return sorted(found, key=operator.attrgetter("_made"))  # (constants made by ops share tick 0)


def backpropagate(roots: Sequence, root_grads: Sequence, create_graph: bool = False, into_grad: bool = True,
                  order: Sequence | None = None, hooks: bool = True, wanted: Sequence = (),
                  stop: Sequence = ()) -> dict:
    """The backward pass: the one loop that computes gradients.

    Walks the nodes children-first (only those in ``order``, parents first, when given); a
    node's gradient is complete when it comes up, so its hooks run then, before it flows to the
    parents through each op's vector-Jacobian product. With ``into_grad`` each gradient is added to
    its node's ``.grad`` (PyTorch's rule: they add up across calls until ``zero_grad``). Returns the
    complete gradients of the ``wanted`` nodes (node -> gradient; absent if none reached it). A node in
    ``stop`` keeps its gradient: nothing flows from it to its parents.

    With ``create_graph`` the ops' formulas get Values and record themselves (higher derivatives);
    otherwise raw arrays, and an array may be shared: an add hands one gradient to both its inputs,
    a reshape a view of it. So inside the graph every gradient is read-only, and one that leaves it
    (a leaf's ``.grad``, a returned gradient) is a copy of its own where it might be shared.
    """
    if STATE.tape is not None and not create_graph:
        STATE.tape.refuse_backward()  # a replay would not compute it again
    on_path = None if order is None else set(order)
    stop = set(stop)
    keep, found, pending = set(wanted), {}, {}
    for root, g in zip(roots, root_grads):
        pending[root] = pending[root] + g if root in pending else g
    handed_out = set(map(id, root_grads))
    for node in reversed(topological_order(roots) if order is None else order):
        g = pending.pop(node, None)
        if g is None:
            continue
        if isinstance(g, LazySum):  # e.g. a shared weight's products from every step: one matmul now
            g = g.total()
        if hooks and node.hooks:
            if create_graph and STATE.tape is not None:  # a hook's answer would be frozen into the recording
                STATE.tape.refuse_hooks(node)
            g = _run_hooks(node, g, handed_out)
        op = node.op
        if op is None:  # a leaf: its gradient leaves the graph, as a copy of its own where it may be shared
            if type(g) is np.ndarray and (into_grad or node in keep) and (id(g) in handed_out or g.base is not None):
                g = g.copy()
            if into_grad:
                accumulate(node, g)
            if keep and node in keep:
                found[node] = g
            continue
        if type(g) is np.ndarray:
            if into_grad:
                g.setflags(write=False)
            elif node in keep and (id(g) in handed_out or g.base is not None):
                g = g.copy()
            handed_out.add(id(g))
        if into_grad:
            node.grad = g if node.grad is None else node.grad + g
        if keep and node in keep:
            found[node] = g
        if stop and node in stop:
            continue
        inputs = node.parents
        if create_graph:
            out, data = node, inputs
        else:  # (two inputs spelled out: the common case builds its list without a loop)
            out = node._data
            data = [inputs[0]._data, inputs[1]._data] if len(inputs) == 2 else [p._data for p in inputs]
        k = 0
        for parent in inputs:
            if parent.requires_grad if on_path is None else parent in on_path:
                if parent._version > node._made:
                    _changed_after_use(parent, node)
                contribution = op.vjp_term(k, g, out, data)
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
    """Each hook sees the gradient left by the one before, read-only (it may be shared with other
    nodes, and PyTorch's hooks must not change theirs either); it may return a replacement instead,
    which stays the hook's own: the graph gets a copy."""
    if type(grad) is np.ndarray:
        grad.setflags(write=False)
        handed_out.add(id(grad))
    previous, STATE.hook_node = STATE.hook_node, node
    try:
        given = grad
        for hook in list(node.hooks):
            grad = checked(hook, node, grad, hook(grad))
    finally:
        STATE.hook_node = previous
    return grad.copy() if grad is not given and type(grad) is np.ndarray else grad


def _changed_after_use(parent, node):
    raise RuntimeError(
        f"backward: {parent!r} was changed after {node.op.name} used it (its data was replaced or "
        f"updated in place, e.g. by an optimiser step), so the gradient through {node!r} would be "
        "wrong. Run the forward pass again after changing it."
    )

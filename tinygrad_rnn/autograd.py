"""Reverse-mode autodiff over a recorded graph: topological order, backward, grad, no_grad, scopes.

A node is anything with ``data``, ``op``, ``parents``, ``requires_grad``, ``grad`` and ``hooks``
(a Value). The walk never recurses, so a 100,000-step recurrence backpropagates under Python's default
recursion limit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from tinygrad_rnn.ops import RAW_TYPES, shape_of

__all__ = ["STATE", "no_grad", "enable_grad", "scope", "topological_order", "subgraph", "backward", "grad"]


class STATE:
    """Process-wide recording state: whether ops record, the scope new nodes are tagged with, and
    the node whose hooks are running (a hook gets only the gradient, as in PyTorch; one that
    wants to leave a note on its node, as clipping does, finds it here)."""

    grad_enabled = True
    scope = ""
    hook_node = None


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Inside, ops compute values but record no graph (for evaluation and optimiser steps)."""
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

    The RNN unroll wraps each time step in ``scope(f"t={t}")``, which is how pictures cluster a step
    and diagnostics find h_t, for any cell, with no help from the cell.
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

    Depth-first post-order with an explicit stack instead of recursion: a node met for the first
    time is expanded (its parents pushed above it); met again on top of the stack, its parents are
    all finished, so it is emitted. Copies pushed twice by a diamond are emitted once.
    """
    order, expanded, emitted = [], set(), set()
    stack = list(roots)
    while stack:
        node = stack[-1]
        if node in expanded:
            stack.pop()
            if node not in emitted:
                emitted.add(node)
                order.append(node)
            continue
        expanded.add(node)
        for parent in node.parents:
            if (constants or parent.requires_grad) and parent not in expanded:
                stack.append(parent)
    return order


def subgraph(outputs: Sequence, inputs: Sequence) -> list:
    """The nodes on some path from an input to an output, parents first: all that a gradient of
    ``outputs`` with respect to ``inputs`` needs. Computed once, it serves many seeds (one per row
    of a Jacobian) without walking the rest of the graph again."""
    reaches = {id(x) for x in inputs}
    order = []
    for node in topological_order(outputs, constants=True):  # an input may be a constant (h_0)
        if id(node) in reaches or any(id(p) in reaches for p in node.parents):
            reaches.add(id(node))
            order.append(node)
    return order


def _run_hooks(node, grad):
    """Each hook sees the gradient left by the one before; a replacement must keep the shape."""
    previous, STATE.hook_node = STATE.hook_node, node
    try:
        for hook in list(node.hooks):
            grad = _replacement(hook, node, grad, hook(grad))
    finally:
        STATE.hook_node = previous
    return grad


def _replacement(hook, node, grad, result):
    """What a hook returned, checked: None keeps the gradient; anything else must be one like it."""
    if result is None:
        return grad
    numeric = isinstance(result, RAW_TYPES) or type(result) is type(grad)  # a Value if recording
    if not numeric or shape_of(result) != shape_of(grad):
        hook_name = getattr(hook, "__name__", None) or repr(hook)
        got = f"{type(result).__name__} of shape {shape_of(result)}" if numeric else repr(result)[:40]
        raise ValueError(f"hook {hook_name} on {node!r}: returned {got}, expected a gradient of shape {shape_of(grad)}")
    return result


def _propagate(roots, root_grads, create_graph: bool, on_complete=None, order=None, hooks: bool = True) -> None:
    """The backward pass. Walks nodes children-first; a node's gradient is complete when it comes
    up, so its hooks run then, it is accumulated into ``.grad`` (or handed to ``on_complete``
    instead), and it flows on to the parents through each op's vector-Jacobian product.
    Given an ``order`` (from ``subgraph``), gradients flow only along the nodes in it."""
    on_path = None if order is None else set(order)
    pending = {}
    for root, g in zip(roots, root_grads):
        pending[root] = pending[root] + g if root in pending else g
    for node in reversed(topological_order(roots) if order is None else order):
        g = pending.pop(node, None)
        if g is None:
            continue
        if hooks and node.hooks:
            g = _run_hooks(node, g)
        if on_complete is None:
            node.grad = g if node.grad is None else node.grad + g
        else:
            on_complete(node, g)
        op = node.op
        if op is None:
            continue
        parents = node.parents
        # Raw arrays are fast; Values make the formulas record themselves (higher derivatives).
        out, inputs = (node, parents) if create_graph else (node.data, [p.data for p in parents])
        k = 0
        for parent in parents:
            if parent.requires_grad if on_path is None else parent in on_path:
                contribution = op.vjp(k, g, out, *inputs)
                pending[parent] = pending[parent] + contribution if parent in pending else contribution
            k += 1


def backward(roots: Sequence, root_grads: Sequence, create_graph: bool = False) -> None:
    """Accumulate d(roots)/d(node), weighted by ``root_grads``, into ``.grad`` of every node
    (PyTorch's rule: gradients add up across calls until ``zero_grad``)."""
    _propagate(roots, root_grads, create_graph)


def grad(outputs: Sequence, inputs: Sequence, grad_outputs: Sequence, create_graph: bool = False,
         order=None, hooks: bool = True) -> list:
    """The gradients of ``outputs`` with respect to ``inputs``, leaving every ``.grad`` untouched.
    The walk covers ``order`` when given (from ``subgraph``), else everything behind the outputs;
    ``hooks=False`` leaves hooks out (a Jacobian's unit seeds are not gradients to clip)."""
    wanted = {id(x): None for x in inputs}

    def capture(node, g):
        if id(node) in wanted:
            wanted[id(node)] = g

    _propagate(outputs, grad_outputs, create_graph, capture, order, hooks)
    return [wanted[id(x)] for x in inputs]

"""Gradient clipping: per-node hooks during backward, and global clipping after it.

Two places to clip an exploding gradient (Pascanu, Mikolov and Bengio 2013):

- **During backward, per node.** A hook on h_t rescales dL/dh_t before it flows on to h_{t-1}, so one
  bad step cannot blow up every step behind it. ``h.register_hook(clip_norm(1.0))``, or for every step
  of an RNN, ``RNN(cell, hidden_hook=clip_norm(1.0))``. Clipping is a hook like any other; ``backward``
  knows nothing about it.
- **After backward, globally.** ``clip_grad_norm_(model.parameters(), 5.0)`` treats all the parameter
  gradients as one long vector g and, when ||g|| > max_norm, rescales it to
  g * max_norm / (||g|| + 1e-6): the direction of the update is kept, only its length is capped
  (Algorithm 1 of the paper; PyTorch's semantics exactly).

Every clip hook notes what it did on its node (``recurrence.record_clip``: norm before, norm after, fired;
``recurrence.clip_record`` reads it back), so the renderer can mark clipped edges and diagnostics can count
clip events per step.

How a hook finds its node: the engine calls ``hook(grad)`` with the gradient only (PyTorch's
signature) and names the node whose hooks are running in ``autograd.STATE.hook_node`` (per thread, and
cleared when its hooks are done, so it keeps no graph alive); a clip hook
writes its record there, so one hook object may serve every step (``hidden_hook=``). The latest record
is also kept on the hook as ``hook.last``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from tinygrad_rnn import autograd, recurrence
from tinygrad_rnn.autograd import no_grad
from tinygrad_rnn.ops import raw
from tinygrad_rnn.value import Value

__all__ = [
    "ClipHook", "ClipValue", "ClipNorm", "clip_value", "clip_norm", "record",
    "clip_grad_norm_", "clip_grad_value_", "grad_norm",
]


def grad_norm(grad, norm_type: float = 2.0) -> float:
    """||grad||_p of a gradient (array, float or Value) as one flat vector, computed in float64."""
    flat = np.ravel(np.asarray(raw(grad), dtype=np.float64))
    if flat.size == 0:
        return 0.0
    if norm_type == math.inf:
        return float(np.max(np.abs(flat)))
    return float(np.linalg.norm(flat, ord=norm_type))


class ClipHook:
    """Base of the clip hooks: ``__call__(grad)`` returns the clipped gradient and records the event.

    Subclasses define ``clip(grad) -> (new_grad, fired)``. The record goes (``recurrence.record_clip``) to the
    node the engine is running hooks for, and to ``self.last``.
    """

    def __init__(self):
        self.last: dict | None = None

    def clip(self, grad):
        raise NotImplementedError

    def __call__(self, grad):
        norm_before = grad_norm(grad)
        new_grad, fired = self.clip(grad)
        self.last = {"norm_before": norm_before, "norm_after": grad_norm(new_grad) if fired else norm_before,
                     "fired": bool(fired)}
        node = autograd.STATE.hook_node
        if node is not None:
            recurrence.record_clip(node, **self.last)
        return new_grad if fired else None  # None: the gradient goes on unchanged


class ClipValue(ClipHook):
    """Clamp every element into [-c, c]: g_i <- min(max(g_i, -c), c). Changes the direction of g."""

    def __init__(self, c: float):
        super().__init__()
        if not c > 0:
            raise ValueError(f"clip_value: the bound must be positive, got {c}")
        self.c = float(c)

    def clip(self, grad):
        data = raw(grad)
        if not np.any(np.abs(data) > self.c):
            return grad, False
        if isinstance(grad, float):  # a scalar gradient: Python floats have no .clip
            return min(max(grad, -self.c), self.c), True
        # .clip exists on arrays and on Values, so under create_graph=True the clamp is recorded too.
        return grad.clip(-self.c, self.c), True

    def __repr__(self) -> str:
        return f"clip_value({self.c:g})"


class ClipNorm(ClipHook):
    """Rescale g to length max_norm when ||g|| > max_norm: g <- g * max_norm / ||g||; direction kept.

    A non-finite gradient is left as it is (recorded, not fired): scaling inf by 0 would only make NaN.
    """

    def __init__(self, max_norm: float):
        super().__init__()
        if not max_norm > 0:
            raise ValueError(f"clip_norm: max_norm must be positive, got {max_norm}")
        self.max_norm = float(max_norm)

    def clip(self, grad):
        norm = grad_norm(grad)
        if not (math.isfinite(norm) and norm > self.max_norm):
            return grad, False
        # A Python float keeps float32 gradients float32; a Value gradient stays recorded.
        return grad * (self.max_norm / norm), True

    def __repr__(self) -> str:
        return f"clip_norm({self.max_norm:g})"


def clip_value(c: float) -> ClipValue:
    """A hook that clamps each element of the gradient into [-c, c]."""
    return ClipValue(c)


def clip_norm(max_norm: float) -> ClipNorm:
    """A hook that rescales the gradient to norm ``max_norm`` when it is longer."""
    return ClipNorm(max_norm)


def record(into: list):
    """A hook that appends each gradient's 2-norm to the list ``into`` and changes nothing.
    Registered on every h_t it lists ||dL/dh_t|| in the order backward meets them: T first."""

    def record_norm(grad):
        into.append(grad_norm(grad))

    return record_norm


# ---- global clipping, after backward --------------------------------------------------------

def _with_grads(parameters) -> list:
    parameters = [parameters] if isinstance(parameters, Value) else list(parameters)
    return [p for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters: Value | Iterable[Value], max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> float:
    """Rescale all gradients together so that their joint norm is at most ``max_norm``.

    total = ||(g_1, ..., g_n)||_p, the p-norm of all gradients joined into one vector (p = inf: the
    largest |element|); every g_i <- g_i * min(1, max_norm / (total + 1e-6)). Returns ``total``, the norm
    before clipping. Parameters whose ``.grad`` is None are skipped. PyTorch's rule, including a
    non-finite total (a NaN anywhere makes it NaN, for every ``norm_type`` but 0): an error with
    ``error_if_nonfinite=True``, else the gradients are scaled by the non-finite coefficient (and
    become NaN), as PyTorch does. A NaN or negative ``max_norm`` and a NaN ``norm_type`` are refused.

    Gradients are rebound, never modified in place: a gradient array may be shared by several nodes.
    """
    params = _with_grads(parameters)
    max_norm, norm_type = float(max_norm), float(norm_type)
    # PyTorch takes these as they come and answers with NaN or flipped gradients; an error says why.
    if not max_norm >= 0.0:
        raise ValueError(f"clip_grad_norm_: max_norm must be a number >= 0, got {max_norm}")
    if math.isnan(norm_type):
        raise ValueError("clip_grad_norm_: norm_type must be a number (p of the p-norm, or inf), got nan")
    if not params:
        return 0.0
    # The norms of the norms, in numpy: Python's max() would drop a NaN that is not first.
    total = grad_norm(np.array([grad_norm(p.grad, norm_type) for p in params]), norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is non-finite ({total}), so "
            f"it cannot be clipped. Set error_if_nonfinite=False to scale the gradients by it anyway."
        )
    # np.minimum, unlike min(), keeps a NaN coefficient NaN (torch.clamp does the same).
    coefficient = float(np.minimum(max_norm / (total + 1e-6), 1.0))
    with no_grad(), np.errstate(invalid="ignore"):  # inf * 0 is NaN here on purpose, as in PyTorch
        for p in params:
            p.grad = p.grad * coefficient
    return total


def clip_grad_value_(parameters: Value | Iterable[Value], clip_value: float) -> None:
    """Clamp every gradient element into [-clip_value, clip_value] (rebinding each ``.grad``).

    A NaN gradient element stays NaN, as in PyTorch. A NaN or negative ``clip_value`` is refused
    (PyTorch would set every element to NaN, or to -|clip_value|)."""
    c = float(clip_value)
    if not c >= 0.0:
        raise ValueError(f"clip_grad_value_: clip_value must be a number >= 0, got {c}")
    with no_grad():
        for p in _with_grads(parameters):
            p.grad = min(max(p.grad, -c), c) if isinstance(p.grad, float) else p.grad.clip(-c, c)

"""Numbers computed once and reused, inside a block: ``with reuse_numbers(): ...``.

A program that draws several views of one run (the command's closing pictures: the step view, the
verdict, the lag view, the page) asks ``steps`` and ``lags`` the same question more than once, and a
step view's numbers cost one vector-Jacobian product per state unit and step. Inside the block each
answer is kept, and asked again (the same loss and states, as objects, and the same options) it is
given back instead of computed. A backward pass in between that changed the loss's or a state's
gradient is noticed: the numbers are computed afresh. Outside every block nothing is kept, and the
answer is always computed.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence

__all__ = ["reuse_numbers", "slot", "Slot"]

_KEPT: contextvars.ContextVar[dict | None] = contextvars.ContextVar("tinygrad_rnn_kept_numbers", default=None)


@contextlib.contextmanager
def reuse_numbers() -> Iterator[None]:
    """Inside, ``diagnostics.steps`` and ``diagnostics.lags`` asked again what they answered before
    give the same answer without computing it (module doc). The answers are let go at the end."""
    token = _KEPT.set({})
    try:
        yield
    finally:
        _KEPT.reset(token)


class Slot:
    """Where one answer is kept: ``value`` is None until one is, and set it to keep one (outside a
    ``reuse_numbers`` block, setting it keeps nothing)."""

    def __init__(self, kept: dict | None, key: tuple, objects: tuple, grads: tuple):
        self._kept, self._key, self._objects, self._grads = kept, key, objects, grads

    @property
    def value(self):
        if self._kept is None or self._key not in self._kept:
            return None
        objects, grads, value = self._kept[self._key]
        same = all(a is b for a, b in zip(objects, self._objects)) and all(a is b for a, b in zip(grads, self._grads))
        return value if same else None

    @value.setter
    def value(self, value) -> None:
        if self._kept is not None:
            # The objects are held too, so their ids cannot be taken by new ones while the block lasts.
            self._kept[self._key] = (self._objects, self._grads, value)


def slot(kind: str, loss, states: Sequence, *options) -> Slot:
    """The slot of question ``kind`` about ``loss`` (a Value, a list of them, or None) and ``states``
    with ``options``; the gradients it depends on are those of the loss and of the states' parts."""
    losses = list(loss) if isinstance(loss, (list, tuple)) else [loss]
    parts = [p for s in states for p in (s if isinstance(s, (tuple, list)) else (s,))]
    objects = (*losses, *parts)
    key = (kind, *map(id, objects), *options)
    grads = tuple(getattr(x, "grad", None) for x in objects)
    return Slot(_KEPT.get(), key, objects, grads)

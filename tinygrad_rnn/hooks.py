"""Hooks on the backward pass, outside the loop that runs them: the handle ``register_hook`` returns,
and the check of what a hook hands back (the loop itself, ``autograd._run_hooks``, calls each hook
on its node's complete gradient)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tinygrad_rnn.ops import RAW_TYPES, shape_of

__all__ = ["HookHandle", "checked"]


class HookHandle:
    """Returned by ``register_hook``; ``remove()`` takes the hook off again."""

    def __init__(self, hooks: list, hook: Callable):
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        if any(h is self._hook for h in self._hooks):
            self._hooks.remove(self._hook)


def checked(hook, node, grad, result):
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

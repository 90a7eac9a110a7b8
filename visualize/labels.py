"""What the op view writes on its nodes: data summaries, gradients, op symbols, names, notes.

Also ``measure``, which asks an edge for a number without letting one singular edge (log at 0)
stop the whole picture.
"""

from __future__ import annotations

import numpy as np

from tinygrad_rnn.value import Value
from visualize import style

__all__ = ["SYMBOLS", "summary", "grad_line", "shape_text", "measure", "formula", "display_name", "clip_note",
           "is_truncated"]

# How ops are written on their node; anything else shows its name.
SYMBOLS = {
    "add": "+", "sub": "−", "mul": "×", "div": "÷", "neg": "−x", "matmul": "@", "sigmoid": "σ",
    "transpose": "ᵀ", "abs": "|x|", "maximum": "max", "leaky_relu": "leaky relu", "broadcast_to": "broadcast",
    "scatter_add": "scatter +",
}


def summary(data, digits: int) -> str:
    """A short line about a value's data: the number itself, or its shape and range."""
    array = np.asarray(data)
    if array.size == 1:
        return style.number(array.reshape(()).item(), digits)
    if array.size <= 3:
        return "[" + ", ".join(style.number(v, 2) for v in array.ravel()) + "]"
    if array.size == 0:
        return "empty"
    return f"{style.number(array.min(), 2)} … {style.number(array.max(), 2)}"


def grad_line(grad, digits: int) -> str:
    g = np.asarray(grad.data if isinstance(grad, Value) else grad)
    if g.size == 1:
        return "grad " + style.number(g.reshape(()).item(), digits)
    return "‖grad‖ " + style.number(float(np.linalg.norm(g.ravel())), digits)


def shape_text(shape: tuple) -> str:
    return "×".join(str(n) for n in shape) if shape else ""


def measure(method) -> float | None:
    """Call an Edge method (derivative, jacobian_norm, observed_gain) with numpy's warnings off;
    an undefined number (log at 0 divides a Python float by zero) comes back as nan, not an error,
    so one singular edge cannot stop the whole picture."""
    with np.errstate(all="ignore"):
        try:
            return method()
        except (ZeroDivisionError, OverflowError, FloatingPointError):
            return float("nan")


def formula(op) -> str:
    """The op's forward and derivative, from the first line of its docstring (``tanh: y = ...``)."""
    lines = (type(op).__doc__ or "").strip().splitlines()
    return f"{op!r} · {lines[0]}" if lines else repr(op)


def display_name(node) -> str | None:
    """A node's name, or for an unnamed transpose or sum of named nodes a name made from theirs
    (``weight_hhᵀ``, ``bias_ih + bias_hh``), so the terms an RNN precomputes read as what they are."""
    if node.name:
        return str(node.name)
    if node.op is None:
        return None
    names = [p.name for p in node.parents]
    if node.op.name == "transpose" and names[0]:
        return f"{names[0]}ᵀ"
    if node.op.name in ("add", "sub") and all(names):
        return f" {SYMBOLS[node.op.name]} ".join(str(n) for n in names)
    return None


def clip_note(node) -> dict | None:
    """The clipping record a hook left on ``node.notes``, when it fired."""
    notes = node.notes if isinstance(node.notes, dict) else {}
    clip = notes.get("clip")
    return clip if isinstance(clip, dict) and clip.get("fired") else None


def is_truncated(node) -> bool:
    return isinstance(node.notes, dict) and bool(node.notes.get("truncated"))

"""The numbers a Value holds, and the float type an op's inputs meet in.

A Value holds a Python float or a float numpy array: float32 stays float32, every other number
becomes float64. Where an op's inputs differ in type, they meet in PyTorch's type, not numpy's (the
engine casts the others to it with a ``Cast`` node, so each gradient keeps its own Value's type).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

__all__ = ["as_data", "meeting_type", "PromotionWarning", "warn_if_promoted"]


def as_data(x, where: str = "Value", copy: bool = False):
    """Check and normalise data: a Python float, or a float array (float32 kept, others float64).
    ``copy`` makes sure the array is the Value's own, so no one else's array changes with it."""
    if isinstance(x, (int, float)) and not isinstance(x, np.generic):
        return float(x)
    try:
        array = np.array(x) if copy else np.asarray(x)
    except Exception as error:  # ragged lists and other things numpy cannot hold
        raise TypeError(f"{where}: data must be a number or a numeric array, got {type(x).__name__}") from error
    if array.dtype.kind in "iub":
        array = array.astype(np.float64)
    elif array.dtype.kind != "f":
        raise TypeError(
            f"{where}: data must be a number or a numeric array, got {type(x).__name__} "
            f"with dtype {array.dtype} ({_short(x)})"
        )
    return float(array) if array.ndim == 0 and array.dtype == np.float64 else array


def _short(x, width: int = 40) -> str:
    text = repr(x).replace("\n", " ")
    return text if len(text) <= width else text[: width - 3] + "..."


def meeting_type(values, inputs) -> tuple:
    """(dtype, positions): the float type PyTorch computes an op in, and which of its inputs (Values,
    as given in ``inputs``) must be cast to it.

    PyTorch ranks the inputs: arrays with dimensions, then 0-d ones (a Value holding a Python float is
    a 0-d float64), then Python numbers given as such, which are weak; the highest rank present decides
    the type. So a float32 array times a 0-d float64 stays float32, where numpy makes it float64; and a
    0-d float32 times Value(2.0) is float64, where numpy keeps float32 (it sees only a Python float).
    A number given as such (or a 0-d float64 array, which becomes one) is never cast: numpy, as
    PyTorch, lets it take the others' type.
    """
    weak = [given is not value and isinstance(given, (int, float, np.generic)) for value, given in zip(values, inputs)]
    ranked = ([np.result_type(v._data) for v, w in zip(values, weak) if not w and np.ndim(v._data)]
              or [np.result_type(v._data) for v, w in zip(values, weak) if not w])
    dtype = np.result_type(*ranked) if ranked else np.dtype(np.float64)
    return dtype, [k for k, (v, given) in enumerate(zip(values, inputs)) if np.result_type(v._data) != dtype
                   and not (given is not v and type(v._data) is float)]


class PromotionWarning(UserWarning):
    """A float32 graph was promoted to float64 by a float64 constant."""


def warn_if_promoted(op, scope: str, values, positions, dtype) -> None:
    """A ``PromotionWarning`` where a float64 constant (an ``np.eye(3)``, a float64 ``h0``) makes float32
    data that needs a gradient float64, and so everything computed from it; blamed on the caller's line,
    so Python shows it once per place in the code. A float64 model fed float32 inputs is its own choice:
    no warning."""
    if dtype != np.float64 or not any(values[k].requires_grad and np.result_type(values[k]._data) == np.float32
                                      for k in positions):
        return
    constants = [np.shape(v._data) for k, v in enumerate(values) if k not in positions and v.op is None
                 and not v.requires_grad and np.result_type(v._data) == np.float64]
    if constants:
        where = op.name + (f" in {scope}" if scope else "")
        warnings.warn(f"{where}: a float64 constant of shape {' and '.join(map(str, constants))} met float32 and "
                      "made the result float64, and so everything computed from it (PyTorch's type rules). Give "
                      "the constant, or the array it was computed from, dtype=np.float32: np.eye(3) and "
                      "np.zeros(3) are float64 unless told", PromotionWarning, stacklevel=_outside_the_library())


_LIBRARY = str(Path(__file__).resolve().parent)


def _outside_the_library() -> int:
    """The stacklevel of the first caller outside tinygrad_rnn (a warning about the user's line)."""
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY):
        frame, level = frame.f_back, level + 1
    return level

"""Indices and shapes, read and written: whether an index may pick an entry twice, and how pictures
and error messages write an index or a shape."""

from __future__ import annotations

import numpy as np

__all__ = ["is_basic", "index_label", "shape_label"]


_BASIC_PARTS = (int, np.integer, slice, type(None), type(Ellipsis))


def is_basic(index) -> bool:
    """Integers, slices, None and ... pick each entry at most once; integer arrays may repeat one."""
    if type(index) is not tuple:
        return isinstance(index, _BASIC_PARTS)
    return all(isinstance(part, _BASIC_PARTS) for part in index)


def index_label(index) -> str:
    """An index as a reader would write it: ``[..., 3:6]``, ``[2]``; an integer array by its shape,
    ``[int array (4, 1)]``, never numpy's repr."""
    parts = index if isinstance(index, tuple) else (index,)
    return "[" + ", ".join(_index_part(p) for p in parts) + "]"


def _index_part(part) -> str:
    if part is Ellipsis:
        return "..."
    if part is None:
        return "None"
    if isinstance(part, slice):
        text = f"{'' if part.start is None else part.start}:{'' if part.stop is None else part.stop}"
        return text + (f":{part.step}" if part.step is not None else "")
    if isinstance(part, (np.ndarray, list)):
        array = np.asarray(part)
        kind = "bool mask" if array.dtype == bool else "int array"
        return f"{kind} {array.shape}"
    return str(part)


def shape_label(shape: tuple) -> str:
    """A shape as pictures write it: ``3×4``."""
    return "×".join(str(n) for n in shape)

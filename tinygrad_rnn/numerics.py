"""Numbers that stay fast and in their dtype: subnormal gradients, and float32 graphs promoted to float64.

**Subnormal numbers** lie between 0 and the smallest normal number of their type (1.2e-38 in float32,
2.2e-308 in float64). A vanishing gradient passes through them on its way to 0, and most CPUs compute
on them many times slower than on normal numbers (each operation takes a slow path in microcode):
training slows down exactly when the gradient has vanished.

- ``subnormal_fraction(arrays)`` says how many entries are subnormal; the Monitor says it once.
- ``set_flush_denormal(True)`` is PyTorch's ``torch.set_flush_denormal``: it sets the CPU's
  flush-to-zero and denormals-are-zero bits (x86-64's MXCSR; aarch64's FPCR.FZ) through the C
  library's ``fesetenv``, for the calling thread only, and returns whether it could (numpy offers no
  such switch). BLAS threads started before the call keep their own mode; with one BLAS thread (the
  command's default) the matrix products run in the calling thread and are flushed too.
- ``flush_subnormal`` is the portable way: a gradient hook that zeroes every entry with |g| below the
  smallest normal number. It is not a CPU mode: the ops between hooks still meet subnormals. Put it
  where the gradient crosses time, ``RNN(cell, hidden_hook=flush_subnormal)``, and the chain of
  steps carries none.

**Promotion**: PyTorch's type rules (``dtypes.meeting_type``) let a float64 array meeting a float32 one
make the result float64, so a single ``np.eye(3)`` constant in a float32 cell turns the rest of the
graph into float64 (twice the memory, slower). The op that does it warns (``dtypes.warn_if_promoted``:
a ``PromotionWarning`` once per line of the caller's code, where a float64 constant meets float32 data
that needs a gradient); ``promotions(output)`` finds every such op in a recorded graph afterwards, and
``warn_promotions`` warns of the first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import sys
import warnings
from dataclasses import dataclass

import numpy as np

from tinygrad_rnn.dtypes import PromotionWarning
from tinygrad_rnn.graph import walk
from tinygrad_rnn.ops import raw
from tinygrad_rnn.recurrence import time_step
from tinygrad_rnn.value import Value

__all__ = ["subnormal_fraction", "set_flush_denormal", "flush_subnormal", "Promotion", "promotions",
           "warn_promotions", "PromotionWarning", "SubnormalWarning"]


class SubnormalWarning(UserWarning):
    """Gradients hold subnormal numbers (slow arithmetic on most CPUs)."""


# ---- subnormal numbers -------------------------------------------------------------------------


def _data(x):
    """The numbers behind an array, a Value (its data) or a Python float, as an array."""
    return np.asarray(raw(x))


def subnormal_fraction(arrays) -> float:
    """The fraction of all entries of ``arrays`` (arrays, Values or numbers; one or a sequence) that
    are subnormal: 0 < |x| < the smallest normal number of their own float type. 0.0 for no entries."""
    items = [arrays] if isinstance(arrays, (np.ndarray, Value, float, np.floating)) else list(arrays)
    count = total = 0
    for item in items:
        data = _data(item)
        if data.dtype.kind != "f":
            continue
        size = np.abs(data)
        count += int(np.count_nonzero((size < np.finfo(data.dtype).tiny) & (size > 0)))
        total += data.size
    return count / total if total else 0.0


def flush_subnormal(grad):
    """A gradient hook: ``grad`` with every subnormal entry (|g| below the smallest normal number of its
    type) replaced by 0, of the same shape and dtype; ``grad`` itself when it holds none.

    ``value.register_hook(flush_subnormal)``, or ``RNN(cell, hidden_hook=flush_subnormal)`` for every
    hidden state's gradient. Under ``create_graph=True`` the replacement is recorded (a ``where``)."""
    data = _data(grad)
    small = np.abs(data) < np.finfo(data.dtype if data.dtype.kind == "f" else np.float64).tiny
    if not np.any(small & (data != 0)):
        return grad
    if isinstance(grad, Value):
        from tinygrad_rnn.functional import where  # (built on Value, as this hook is)

        return where(small, 0.0, grad)
    if isinstance(grad, float):
        return 0.0
    return np.where(small, np.zeros((), data.dtype), data)


# The C library's floating-point environment, as fegetenv fills it: where the flush bits live.
_FLUSH_BITS = {  # machine: (index of the 32-bit word holding the control register, bits)
    "x86_64": (7, 0x8040),  # glibc's fenv_t ends with MXCSR; FTZ (bit 15) and DAZ (bit 6), as PyTorch sets
    "AMD64": (7, 0x8040),
    "aarch64": (0, 1 << 24),  # glibc's fenv_t starts with FPCR; FZ (bit 24)
    "arm64": (0, 1 << 24),
}


def _libm():
    if not sys.platform.startswith("linux") or platform.machine() not in _FLUSH_BITS:
        return None
    name = ctypes.util.find_library("m")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def _flushes() -> bool:
    """Whether this thread's arithmetic flushes subnormal numbers now (tried, not read from a register)."""
    tiny = np.finfo(np.float64).tiny
    return bool(np.array([tiny / 4]) * 1.0 == 0.0)


def set_flush_denormal(mode: bool) -> bool:
    """Flush subnormal numbers to zero in this thread's floating-point arithmetic (``mode=True``) or
    stop (``False``), as ``torch.set_flush_denormal``: True if the platform allows it and it is set.

    Supported where the C library's ``fesetenv`` reaches the CPU's control register: Linux (glibc) on
    x86-64 (MXCSR's FTZ and DAZ bits, PyTorch's choice) and on aarch64 (FPCR.FZ). Elsewhere it changes
    nothing and returns False. The mode belongs to the calling thread; BLAS worker threads already
    running keep theirs. The result is checked by computing, not assumed: a platform that does not
    honour it gets its old mode back and False.
    """
    libm = _libm()
    if libm is None:
        return False
    word, bits = _FLUSH_BITS[platform.machine()]
    environment = (ctypes.c_uint32 * 16)()  # larger than any fenv_t it may be
    if libm.fegetenv(environment) != 0:
        return False
    before = environment[word]
    environment[word] = before | bits if mode else before & ~bits
    if libm.fesetenv(environment) != 0:
        return False
    if _flushes() != bool(mode):
        environment[word] = before
        libm.fesetenv(environment)
        return False
    return True


# ---- float64 promotion -------------------------------------------------------------------------


@dataclass(frozen=True)
class Promotion:
    """Where a float32 Value met a float64 operand: the op (``op``, its node ``node``), the time step
    (None outside an unroll) and the float64 operands' shapes; ``constant`` when they are all
    constants (arrays such as np.eye(3), which are float64 unless told otherwise)."""

    op: str
    node: Value
    time_step: int | None
    shapes: tuple
    constant: bool

    def __str__(self) -> str:
        where = f"{self.op}" + (f" at time step {self.time_step}" if self.time_step is not None else "")
        what = "a float64 constant" if self.constant else "a float64 Value"
        shapes = " and ".join(str(shape) for shape in self.shapes)
        return (f"{where}: {what} of shape {shapes} met float32 and made the result float64, and so everything "
                "computed from it (PyTorch's type rules). Give the constant, or the array it was computed from, "
                "dtype=np.float32: np.eye(3) and np.zeros(3) are float64 unless told")


def promotions(output) -> list[Promotion]:
    """Every op in the graph behind ``output`` (a Value or several) where a float32 input was cast to
    float64 to meet a float64 operand, parents first."""
    found = []
    for node in walk(output).nodes:
        parents = node.parents
        cast = [p for p in parents if _promoted_from_float32(p)]
        if not cast:
            continue
        others = [p for p in parents if not _promoted_from_float32(p) and p.dtype == np.float64]
        step = time_step(node)
        found.append(Promotion(node.op.name, node, None if step is None else step.t, tuple(p.shape for p in others),
                               all(p.op is None and not p.requires_grad for p in others)))
    return found


def _promoted_from_float32(node: Value) -> bool:
    op = node.op
    return op is not None and op.name == "cast" and op.dtype == np.float64 and node.parents[0].dtype == np.float32


def warn_promotions(output, where: str = "", stacklevel: int = 2) -> list[Promotion]:
    """``promotions(output)``, and a ``PromotionWarning`` naming the first (Python shows a warning once
    per place in the code that caused it). ``where`` prefixes the message ("LSTMCell")."""
    found = promotions(output)
    if found:
        more = f" ({len(found) - 1} more such ops)" if len(found) > 1 else ""
        prefix = f"{where} " if where else ""
        warnings.warn(f"{prefix}{found[0]}{more}", PromotionWarning, stacklevel=stacklevel + 1)
    return found

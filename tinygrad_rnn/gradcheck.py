"""gradcheck: analytic gradients against central finite differences, in float64."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tinygrad_rnn.functional import grad
from tinygrad_rnn.value import Value

__all__ = ["gradcheck", "GradcheckError", "numerical_jacobian"]


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with the finite-difference one."""


def _output_data(fn: Callable, inputs: Sequence[Value]) -> np.ndarray:
    out = fn(*inputs)
    return np.asarray(out.data if isinstance(out, Value) else out, dtype=np.float64)


def numerical_jacobian(fn: Callable, inputs: Sequence[Value], k: int, eps: float = 1e-6) -> np.ndarray:
    """d fn / d inputs[k] by central differences: (f(x + eps e_j) - f(x - eps e_j)) / 2 eps,
    one column per element j; rows are the output's elements."""
    x = inputs[k]
    original = x.data
    base = np.array(original, dtype=np.float64)
    columns = []
    for j in range(base.size):
        values = []
        for step in (eps, -eps):
            shifted = base.copy()
            shifted.flat[j] += step
            x.data = shifted if base.ndim else float(shifted)
            values.append(_output_data(fn, inputs).ravel())
        columns.append((values[0] - values[1]) / (2 * eps))
    x.data = original
    return np.stack(columns, axis=1) if columns else np.zeros((0, 0))


def gradcheck(fn: Callable, inputs: Sequence[Value], eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3) -> bool:
    """Check every input's analytic Jacobian (one backward pass per output element) against central
    differences. Returns True, or raises GradcheckError naming the input, the worst element and
    both values."""
    inputs = list(inputs)
    for k, x in enumerate(inputs):
        if not isinstance(x, Value) or np.result_type(x.data) != np.float64:
            raise TypeError(f"gradcheck: input {k} must be a float64 Value, got {x!r}")
    out = fn(*inputs)
    if not isinstance(out, Value):
        raise TypeError(f"gradcheck: fn must return a Value, got {type(out).__name__}")
    rows = []
    for i in range(out.size):
        seed = np.zeros(out.shape)
        seed.flat[i] = 1.0
        rows.append([np.ravel(g) for g in grad(out, inputs, seed if out.shape else 1.0)])
    for k, x in enumerate(inputs):
        analytic = np.array([row[k] for row in rows]).reshape(out.size, x.size)
        numeric = numerical_jacobian(fn, inputs, k, eps)
        error = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        if error.size and error.max() > 0:
            i, j = np.unravel_index(np.argmax(error), error.shape)
            where = tuple(int(n) for n in np.unravel_index(j, x.shape))
            output_at = tuple(int(n) for n in np.unravel_index(i, out.shape))
            label = f"input {k}" + (f" ({x.name!r})" if x.name else "") + f" of shape {x.shape}"
            raise GradcheckError(
                f"gradcheck: {label}, element {where}, output element {output_at}: "
                f"analytic {analytic[i, j]:.10g} vs numeric {numeric[i, j]:.10g} "
                f"(atol={atol}, rtol={rtol})"
            )
    return True

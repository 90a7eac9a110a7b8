"""Diagnostics of backpropagation through time.

- ``steps.py``: per-step Jacobians, gradient norms, clip events and a one-word verdict.
- ``nonfinite.py``: where a NaN or an infinity was born.
- ``plots.py``: plots of the per-step numbers (the ``plot`` extra).
"""

from tinygrad_rnn.diagnostics.nonfinite import NonfiniteOrigin, NonfiniteReport, trace_nonfinite
from tinygrad_rnn.diagnostics.plots import plot_gradient_norms
from tinygrad_rnn.diagnostics.steps import clip_events, gradient_norms, step_jacobian, step_jacobian_norms, verdict

__all__ = [
    "step_jacobian", "step_jacobian_norms", "gradient_norms", "clip_events", "trace_nonfinite",
    "NonfiniteOrigin", "NonfiniteReport", "verdict", "plot_gradient_norms",
]

from tinygrad_rnn.diagnostics.monitor import Monitor  # noqa: E402

__all__ += ["Monitor"]

"""Diagnostics of backpropagation through time.

- ``steps.py``: one row per state of an unrolled recurrence: the gradient that reached it, what the
  step before it did to that gradient (gain) and could have done (bound, by an SVD, or estimated from
  below by power iteration), clips, cuts; the verdict. The per-step parts come from
  ``tinygrad_rnn.recurrence.bptt``.
- ``split.py``: the gradient split by loss (``lags``: how far each loss reaches back, ``reach``), by
  step (``contributions``: what each step gives a weight), and by unit or batch row of the state
  (``steps(loss, states, by="unit")``, a ``StepSplit``: dead units show).
- ``nonfinite.py``: where a NaN or an infinity was born.
- ``reuse.py``: ``with reuse_numbers():``, the numbers of ``steps`` and ``lags`` computed once for
  several views of one run.
- ``plots.py``: plots of the per-step numbers (the ``plot`` extra).
"""

from tinygrad_rnn.diagnostics.nonfinite import NonfiniteOrigin, NonfiniteReport, trace_nonfinite
from tinygrad_rnn.diagnostics.plots import plot_gradient_norms, plot_steps
from tinygrad_rnn.diagnostics.reuse import reuse_numbers
from tinygrad_rnn.diagnostics.split import SPLITS, StepSplit, contributions, lags, reach, reach_counts
from tinygrad_rnn.diagnostics.steps import (
    CONTRIBUTION_LIMIT,
    EXPLODING,
    FROZEN,
    POWER_ITERATIONS,
    VANISHING,
    StepRow,
    bound_text,
    clip_events,
    gradient_factor,
    gradient_norms,
    reads,
    step_jacobian,
    step_jacobian_norms,
    steps,
    verdict,
    weight_share,
)

__all__ = [
    "steps", "StepRow", "verdict", "gradient_factor", "reads", "weight_share", "VANISHING", "EXPLODING", "FROZEN",
    "CONTRIBUTION_LIMIT", "POWER_ITERATIONS", "bound_text",
    "lags", "reach", "reach_counts", "contributions", "StepSplit", "SPLITS", "step_jacobian", "step_jacobian_norms",
    "gradient_norms", "clip_events",
    "trace_nonfinite", "NonfiniteOrigin", "NonfiniteReport", "plot_steps", "plot_gradient_norms", "reuse_numbers",
]

from tinygrad_rnn.diagnostics.monitor import Monitor  # noqa: E402

__all__ += ["Monitor"]

"""A training monitor: the numbers that tell a vanishing gradient from an exploding one while a
model trains, kept per iteration and plotted on one page.

    monitor = Monitor(model)
    for batch in data:
        loss = ...
        optimizer.zero_grad()
        loss.backward()
        monitor.after_backward(loss, states)   # states [h_0, ..., h_T] optional
        optimizer.step()
        monitor.after_step()
    monitor.plot("training.png")

A replayed step (``tinygrad_rnn.replay``) returns its loss as a float and fills the parameters'
``.grad``: pass the float. Iterations are numbered as PyTorch's ``SummaryWriter`` numbers its
``global_step``: ``after_backward(loss, iteration=i)`` records iteration i, and without it the next
after the last recorded (0 first); recording every tenth iteration puts 0, 10, 20 on the plot's axis:

    step = replay(loss_of)                     # loss_of returns (loss, states)
    for i, (x, y) in enumerate(batches):
        optimizer.zero_grad()
        if i % 100 == 0:                       # one eager step, its graph kept: states have gradients
            loss, states = step.eager(x, y)
            monitor.after_backward(loss, states, iteration=i)
        else:
            loss, _ = step(x, y)               # a float and arrays, replayed
            if i % 10 == 0:
                monitor.after_backward(loss, iteration=i)
        optimizer.step()
        if i % 10 == 0:
            monitor.after_step()

A replayed step keeps no graph: the gradient per time step needs the states as Values with their
gradients (an eager step), and a NaN in a replayed step is found (``first_nonfinite``) but not traced
to its op (docs/replay.md, "Pictures of a replayed training loop").

What each problem looks like in these numbers:

- **vanishing across layers**: the update ratio ||update|| / ||parameter|| of the earlier layers
  stays orders of magnitude below the later ones'; the loss flattens early and stays high.
- **vanishing through time**: the update ratios cannot show it, since every step shares the same
  weights and the late steps alone keep their ratios looking healthy (about 1e-3); the heatmap does:
  the gradient per time step fades towards t = 0 (lesson 9 shows an RNN stuck so).
- **exploding**: gradient norms and update ratios jump from iteration to iteration, ratios near or
  above 1 (one step rewrites the weights), and finally the loss or the gradients turn NaN or Inf:
  ``first_nonfinite`` says at which iteration, ``nonfinite_report`` which op made the first one.
- **vanished into subnormal numbers**: ``subnormal_fractions`` grows; arithmetic on subnormal numbers
  is many times slower on most CPUs, so iterations slow down too (``tinygrad_rnn.numerics``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from tinygrad_rnn.clip import grad_norm
from tinygrad_rnn.diagnostics.nonfinite import NonfiniteReport, all_finite, trace_nonfinite
from tinygrad_rnn.diagnostics.plots import plot_monitor
from tinygrad_rnn.diagnostics.steps import delta_norms
from tinygrad_rnn.numerics import SubnormalWarning, subnormal_fraction
from tinygrad_rnn.value import Value

__all__ = ["Monitor"]


def _named_parameters(model) -> dict[str, Value]:
    """name -> Value from a Module, a dict, (name, Value) pairs or plain Values (named by their
    ``name``, else by position), in the order given: the plot reads that order as earliest to latest."""
    if hasattr(model, "named_parameters"):
        pairs = list(model.named_parameters())
    elif isinstance(model, dict):
        pairs = list(model.items())
    elif isinstance(model, Value):
        pairs = [(model.name or "0", model)]
    else:
        items = list(model)
        if all(isinstance(p, tuple) and len(p) == 2 for p in items):
            pairs = items
        else:
            pairs = [((p.name or str(k)) if isinstance(p, Value) else str(k), p) for k, p in enumerate(items)]
    named: dict[str, Value] = {}
    for name, p in pairs:
        if not isinstance(p, Value):
            raise TypeError(f"Monitor: parameter {name!r} is a {type(p).__name__}, not a Value")
        if name in named:
            raise ValueError(f"Monitor: two parameters are named {name!r}; pass a dict with distinct names")
        named[name] = p
    if not named:
        raise ValueError("Monitor: the model has no parameters to watch")
    return named


class Monitor:
    """Watches the parameters of ``model`` (a Module, a dict name -> Value, or a list of Values).

    Kept per recorded iteration (index 0 is the first ``after_backward``):

    - ``iteration_numbers``: which training iteration each is (``after_backward``'s ``iteration``,
      PyTorch's ``global_step``), the plot's x axis;
    - ``losses``: the loss (a float; NaN and Inf kept as they are);
    - ``grad_norms``: name -> list of ||dL/dparameter|| (None where the parameter got no gradient);
    - ``update_ratios``: name -> list of ||theta_after - theta_before|| / ||theta_before||, the size
      of the optimiser's step relative to the weight (None for an iteration with no ``after_step``;
      inf for a parameter of norm 0 that moved). About 1e-3 is the usual rule of thumb for a
      healthy step; far below it a layer is not learning, near 1 a step rewrites the layer;
    - ``step_grad_norms``: list of [||delta_0||, ..., ||delta_T||] when states were given, else None:
      per state s_t the norm of the gradient that reached it from outside its own step (the
      ``grad_norm`` of ``diagnostics.steps``, what the step view shows);
    - ``first_nonfinite``: the number of the first iteration whose loss or parameter gradients held
      NaN or Inf (None while there is none), ``nonfinite_report`` the ``trace_nonfinite`` report of
      that iteration's graph (``nonfinite_op`` the name of the op it blames, ``nonfinite_text`` the
      report as text, written when it was found: an optimiser updating weights in place afterwards
      would change the numbers the live report prints); a replayed iteration has no graph to trace
      (the report None, the text saying so);
    - ``subnormal_fractions``: the fraction of the parameters' and states' gradient entries that are
      subnormal (0 < |g| < the smallest normal number of their type); the first iteration with any
      raises a ``SubnormalWarning`` saying the fraction, once (``first_subnormal``, its number).

    ``state_axis`` names what the states are steps of, for the plot: "time step" (an unrolled RNN's
    [s_0, ..., s_T]) or "layer" (a deep net's layer outputs [a_0, ..., a_L]).
    """

    def __init__(self, model, state_axis: str = "time step"):
        if state_axis not in ("time step", "layer"):
            raise ValueError(f"Monitor: state_axis must be 'time step' or 'layer', got {state_axis!r}")
        self.state_axis = state_axis
        self.parameters = _named_parameters(model)
        self.iteration_numbers: list[int] = []
        self.losses: list[float] = []
        self.grad_norms: dict[str, list] = {name: [] for name in self.parameters}
        self.update_ratios: dict[str, list] = {name: [] for name in self.parameters}
        self.step_grad_norms: list[list | None] = []
        self.first_nonfinite: int | None = None
        self.nonfinite_report: NonfiniteReport | None = None
        self.nonfinite_text: str | None = None
        self.subnormal_fractions: list[float] = []
        self.first_subnormal: int | None = None
        self._before: dict[str, np.ndarray] | None = None

    @property
    def iterations(self) -> int:
        """How many iterations were recorded (``iteration_numbers`` says which)."""
        return len(self.losses)

    @property
    def nonfinite_op(self) -> str | None:
        """The op that made the first NaN or Inf (the forward pass's culprit, else the backward's);
        "leaf" when a parameter or input already held one; None before any."""
        report = self.nonfinite_report
        origin = report and (report.forward or report.backward)
        if not origin:
            return None
        return origin.node.op.name if origin.node.op is not None else "leaf"

    def after_backward(self, loss, states: Sequence | None = None, *, iteration: int | None = None) -> None:
        """Record an iteration: call after the backward pass, before the optimiser's step.

        ``loss``: the one-number Value that was backpropagated, or the float a replayed step returns.
        ``states``: the recurrent states [s_0, ..., s_T] (Values, or tuples such as (h, c)) whose
        gradients to keep per time step; an eager step's, since a replayed one returns arrays without
        gradients. ``iteration``: this iteration's number (PyTorch's ``global_step``), greater than
        the last recorded; by default one past it (0 first)."""
        if isinstance(loss, Value):
            if loss.size != 1:
                raise TypeError(f"Monitor.after_backward: loss must be a one-number Value, got {loss!r}")
            value = loss.item()
        elif type(loss) in (float, int) or isinstance(loss, np.floating) or (
                isinstance(loss, np.ndarray) and loss.size == 1 and loss.dtype.kind == "f"):
            value = float(np.asarray(loss).reshape(()))
        else:
            raise TypeError(f"Monitor.after_backward: loss must be a one-number Value or the float a replayed step "
                            f"returns, got {loss!r}")
        if states is not None and not all(isinstance(s, Value) for state in states
                                          for s in (state if isinstance(state, (tuple, list)) else (state,))):
            raise TypeError("Monitor.after_backward: states must be Values with their gradients (an eager step's); "
                            "a replayed step returns their data as arrays, without gradients. Run that iteration "
                            "with step.eager(...) to keep its graph, or leave states out")
        iteration = self._number(iteration)
        if self._before is not None:  # the last iteration had no optimiser step
            for ratios in self.update_ratios.values():
                ratios.append(None)
        self.iteration_numbers.append(iteration)
        self.losses.append(value)
        finite = math.isfinite(value)
        for name, p in self.parameters.items():
            self.grad_norms[name].append(None if p.grad is None else grad_norm(p.grad))
            finite = finite and (p.grad is None or all_finite(p.grad))
        with np.errstate(all="ignore"):  # a run that has blown up still gets its (non-finite) row
            self.step_grad_norms.append(None if states is None else delta_norms(states))
        self._count_subnormal(iteration, states)
        if not finite and self.first_nonfinite is None:
            self.first_nonfinite = iteration
            if isinstance(loss, Value):
                self.nonfinite_report = trace_nonfinite(loss)
                with np.errstate(all="ignore"):
                    self.nonfinite_text = str(self.nonfinite_report)
            else:
                self.nonfinite_text = (f"iteration {iteration} was replayed: no graph to trace the first NaN or Inf "
                                       "to its op. Run that batch eagerly (step.eager(...), or fn itself) and "
                                       "diagnostics.trace_nonfinite(loss) names it")
        # A copy: optimisers update parameters in place, and the ratio needs the weights before.
        self._before = {name: np.array(p.data, dtype=np.float64) for name, p in self.parameters.items()}

    def _number(self, iteration) -> int:
        """This iteration's number: as given, or one past the last recorded."""
        last = self.iteration_numbers[-1] if self.iteration_numbers else -1
        if iteration is None:
            return last + 1
        if not isinstance(iteration, (int, np.integer)) or isinstance(iteration, bool) or iteration < 0:
            raise TypeError(f"Monitor.after_backward: iteration must be a whole number >= 0, got {iteration!r}")
        if iteration <= last:
            raise ValueError(f"Monitor.after_backward: iteration {iteration} comes after iteration {last}, already "
                             "recorded; iterations are recorded in increasing order")
        return int(iteration)

    def _count_subnormal(self, iteration: int, states: Sequence | None) -> None:
        grads = [p.grad for p in self.parameters.values() if p.grad is not None]
        for state in states or ():
            grads += [s.grad for s in (state if isinstance(state, (tuple, list)) else (state,))
                      if isinstance(s, Value) and s.grad is not None]
        fraction = subnormal_fraction(grads)
        self.subnormal_fractions.append(fraction)
        if fraction and self.first_subnormal is None:
            self.first_subnormal = iteration
            warnings.warn(f"Monitor: at iteration {iteration}, {fraction:.1%} of the gradient entries are subnormal "
                          "numbers (the gradient is vanishing through them), on which most CPUs compute many times "
                          "slower. tinygrad_rnn.numerics.set_flush_denormal(True) flushes them to zero where the "
                          "platform allows, flush_subnormal as a hook anywhere", SubnormalWarning, stacklevel=3)

    def after_step(self) -> None:
        """Record each parameter's update ratio for the iteration of the last ``after_backward``."""
        if self._before is None:
            raise RuntimeError("Monitor.after_step: call after_backward(loss) first, once per optimiser step")
        for name, p in self.parameters.items():
            before = self._before[name]
            with np.errstate(all="ignore"):
                change = grad_norm(np.asarray(p.data, dtype=np.float64) - before)
                size = grad_norm(before)
            if size == 0.0:
                ratio = 0.0 if change == 0.0 else math.inf
            else:
                ratio = change / size
            self.update_ratios[name].append(ratio)
        self._before = None

    def summary(self) -> str:
        """A few plain lines: loss first and last, the median update ratio per parameter, and where
        the first NaN or Inf appeared."""
        if not self.losses:
            return "Monitor: no iterations recorded yet"
        numbered = self.iteration_numbers
        counted = f"{self.iterations} iterations" if numbered == list(range(self.iterations)) else (
            f"{self.iterations} iterations recorded, {numbered[0]} to {numbered[-1]}")
        lines = [f"{counted}; loss {self.losses[0]:.4g} -> {self.losses[-1]:.4g}"]
        width = max(len(name) for name in self.parameters)
        for name, ratios in self.update_ratios.items():
            known = [r for r in ratios if r is not None and math.isfinite(r)]
            median = f"{float(np.median(known)):.2e}" if known else "n/a"
            lines.append(f"  {name:<{width}}  median ||update||/||parameter|| {median}")
        if self.first_subnormal is not None:
            lines.append(f"subnormal gradients from iteration {self.first_subnormal}, "
                         f"at most {max(self.subnormal_fractions):.1%} of the entries")
        if self.first_nonfinite is None:
            lines.append("loss and gradients stayed finite")
        elif self.nonfinite_report is None:
            lines.append(f"first NaN/Inf at iteration {self.first_nonfinite}, a replayed one (no graph to name its op)")
        else:
            lines.append(f"first NaN/Inf at iteration {self.first_nonfinite}, made by op {self.nonfinite_op!r}")
        return "\n".join(lines)

    def plot(self, path=None, title: str | None = None):
        """Loss, update ratios per parameter and the gradient norm per time step on one page (a
        matplotlib Figure, saved to ``path`` if given; .png, .svg or .pdf by suffix). Needs the
        ``plot`` extra (matplotlib). The x axis is the iterations' numbers (``iteration_numbers``);
        the heatmap has a row per iteration that was given states, labelled by its number."""
        return plot_monitor(self, path, title)

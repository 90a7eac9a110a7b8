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

What each problem looks like in these numbers:

- **vanishing across layers**: the update ratio ||update|| / ||parameter|| of the earlier layers
  stays orders of magnitude below the later ones'; the loss flattens early and stays high.
- **vanishing through time**: the update ratios cannot show it, since every step shares the same
  weights and the late steps alone keep their ratios looking healthy (about 1e-3); the heatmap does:
  the gradient per time step fades towards t = 0 (lesson 9 shows an RNN stuck so).
- **exploding**: gradient norms and update ratios jump from iteration to iteration, ratios near or
  above 1 (one step rewrites the weights), and finally the loss or the gradients turn NaN or Inf:
  ``first_nonfinite`` says at which iteration, ``nonfinite_report`` which op made the first one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tinygrad_rnn.clip import grad_norm
from tinygrad_rnn.diagnostics.nonfinite import NonfiniteReport, all_finite, trace_nonfinite
from tinygrad_rnn.diagnostics.steps import delta_norms
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

    Kept per iteration (index 0 is the first ``after_backward``):

    - ``losses``: the loss (a float; NaN and Inf kept as they are);
    - ``grad_norms``: name -> list of ||dL/dparameter|| (None where the parameter got no gradient);
    - ``update_ratios``: name -> list of ||theta_after - theta_before|| / ||theta_before||, the size
      of the optimiser's step relative to the weight (None for an iteration with no ``after_step``;
      inf for a parameter of norm 0 that moved). About 1e-3 is the usual rule of thumb for a
      healthy step; far below it a layer is not learning, near 1 a step rewrites the layer;
    - ``step_grad_norms``: list of [||delta_0||, ..., ||delta_T||] when states were given, else None:
      per state s_t the norm of the gradient that reached it from outside its own step (the
      ``grad_norm`` of ``diagnostics.steps``, what the step view shows);
    - ``first_nonfinite``: the first iteration whose loss or parameter gradients held NaN or Inf
      (None while there is none), ``nonfinite_report`` the ``trace_nonfinite`` report of that
      iteration's graph (``nonfinite_op`` the name of the op it blames, ``nonfinite_text`` the
      report as text, written when it was found: an optimiser updating weights in place afterwards
      would change the numbers the live report prints).

    ``state_axis`` names what the states are steps of, for the plot: "time step" (an unrolled RNN's
    [s_0, ..., s_T]) or "layer" (a deep net's layer outputs [a_0, ..., a_L]).
    """

    def __init__(self, model, state_axis: str = "time step"):
        if state_axis not in ("time step", "layer"):
            raise ValueError(f"Monitor: state_axis must be 'time step' or 'layer', got {state_axis!r}")
        self.state_axis = state_axis
        self.parameters = _named_parameters(model)
        self.losses: list[float] = []
        self.grad_norms: dict[str, list] = {name: [] for name in self.parameters}
        self.update_ratios: dict[str, list] = {name: [] for name in self.parameters}
        self.step_grad_norms: list[list | None] = []
        self.first_nonfinite: int | None = None
        self.nonfinite_report: NonfiniteReport | None = None
        self.nonfinite_text: str | None = None
        self._before: dict[str, np.ndarray] | None = None

    @property
    def iterations(self) -> int:
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

    def after_backward(self, loss: Value, states: Sequence | None = None) -> None:
        """Record iteration ``self.iterations``: call after ``loss.backward()``, before the
        optimiser's step. ``states``: the recurrent states [s_0, ..., s_T] (Values, or tuples such
        as (h, c)) whose gradients to keep per time step."""
        if not isinstance(loss, Value) or loss.size != 1:
            raise TypeError(f"Monitor.after_backward: loss must be a one-number Value, got {loss!r}")
        if self._before is not None:  # the last iteration had no optimiser step
            for ratios in self.update_ratios.values():
                ratios.append(None)
        iteration = self.iterations
        self.losses.append(loss.item())
        finite = math.isfinite(self.losses[-1])
        for name, p in self.parameters.items():
            self.grad_norms[name].append(None if p.grad is None else grad_norm(p.grad))
            finite = finite and (p.grad is None or all_finite(p.grad))
        with np.errstate(all="ignore"):  # a run that has blown up still gets its (non-finite) row
            self.step_grad_norms.append(None if states is None else delta_norms(states))
        if not finite and self.first_nonfinite is None:
            self.first_nonfinite = iteration
            self.nonfinite_report = trace_nonfinite(loss)
            with np.errstate(all="ignore"):
                self.nonfinite_text = str(self.nonfinite_report)
        # A copy: optimisers update parameters in place, and the ratio needs the weights before.
        self._before = {name: np.array(p.data, dtype=np.float64) for name, p in self.parameters.items()}

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
        lines = [f"{self.iterations} iterations; loss {self.losses[0]:.4g} -> {self.losses[-1]:.4g}"]
        width = max(len(name) for name in self.parameters)
        for name, ratios in self.update_ratios.items():
            known = [r for r in ratios if r is not None and math.isfinite(r)]
            median = f"{float(np.median(known)):.2e}" if known else "n/a"
            lines.append(f"  {name:<{width}}  median ||update||/||parameter|| {median}")
        if self.first_nonfinite is None:
            lines.append("loss and gradients stayed finite")
        else:
            lines.append(f"first NaN/Inf at iteration {self.first_nonfinite}, made by op {self.nonfinite_op!r}")
        return "\n".join(lines)

    def plot(self, path=None, title: str | None = None):
        """Loss, update ratios per parameter and the gradient norm per time step on one page (a
        matplotlib Figure, saved to ``path`` if given; .png, .svg or .pdf by suffix). Needs the
        ``plot`` extra (matplotlib)."""
        return _plot(self, path, title)


# ---- the picture (matplotlib, imported only here) ------------------------------------------------

LEGEND_LIMIT = 10  # more parameters than this get a colour bar instead of a legend
HEALTHY_RATIO = 1e-3


def _import_figure():
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "Monitor.plot needs matplotlib, the 'plot' extra: pip install 'tinygrad-rnn[plot]' "
            "(or pip install matplotlib); the numbers are in monitor.losses, .update_ratios and "
            ".step_grad_norms without it"
        ) from error
    return Figure


def _positive_series(values: Sequence) -> tuple[list[int], list[float]]:
    """(iterations, values) where the value is a finite positive number: what a log axis can show."""
    pairs = [(i, v) for i, v in enumerate(values) if v is not None and math.isfinite(v) and v > 0]
    return [i for i, _ in pairs], [v for _, v in pairs]


def _widen_if_flat(axes, values: list) -> None:
    """A log axis over a single value (one iteration) gets a decade either side instead of a warning."""
    if values and min(values) == max(values):
        axes.set_ylim(values[0] / 10, values[0] * 10)


def _plot(monitor: Monitor, path, title):
    Figure = _import_figure()
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(8.5, 10), layout="constrained")
    loss_axes, ratio_axes, heat_axes = figure.subplots(3, 1, height_ratios=(1, 1.2, 1.2))
    figure.suptitle(title or "training monitor")

    # The loss, with the first non-finite iteration marked.
    iterations, losses = _positive_series(monitor.losses)
    loss_axes.semilogy(iterations, losses, ".-" if len(losses) < 30 else "-", color="black", lw=1.2, label="loss")
    _widen_if_flat(loss_axes, losses)
    loss_axes.set_xlabel("iteration")
    loss_axes.set_ylabel("loss (log scale)")
    loss_axes.set_title("loss per iteration")
    if monitor.first_nonfinite is not None:
        for axes in (loss_axes, ratio_axes):
            axes.axvline(monitor.first_nonfinite, color="crimson", ls="--", lw=1.2,
                         label=f"first NaN/Inf: iteration {monitor.first_nonfinite}, op {monitor.nonfinite_op!r}")
        loss_axes.legend(loc="best", fontsize=8)
    loss_axes.grid(True, which="both", alpha=0.3)

    # Update ratios, coloured by the parameter's position: earliest dark, latest light.
    names = list(monitor.parameters)
    colours = colormaps["viridis"]
    norm = Normalize(0, max(len(names) - 1, 1))
    for k, name in enumerate(names):
        xs, ys = _positive_series(monitor.update_ratios[name])
        ratio_axes.semilogy(xs, ys, color=colours(norm(k)) if len(names) > 1 else "tab:blue", lw=1.1, label=name)
    ratios = [r for name in names for r in _positive_series(monitor.update_ratios[name])[1]]
    _widen_if_flat(ratio_axes, ratios or [HEALTHY_RATIO])
    ratio_axes.axhline(HEALTHY_RATIO, color="grey", ls=":", lw=1, label="1e-3, the usual healthy size")
    ratio_axes.set_xlabel("iteration")
    ratio_axes.set_ylabel("||update|| / ||parameter||")
    ratio_axes.set_title("update ratio per parameter (colour: position in the model, earliest dark, latest light)")
    ratio_axes.grid(True, which="both", alpha=0.3)
    if len(names) <= LEGEND_LIMIT:
        ratio_axes.legend(loc="best", fontsize=7, ncols=2)
    else:
        bar = figure.colorbar(ScalarMappable(norm, colours), ax=ratio_axes, pad=0.01)
        bar.set_ticks([0, len(names) - 1], labels=[names[0], names[-1]], fontsize=7)
        bar.set_label("parameter, earliest to latest", fontsize=8)

    # Gradient norm per time step and iteration.
    rows = monitor.step_grad_norms
    length = max((len(r) for r in rows if r is not None), default=0)
    symbol = "s_t" if monitor.state_axis == "time step" else "a_l"
    heat_axes.set_title(f"||dL/d{symbol}||, the gradient reaching each {monitor.state_axis}, per iteration")
    if length == 0:
        heat_axes.text(0.5, 0.5, "no states given to after_backward(loss, states)", ha="center", va="center",
                       transform=heat_axes.transAxes, color="grey")
        heat_axes.set_axis_off()
    else:
        grid = np.full((len(rows), length), np.nan)
        for i, row in enumerate(rows):
            for t, value in enumerate(row or []):
                if value is not None and math.isfinite(value) and value > 0:
                    grid[i, t] = math.log10(value)
        image = heat_axes.imshow(grid, aspect="auto", origin="lower", cmap="magma", interpolation="nearest",
                                 extent=(-0.5, length - 0.5, -0.5, len(rows) - 0.5))
        heat_axes.set_xlabel("time step t (s_0 is the initial state)" if monitor.state_axis == "time step"
                             else "layer l (a_0 is the input)")
        heat_axes.set_ylabel("iteration")
        # Each row is one iteration and each column one state: label only whole numbers, so the axis
        # ends at the last iteration's row instead of at a tick such as 2.5 past it.
        for axis in (heat_axes.xaxis, heat_axes.yaxis):
            axis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10], min_n_ticks=1))
        heat_axes.grid(False)
        bar = figure.colorbar(image, ax=heat_axes, pad=0.01)
        bar.set_label(f"log10 ||dL/d{symbol}|| (blank: zero, none or NaN/Inf)", fontsize=8)
    if path is not None:
        figure.savefig(path, dpi=110)
    return figure

"""Plots (needs the ``plot`` extra, matplotlib, imported only here): the per-step numbers from
``steps``, and the training ``Monitor``'s page."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from functools import partial

import numpy as np

from tinygrad_rnn.diagnostics.steps import StepRow, verdict

__all__ = ["plot_steps", "plot_gradient_norms", "plot_monitor"]


def _figure_class(missing: str = "plotting needs matplotlib: pip install matplotlib"):
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(missing) from error
    return Figure


def _plain(text) -> str:
    """``text`` drawn as written: matplotlib reads a pair of ``$`` as mathematics (and fails on a lone
    one in some places), and cannot encode a lone surrogate; so each ``$`` is escaped, and a lone
    surrogate becomes U+FFFD, the replacement character."""
    text = str(text).encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text.replace("$", r"\$")


def plot_steps(rows: Sequence[StepRow], path: str | None = None, title: str | None = None, axis: str = "time"):
    """Two panels against t (a matplotlib Figure; saved to ``path`` if given), both on log scales:
    above, ||delta_t||, the gradient that reached state t; below, each step's gain (what it did to
    that gradient) and bound (the most it could do), with the line at 1 where a step neither shrinks
    nor grows it. ``rows`` come from ``diagnostics.steps``; ``axis="layer"`` labels the x axis by layer.
    """
    figure = _figure_class()(figsize=(7, 5))
    top, bottom = figure.subplots(2, 1, sharex=True)
    held = [r for r in rows if r.grad_norm]
    top.semilogy([r.t for r in held], [r.grad_norm for r in held], marker=".", color="#5a3d8a")
    top.set_ylabel("‖δ_t‖, gradient reaching t")
    crossed = [r for r in rows if r.gain]
    bottom.semilogy([r.t for r in crossed], [r.gain for r in crossed], marker=".", label="gain (what the step did)")
    bounded = [r for r in rows if r.bound]
    bottom.semilogy([r.t for r in bounded], [r.bound for r in bounded], linestyle="--", color="#9a9a9a",
                    label="bound ‖J_t‖₂ (the most it could do)")
    bottom.axhline(1.0, color="#303030", linewidth=0.8)
    bottom.set_ylabel("per step")
    bottom.set_xlabel("layer l" if axis == "layer" else "time step t")
    bottom.legend(fontsize=8)
    through = "the layers" if axis == "layer" else "time"
    top.set_title(_plain(title) if title else f"the gradient through {through} ({verdict(rows)})")
    for axes in (top, bottom):
        axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    if path is not None:
        figure.savefig(path)
    return figure


def plot_gradient_norms(rows: Sequence, path: str | None = None, title: str | None = None):
    """||delta_t|| against t on a log scale (a matplotlib Figure; saved to ``path`` if given).

    ``rows`` from ``diagnostics.steps`` (a list of norms, the older form, still works but is deprecated).
    """
    rows = list(rows)
    judged = not rows or isinstance(rows[0], StepRow)
    if not judged:
        warnings.warn("plot_gradient_norms: pass the rows of diagnostics.steps(loss, states); a list of norms "
                      "is deprecated", DeprecationWarning, stacklevel=2)
    norms = [r.grad_norm if isinstance(r, StepRow) else r for r in rows]
    figure = _figure_class()(figsize=(6, 3.5))
    axes = figure.add_subplot()
    steps = [t for t, n in enumerate(norms) if n is not None and n > 0]
    axes.semilogy(steps, [norms[t] for t in steps], marker=".")
    axes.set_xlabel("time step t")
    axes.set_ylabel("‖δ_t‖, gradient reaching t")
    judgement = f" ({verdict(rows)})" if judged else ""
    axes.set_title(_plain(title) if title else f"gradient norms through time{judgement}")
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    if path is not None:
        figure.savefig(path)
    return figure


LEGEND_LIMIT = 10  # more parameters than this get a colour bar instead of a legend
HEALTHY_RATIO = 1e-3


def _positive_series(values: Sequence, numbers: Sequence[int]) -> tuple[list[int], list[float]]:
    """(iteration numbers, values) where the value is a finite positive number: what a log axis can
    show. ``numbers[k]`` is the number of the k-th recorded iteration."""
    pairs = [(numbers[k], v) for k, v in enumerate(values) if v is not None and math.isfinite(v) and v > 0]
    return [i for i, _ in pairs], [v for _, v in pairs]


def _widen_if_flat(axes, values: list) -> None:
    """A log axis over a single value (one iteration) gets a decade either side instead of a warning."""
    if values and min(values) == max(values):
        axes.set_ylim(values[0] / 10, values[0] * 10)


def _row_label(labels: list[int], row: float, _position) -> str:
    """The heatmap's row ``row`` labelled by its iteration's number (no label between rows)."""
    k = round(row)
    return str(labels[k]) if abs(row - k) < 1e-6 and 0 <= k < len(labels) else ""


def plot_monitor(monitor, path=None, title: str | None = None):
    """``Monitor.plot``: the loss, the update ratio per parameter, and the gradient norm per time step
    and iteration as a heatmap, on one page (a matplotlib Figure, saved to ``path`` if given).

    The x axes are the iterations' numbers (``monitor.iteration_numbers``: 0, 10, 20, ... when a loop
    records every tenth); the heatmap has a row for each iteration given states, labelled by its
    number (an eager step every N iterations would otherwise be a thin line among empty rows)."""
    Figure = _figure_class("Monitor.plot needs matplotlib, the 'plot' extra: pip install 'tinygrad-rnn[plot]' "
                           "(or pip install matplotlib); the numbers are in monitor.losses, .update_ratios and "
                           ".step_grad_norms without it")
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    figure = Figure(figsize=(8.5, 10), layout="constrained")
    loss_axes, ratio_axes, heat_axes = figure.subplots(3, 1, height_ratios=(1, 1.2, 1.2))
    figure.suptitle(_plain(title) if title else "training monitor")

    numbers = list(getattr(monitor, "iteration_numbers", None) or range(len(monitor.losses)))
    # The loss, with the first non-finite iteration (a number already) marked.
    iterations, losses = _positive_series(monitor.losses, numbers)
    loss_axes.semilogy(iterations, losses, ".-" if len(losses) < 30 else "-", color="black", lw=1.2, label="loss")
    _widen_if_flat(loss_axes, losses)
    loss_axes.set_xlabel("iteration")
    loss_axes.set_ylabel("loss (log scale)")
    loss_axes.set_title("loss per iteration")
    if monitor.first_nonfinite is not None:
        for axes in (loss_axes, ratio_axes):
            axes.axvline(monitor.first_nonfinite, color="crimson", ls="--", lw=1.2,
                         label=_plain(f"first NaN/Inf: iteration {monitor.first_nonfinite}, "
                                      f"op {monitor.nonfinite_op!r}"))
        loss_axes.legend(loc="best", fontsize=8)
    loss_axes.grid(True, which="both", alpha=0.3)

    # Update ratios, coloured by the parameter's position: earliest dark, latest light.
    names = list(monitor.parameters)
    colours = colormaps["viridis"]
    norm = Normalize(0, max(len(names) - 1, 1))
    for k, name in enumerate(names):
        xs, ys = _positive_series(monitor.update_ratios[name], numbers)
        colour = colours(norm(k)) if len(names) > 1 else "tab:blue"
        ratio_axes.semilogy(xs, ys, color=colour, lw=1.1, label=_plain(name))
    ratios = [r for name in names for r in _positive_series(monitor.update_ratios[name], numbers)[1]]
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
        bar.set_ticks([0, len(names) - 1], labels=[_plain(names[0]), _plain(names[-1])], fontsize=7)
        bar.set_label("parameter, earliest to latest", fontsize=8)

    # Gradient norm per time step and iteration: a row per iteration given states.
    given = [k for k, row in enumerate(monitor.step_grad_norms) if row is not None]
    rows = [monitor.step_grad_norms[k] for k in given]
    length = max((len(r) for r in rows), default=0)
    symbol = "s_t" if monitor.state_axis == "time step" else "a_l"
    heat_axes.set_title(f"||dL/d{symbol}||, the gradient reaching each {monitor.state_axis}, per iteration")
    if length == 0:
        heat_axes.text(0.5, 0.5, "no states given to after_backward(loss, states)", ha="center", va="center",
                       transform=heat_axes.transAxes, color="grey")
        heat_axes.set_axis_off()
    else:
        grid = np.full((len(rows), length), np.nan)
        for i, row in enumerate(rows):
            for t, value in enumerate(row):
                if value is not None and math.isfinite(value) and value > 0:
                    grid[i, t] = math.log10(value)
        image = heat_axes.imshow(grid, aspect="auto", origin="lower", cmap="magma", interpolation="nearest",
                                 extent=(-0.5, length - 0.5, -0.5, len(rows) - 0.5))
        heat_axes.set_xlabel("time step t (s_0 is the initial state)" if monitor.state_axis == "time step"
                             else "layer l (a_0 is the input)")
        heat_axes.set_ylabel("iteration" if len(given) == len(monitor.step_grad_norms)
                             else "iteration (those given states)")
        # Each row is one iteration and each column one state: label only whole numbers, so the axis
        # ends at the last iteration's row instead of at a tick such as 2.5 past it.
        for axis in (heat_axes.xaxis, heat_axes.yaxis):
            axis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10], min_n_ticks=1))
        labels = [numbers[k] for k in given]
        if labels != list(range(len(labels))):
            heat_axes.yaxis.set_major_formatter(FuncFormatter(partial(_row_label, labels)))
        heat_axes.grid(False)
        bar = figure.colorbar(image, ax=heat_axes, pad=0.01)
        bar.set_label(f"log10 ||dL/d{symbol}|| (blank: zero, none or NaN/Inf)", fontsize=8)
    if path is not None:
        figure.savefig(path, dpi=110)
    return figure

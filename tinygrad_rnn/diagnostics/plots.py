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

    A log axis cannot hold 0, nan or inf: an exact 0 is marked at the panel's floor (a triangle down),
    a nan or inf at its top (a cross), each named in the panel's legend; a missing number (None: no
    gradient, or no step into s_0) is left out. The x axis counts whole states, 0 to T.
    """
    from matplotlib.ticker import MaxNLocator

    figure = _figure_class()(figsize=(7, 5))
    top, bottom = figure.subplots(2, 1, sharex=True)
    letter = "l" if axis == "layer" else "t"
    marked = _log_panel(top, rows, [("grad_norm", f"‖δ_{letter}‖", None, dict(marker=".", color="#5a3d8a"))])
    top.set_ylabel(f"‖δ_{letter}‖, gradient reaching {letter}")
    _log_panel(bottom, rows, [("gain", "gain", "gain (what the step did)", dict(marker=".", color="#1f77b4")),
                              ("bound", f"bound ‖J_{letter}‖₂", f"bound ‖J_{letter}‖₂ (the most it could do)",
                               dict(linestyle="--", fillstyle="none", color="#9a9a9a"))],
               include=1.0)
    bottom.axhline(1.0, color="#303030", linewidth=0.8)
    if any(r.gain is None for r in rows[1:]):  # a ratio over ||delta_t|| = 0 (or none): no number, no mark
        bottom.plot([], [], " ", label=f"(no gain where ‖δ_{letter}‖ is 0 or missing)")
    bottom.set_ylabel("per step")
    bottom.set_xlabel("layer l" if axis == "layer" else "time step t")
    for axes in (top, bottom) if marked else (bottom,):
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=8)
    through = "the layers" if axis == "layer" else "time"
    top.set_title(_plain(title) if title else f"the gradient through {through} ({verdict(rows)})")
    for axes in (top, bottom):
        axes.grid(True, which="both", alpha=0.3)
    bottom.set_xlim(-0.5, max((r.t for r in rows), default=0) + 0.5)
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    figure.tight_layout()
    if path is not None:
        figure.savefig(path)
    return figure


def _log_panel(axes, rows: Sequence[StepRow], series: list, include: float | None = None) -> bool:
    """Each (field, name, label, style) of ``series``, ``getattr(row, field)`` against t on ``axes``'s
    log y axis: the positive finite numbers as a line (labelled ``label``; None: no legend entry); an
    exact 0 as a triangle down at the axis's floor and a nan or inf as a cross at its top, which a log
    axis cannot hold, each with a legend entry saying so; None left out. ``include``: a number the axis
    must show (the line at 1). True where a 0, nan or inf was marked."""
    axes.set_yscale("log")
    marks, known = [], [] if include is None else [include]
    for field, name, label, style in series:
        values = [(r.t, getattr(r, field)) for r in rows if getattr(r, field) is not None]
        shown = [(t, v) for t, v in values if math.isfinite(v) and v > 0]
        if shown:  # one line, broken where a number is missing or marked (never drawn across it)
            ts = list(range(shown[0][0], shown[-1][0] + 1))
            ys = dict(shown)
            axes.plot(ts, [ys.get(t, math.nan) for t in ts], label=_plain(label) if label else None, **style)
            alone = [t for t in ys if t - 1 not in ys and t + 1 not in ys]
            if alone and "marker" not in style:  # a number with none beside it: a point, no line to show it
                axes.plot(alone, [ys[t] for t in alone], linestyle="none", marker="o", markersize=4,
                          fillstyle=style.get("fillstyle", "full"), color=style.get("color"))
            known += [v for _, v in shown]
        zeros = [t for t, v in values if v == 0.0]
        odd = [t for t, v in values if not math.isfinite(v)]
        if zeros:
            marks.append((zeros, "low", "v", style, f"{name} exactly 0 (marked at the floor)"))
        if odd:
            marks.append((odd, "high", "x", style, f"{name} nan or inf (marked at the top)"))
    # The axis's ends, fixed so the marks sit on them: past every number drawn (a decade where marked).
    room = 10.0 if marks else 3.0
    low, high = min(known, default=1.0) / room, max(known, default=1.0) * room
    for ts, end, marker, style, label in marks:  # a hollow series' marks larger, beneath
        hollow = style.get("fillstyle") == "none"
        axes.plot(ts, [low if end == "low" else high] * len(ts), linestyle="none", marker=marker,
                  markersize=11 if hollow else 8, fillstyle="none" if hollow else "full", clip_on=False,
                  color=style.get("color"), zorder=3.9 if hollow else 4, label=_plain(label))
    axes.set_ylim(low, high)
    return bool(marks)


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

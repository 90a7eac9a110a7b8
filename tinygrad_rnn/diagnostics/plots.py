"""Plots of the per-step numbers from ``steps`` (needs the ``plot`` extra, matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence

from tinygrad_rnn.diagnostics.steps import StepRow, verdict


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from error
    return Figure


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
    top.set_title(title or f"the gradient through {'the layers' if axis == 'layer' else 'time'} ({verdict(rows)})")
    for axes in (top, bottom):
        axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    if path is not None:
        figure.savefig(path)
    return figure


def plot_gradient_norms(rows: Sequence, path: str | None = None, title: str | None = None):
    """||delta_t|| against t on a log scale (a matplotlib Figure; saved to ``path`` if given).

    ``rows`` from ``diagnostics.steps`` (or, the older form, a list of norms with None for none).
    """
    norms = [r.grad_norm if isinstance(r, StepRow) else r for r in rows]
    figure = _figure_class()(figsize=(6, 3.5))
    axes = figure.add_subplot()
    steps = [t for t, n in enumerate(norms) if n is not None and n > 0]
    axes.semilogy(steps, [norms[t] for t in steps], marker=".")
    axes.set_xlabel("time step t")
    axes.set_ylabel("‖δ_t‖, gradient reaching t")
    axes.set_title(title or f"gradient norms through time ({verdict(rows)})")
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    if path is not None:
        figure.savefig(path)
    return figure

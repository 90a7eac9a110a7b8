"""Plots of per-step gradient numbers (needs the ``plot`` extra, matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence

from tinygrad_rnn.diagnostics.steps import verdict

# ---- a picture -------------------------------------------------------------------------------

def plot_gradient_norms(norms: Sequence[float | None], path: str | None = None, title: str | None = None):
    """||dL/dh_t|| against t on a log scale (a matplotlib Figure; saved to ``path`` if given).

    Accepts the list from ``gradient_norms``. Needs matplotlib (``pip install matplotlib``).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("plot_gradient_norms needs matplotlib: pip install matplotlib") from error
    steps = [t for t, n in enumerate(norms) if n is not None and n > 0]
    figure = Figure(figsize=(6, 3.5))
    axes = figure.add_subplot()
    axes.semilogy(steps, [norms[t] for t in steps], marker=".")
    axes.set_xlabel("time step t")
    axes.set_ylabel("||dL/dh_t||")
    axes.set_title(title or f"gradient norms through time ({verdict(norms)})")
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    if path is not None:
        figure.savefig(path)
    return figure

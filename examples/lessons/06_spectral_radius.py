"""Lesson 6, initialisation: the spectral radius of W_hh, swept from 0.5 to 1.5, against ||dL/dh_0||.

A tanh RNN (hidden size 32, 50 steps) gets W_hh = a Gaussian matrix rescaled to spectral radius r
(``nn.init.scale_spectral_radius_``), five matrices per r. The loss reads only the last state,
L = <u, h_T> with ||u|| = 1, so ||dL/dh_T|| = 1 and ||dL/dh_0|| is exactly how much the gradient grew or
shrank on its way back through all 50 steps. Two kinds of input: tiny ones, where tanh is nearly the
identity and W_hh alone decides, and unit ones, where tanh saturates. Orthogonal W_hh
(``nn.init.orthogonal_``, every singular value 1) and the identity (``nn.init.eye_``) have radius 1 too;
they are marked.

Run: python examples/lessons/06_spectral_radius.py [--quick] [--out DIR]
"""

from __future__ import annotations

import math

import lessons_common as lc
import numpy as np

from tinygrad_rnn import Value, nn

HIDDEN, INPUTS, BATCH = 32, 4, 4
INPUT_SCALES = {"tiny inputs, x ~ 1e-3·N(0, 1)": 1e-3, "unit inputs, x ~ N(0, 1)": 1.0}


def gradient_at_start(init, steps: int, input_scale: float, seed: int) -> float:
    """||dL/dh_0|| for L = <u, h_T>, ||u|| = 1, with W_hh set by ``init(weight, rng)``."""
    rng = np.random.default_rng(seed)
    cell = nn.RNNCell(INPUTS, HIDDEN, rng=rng)
    init(cell.weight_hh, rng)
    nn.init.zeros_(cell.bias_ih)
    nn.init.zeros_(cell.bias_hh)
    xs = input_scale * rng.normal(size=(steps, BATCH, INPUTS))
    h0 = Value(np.zeros((BATCH, HIDDEN)), name="h_0")  # a leaf that wants a gradient, so h0.grad is kept
    outputs, _ = nn.RNN(cell)(xs, h0=h0)
    u = rng.normal(size=(BATCH, HIDDEN))
    (outputs[-1] * (u / np.linalg.norm(u))).sum().backward()
    return float(np.linalg.norm(h0.grad))


def gaussian_with_radius(radius: float):
    def init(weight, rng):
        nn.init.normal_(weight, 0.0, 1.0, rng=rng)
        nn.init.scale_spectral_radius_(weight, radius)
    return init


def crossing(radii: np.ndarray, values: np.ndarray) -> float | None:
    """The radius where the curve crosses 1, interpolating log(value) linearly between grid points."""
    logs = np.log(values)
    for k in range(len(radii) - 1):
        if logs[k] < 0 <= logs[k + 1]:
            return float(radii[k] + (radii[k + 1] - radii[k]) * (-logs[k]) / (logs[k + 1] - logs[k]))
    return None


def main(quick: bool = False, out=lc.DEFAULT_OUT) -> dict:
    timer = lc.Timer()
    steps, radii, seeds = (20, np.linspace(0.5, 1.5, 6), 2) if quick else (50, np.linspace(0.5, 1.5, 21), 5)
    curves, marks, crossings = {}, {}, {}
    for label, scale in INPUT_SCALES.items():
        runs = np.array([[gradient_at_start(gaussian_with_radius(r), steps, scale, seed) for seed in range(seeds)]
                         for r in radii])
        curves[label] = runs
        crossings[label] = crossing(radii, np.median(runs, axis=1))
        marks[label] = {
            "orthogonal": np.median([gradient_at_start(lambda w, rng: nn.init.orthogonal_(w, rng=rng), steps, scale, s)
                                     for s in range(seeds)]),
            "identity": gradient_at_start(lambda w, rng: nn.init.eye_(w), steps, scale, 0),
        }
    paths = _plot(radii, curves, marks, crossings, steps, out)

    tiny, unit = INPUT_SCALES
    sentences = []
    for label in INPUT_SCALES:
        median = np.median(curves[label], axis=1)
        where = crossings[label]
        sentences.append(
            f"With {label}: ||dL/dh_0|| is {median[0]:.2g} at radius {radii[0]:g} and "
            f"{median[-1]:.2g} at {radii[-1]:g}; it crosses 1 at radius "
            + (f"{where:.3f}." if where is not None else "nowhere in the sweep.")
            + f" Orthogonal W_hh gives {marks[label]['orthogonal']:.3g}, the identity {marks[label]['identity']:.3g}."
        )
    lc.say(
        *sentences,
        f"Backpropagating {steps} steps multiplies the gradient by {steps} Jacobians diag(tanh') W_hh: below "
        "radius 1 their product shrinks geometrically (vanishing), above it grows (exploding), and the band "
        "where it does neither is narrow. Saturating inputs make tanh' < 1 and pull everything down, "
        "moving the crossing to a larger radius. Orthogonal and identity matrices have every singular "
        "value 1: they keep the gradient whole while tanh stays linear, and lose it like the others "
        "once tanh saturates.",
    )
    lc.wrote(paths)
    print(f"({timer})")
    return {"radii": radii, "curves": curves, "marks": marks, "crossings": crossings, "paths": paths}


def _plot(radii, curves, marks, crossings, steps, out) -> list:
    colours = ("tab:blue", "tab:orange")
    with lc.plot_style():
        fig = lc.figure(figsize=(8, 4.6))
        axes = fig.add_subplot()
        for colour, (label, runs) in zip(colours, curves.items()):
            axes.fill_between(radii, runs.min(axis=1), runs.max(axis=1), color=colour, alpha=0.18, lw=0)
            axes.semilogy(radii, np.median(runs, axis=1), ".-", color=colour,
                          label=f"{label}: median of {runs.shape[1]} Gaussian W_hh (band: min to max)")
            where = crossings[label]
            if where is not None:
                axes.axvline(where, color=colour, ls=":", lw=1)
                axes.annotate(f"crosses 1 at {where:.3f}", (where, 1), xytext=(4, -14), textcoords="offset points",
                              color=colour, fontsize=8)
            axes.plot(1.0, marks[label]["orthogonal"], "D", ms=7, mfc="none", color=colour)
            axes.plot(1.0, marks[label]["identity"], "*", ms=10, color=colour)
        axes.plot([], [], "D", ms=7, mfc="none", color="grey", label="orthogonal W_hh (radius 1)")
        axes.plot([], [], "*", ms=10, color="grey", label="identity W_hh (radius 1)")
        axes.axhline(1.0, color="black", lw=0.8)
        low, high = axes.get_ylim()
        axes.text(radii[0], math.sqrt(low) if low > 0 else 1e-3, "vanishing", fontsize=9, color="#1f5f9e")
        axes.text(radii[-1], high ** 0.9 if high > 1 else 10, "exploding", fontsize=9, color="#b01e2d", ha="right")
        axes.set_xlabel("spectral radius of W_hh (max |eigenvalue|)")
        axes.set_ylabel(f"‖dL/dh_0‖ with ‖dL/dh_{steps}‖ = 1")
        axes.set_title(f"How much of the gradient survives {steps} steps back, tanh RNN, hidden size {HIDDEN}")
        axes.legend(loc="lower right", fontsize=7)
        return lc.save_figure(fig, out, "06_spectral_radius")


if __name__ == "__main__":
    main(**lc.command_line(__doc__))

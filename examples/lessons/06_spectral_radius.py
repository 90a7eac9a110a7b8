"""Lesson 6, initialisation: the spectral radius of W_hh, swept from 0.5 to 1.5, against ||dL/dh_0||,
and where saturation takes over from W_hh.

A tanh RNN (hidden size 32, 50 steps, zero biases) gets W_hh = a Gaussian matrix rescaled to spectral
radius r (``nn.init.scale_spectral_radius_``), five matrices per r. The loss reads only the last state,
L = <u, h_T> with ||u|| = 1, so ||dL/dh_T|| = 1 and ||dL/dh_0|| is exactly how much the gradient grew or
shrank on its way back through all 50 steps:

    dL/dh_{t-1} = (dL/dh_t * tanh'(a_t)) W_hh,    tanh'(a_t) = 1 - h_t^2,

so with tanh removed (a linear RNN, the same W_hh) it would be ||u W_hh^T||, W_hh alone (the dashed
line). Two kinds of input: tiny ones (1e-3) and unit ones. Tiny inputs keep tanh linear only while the
state stays small: above radius 1 the state grows like r^t in the forward pass too, until tanh
saturates, so the lower panel shows max |h_t| and the mean of tanh'(a_t) over the run, where the linear
story ends. Orthogonal W_hh (``nn.init.orthogonal_``, every singular value 1) and the identity
(``nn.init.eye_``) have radius 1 too; they are marked.

Run: python examples/lessons/06_spectral_radius.py [--quick] [--out DIR]
"""

from __future__ import annotations

import lessons_common as lc
import numpy as np

from tinygrad_rnn import Value, nn

HIDDEN, INPUTS, BATCH = 32, 4, 4
INPUT_SCALES = {"tiny inputs, x ~ 1e-3·N(0, 1)": 1e-3, "unit inputs, x ~ N(0, 1)": 1.0}
# "Follows the linear RNN" means within this fraction of its ||dL/dh_0||.
LINEAR_TOLERANCE = 0.1


def make_net(init, steps: int, input_scale: float, seed: int) -> tuple:
    """(cell, xs, u): a tanh cell with zero biases and W_hh set by ``init(weight, rng)``, its inputs
    (steps, BATCH, INPUTS) and the loss's direction u (BATCH, HIDDEN), ||u|| = 1. The same seed gives
    the same W_hh and u at every input scale."""
    rng = np.random.default_rng(seed)
    cell = nn.RNNCell(INPUTS, HIDDEN, rng=rng)
    init(cell.weight_hh, rng)
    nn.init.zeros_(cell.bias_ih)
    nn.init.zeros_(cell.bias_hh)
    xs = input_scale * rng.normal(size=(steps, BATCH, INPUTS))
    u = rng.normal(size=(BATCH, HIDDEN))
    return cell, xs, u / np.linalg.norm(u)


def measure(cell, xs, u) -> dict:
    """The numbers of one run of L = <u, h_T>:

    - grad: ||dL/dh_0||, by backward through the unrolled graph;
    - linear: ||u W_hh^T||, what it would be with tanh removed (W_hh alone);
    - max_h: max |h_t| over every step, unit and example;
    - mean_derivative: the mean of tanh'(a_t) = 1 - h_t^2 over the same.
    """
    h0 = Value(np.zeros((BATCH, HIDDEN)), name="h_0")  # a leaf that wants a gradient, so h0.grad is kept
    outputs, _ = nn.RNN(cell)(xs, h0=h0)
    (outputs[-1] * u).sum().backward()
    hidden = np.array([np.asarray(h.data) for h in outputs])
    weight = np.asarray(cell.weight_hh.data)
    return {"grad": float(np.linalg.norm(h0.grad)),
            "linear": float(np.linalg.norm(u @ np.linalg.matrix_power(weight, len(xs)))),
            "max_h": float(np.abs(hidden).max()), "mean_derivative": float(np.mean(1 - hidden**2))}


def gaussian_with_radius(radius: float):
    def init(weight, rng):
        nn.init.normal_(weight, 0.0, 1.0, rng=rng)
        nn.init.scale_spectral_radius_(weight, radius)
    return init


def orthogonal(weight, rng):
    nn.init.orthogonal_(weight, rng=rng)


def identity(weight, rng):
    nn.init.eye_(weight)


def crossing(radii: np.ndarray, values: np.ndarray) -> float | None:
    """The radius where the curve crosses 1, interpolating log(value) linearly between grid points."""
    logs = np.log(values)
    for k in range(len(radii) - 1):
        if logs[k] < 0 <= logs[k + 1]:
            return float(radii[k] + (radii[k + 1] - radii[k]) * (-logs[k]) / (logs[k + 1] - logs[k]))
    return None


def linear_until(radii: np.ndarray, runs: dict) -> int:
    """How many radii, from the smallest, have the median ratio ||dL/dh_0|| / (its linear value)
    within LINEAR_TOLERANCE of 1: the radii where W_hh alone decides."""
    ratios = np.median(runs["grad"] / runs["linear"], axis=1)
    inside = np.abs(ratios - 1) <= LINEAR_TOLERANCE
    return len(radii) if inside.all() else int(np.argmin(inside))


def main(quick: bool = False, out=lc.DEFAULT_OUT) -> dict:
    timer = lc.Timer()
    steps, radii, seeds = (20, np.linspace(0.5, 1.5, 6), 2) if quick else (50, np.linspace(0.5, 1.5, 21), 5)
    results, marks, crossings = {}, {}, {}
    for label, scale in INPUT_SCALES.items():
        runs = [[measure(*make_net(gaussian_with_radius(r), steps, scale, seed)) for seed in range(seeds)]
                for r in radii]
        results[label] = {key: np.array([[run[key] for run in row] for row in runs]) for key in runs[0][0]}
        crossings[label] = crossing(radii, np.median(results[label]["grad"], axis=1))
        marks[label] = {
            "orthogonal": float(np.median([measure(*make_net(orthogonal, steps, scale, s))["grad"]
                                           for s in range(seeds)])),
            "identity": measure(*make_net(identity, steps, scale, 0))["grad"],
        }
    tiny, unit = INPUT_SCALES
    linear_count = linear_until(radii, results[tiny])
    paths = _plot(radii, results, marks, crossings, linear_count, steps, out)

    medians = {label: {key: np.median(values, axis=1) for key, values in runs.items()}
               for label, runs in results.items()}
    sentences = []
    for label in INPUT_SCALES:
        grad, where = medians[label]["grad"], crossings[label]
        sentences.append(
            f"With {label}: ||dL/dh_0|| is {grad[0]:.2g} at radius {radii[0]:g} and {grad[-1]:.2g} at "
            f"{radii[-1]:g}; it crosses 1 at radius "
            + (f"{where:.3f}." if where is not None else "nowhere in the sweep.")
            + f" Orthogonal W_hh gives {marks[label]['orthogonal']:.3g}, the identity {marks[label]['identity']:.3g}."
        )
    sentences.append(_saturation_sentence(radii, medians, linear_count))
    derivative = medians[unit]["mean_derivative"]
    below_linear = np.median(results[unit]["grad"][0] / results[unit]["linear"][0])
    lc.say(
        *sentences,
        f"With unit inputs tanh' is below 1 at every radius (its mean over the run is {derivative[0]:.2f} at radius "
        f"{radii[0]:g} and {derivative[-1]:.2f} at {radii[-1]:g}): each of the {steps} steps multiplies the gradient "
        "by diag(tanh') W_hh, and the tanh' part pulls the whole curve below the dashed line (at radius "
        f"{radii[0]:g} to {below_linear:.2g} of it, near {derivative[0]:.3f}^{steps} = {derivative[0] ** steps:.2g}); "
        "the crossing moves to a larger radius. Orthogonal and identity matrices have every singular value 1: they "
        "keep the gradient whole while tanh stays linear (tiny inputs, radius 1), and lose it like the others once "
        "tanh saturates.",
    )
    lc.wrote(paths)
    print(f"({timer})")
    return {"radii": radii, "results": results, "curves": {label: runs["grad"] for label, runs in results.items()},
            "marks": marks, "crossings": crossings, "linear_until": radii[linear_count - 1] if linear_count else None,
            "paths": paths}


def _saturation_sentence(radii, medians, linear_count: int) -> str:
    """What the tiny-input curve does below and above the radius where it leaves the linear RNN."""
    tiny = medians[next(iter(INPUT_SCALES))]
    if linear_count == 0:
        return "With tiny inputs the curve leaves the linear RNN's already at the smallest radius."
    last = linear_count - 1
    sentence = (
        f"With tiny inputs the curve is the linear RNN's (dashed, W_hh alone, within {LINEAR_TOLERANCE:.0%}) up to "
        f"radius {radii[last]:.2f}, where max |h_t| is still {tiny['max_h'][last]:.2g}: there tanh is nearly "
        "the identity and W_hh alone decides."
    )
    if linear_count == len(radii):
        return sentence
    first = linear_count  # the first radius past the linear regime
    grown = "" if first == len(radii) - 1 else f"{tiny['max_h'][first]:.2g} at radius {radii[first]:.2f} and "
    return sentence + (
        f" Above it the state itself grows like r^t in the forward pass, until tanh saturates: max |h_t| is {grown}"
        f"{tiny['max_h'][-1]:.2g} at {radii[-1]:g}, where the mean tanh' is {tiny['mean_derivative'][-1]:.2f} and "
        f"||dL/dh_0|| is {tiny['grad'][-1]:.2g} against the linear RNN's {tiny['linear'][-1]:.2g}. What holds the "
        "curve down there is saturation, not W_hh."
    )


def _plot(radii, results, marks, crossings, linear_count, steps, out) -> list:
    colours = ("tab:blue", "tab:orange")
    with lc.plot_style():
        fig = lc.figure(figsize=(8, 6.4))
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(2.4, 1))
        linear = np.median(next(iter(results.values()))["linear"], axis=1)
        top.semilogy(radii, linear, "--", color="black", lw=1, zorder=5,  # on top: below 1.1 it hides the blue
                     label=f"linear RNN, same W_hh (tanh removed): ‖u W_hh^{steps}‖, W_hh alone")
        for colour, (label, runs) in zip(colours, results.items()):
            grad = runs["grad"]
            top.fill_between(radii, grad.min(axis=1), grad.max(axis=1), color=colour, alpha=0.18, lw=0)
            top.semilogy(radii, np.median(grad, axis=1), ".-", color=colour,
                         label=f"{label}: median of {grad.shape[1]} Gaussian W_hh (band: min to max)")
            where = crossings[label]
            if where is not None:
                top.axvline(where, color=colour, ls=":", lw=1)
                top.annotate(f"crosses 1 at {where:.3f}", (where, 1), xytext=(4, -14), textcoords="offset points",
                             color=colour, fontsize=8)
            top.plot(1.0, marks[label]["orthogonal"], "D", ms=7, mfc="none", color=colour)
            top.plot(1.0, marks[label]["identity"], "*", ms=10, color=colour)
            bottom.plot(radii, np.median(runs["mean_derivative"], axis=1), ".-", color=colour,
                        label=f"{label.split(',')[0]}: mean tanh'(a_t) = mean(1 − h_t²)")
            bottom.plot(radii, np.median(runs["max_h"], axis=1), "x--", color=colour, ms=4,
                        label=f"{label.split(',')[0]}: max |h_t|")
        top.plot([], [], "D", ms=7, mfc="none", color="grey", label="orthogonal W_hh (radius 1)")
        top.plot([], [], "*", ms=10, color="grey", label="identity W_hh (radius 1)")
        top.axhline(1.0, color="black", lw=0.8)
        low, high = top.get_ylim()
        # The words sit just beside the line 1 they refer to, where no curve passes.
        top.text(radii[0], 0.05, "vanishing (below 1)", fontsize=9, color="#1f5f9e", va="top")
        top.text(radii[0] + 0.78 * (radii[-1] - radii[0]), 3, "exploding (above 1)", fontsize=9, color="#b01e2d",
                 ha="right", va="bottom")
        if 0 < linear_count < len(radii):
            # Shade where even tiny inputs saturate: from halfway between the last linear radius and the next.
            start = (radii[linear_count - 1] + radii[linear_count]) / 2
            for axes in (top, bottom):
                axes.axvspan(start, radii[-1] + 0.02, color="grey", alpha=0.12, lw=0)
            top.text(start + 0.01, low ** 0.75 * high ** 0.25 if low > 0 else 1e-6,
                     "tiny inputs saturate too:\nthe state grows as r^t\nuntil tanh bends it", fontsize=8, color="0.3")
        top.set_ylabel(f"‖dL/dh_0‖ with ‖dL/dh_{steps}‖ = 1")
        top.set_title(f"How much of the gradient survives {steps} steps back, tanh RNN, hidden size {HIDDEN}")
        top.legend(loc="lower right", fontsize=7)
        bottom.set_ylim(0, 1.05)
        bottom.set_xlabel("spectral radius of W_hh (max |eigenvalue|)")
        bottom.set_ylabel("over all t, units, examples\n(median of the W_hh)", fontsize=8)
        bottom.set_title("Where the linear story ends: tanh' < 1 once |h| is large", fontsize=9)
        bottom.legend(loc="center left", fontsize=7, ncol=2)
        return lc.save_figure(fig, out, "06_spectral_radius")


if __name__ == "__main__":
    main(**lc.command_line(__doc__))

"""Lesson 14, spectra: the singular values of each step's Jacobian against those of their product over
T steps, and why a step's bound ||J_t||_2 is not the factor the gradient is multiplied by.

A tanh RNN, h_t = tanh(x_t W_ih^T + b + h_{t-1} W_hh^T), has the step Jacobian

    J_t = dh_t/dh_{t-1} = diag(1 - h_t^2) W_hh,

and backpropagation through T steps multiplies the last gradient by the product of their transposes:

    delta_0 = J_1^T J_2^T ... J_T^T delta_T.

One step's singular values sigma_i(J_t) say what that step could do to a gradient in each direction;
the largest is the bound ||J_t||_2. The product's singular values say what T steps do. They are not the
products of the steps' ones: the directions a step stretches are not the directions the next one
stretches. For long products they behave like e^(T lambda_i), where lambda_1 >= ... >= lambda_H are the
Lyapunov exponents. Computing the product and then its SVD fails: its entries overflow or underflow
and, in float64, every singular value below 1e-16 of the largest drowns in rounding. The standard QR
method keeps each direction's own scale (Benettin et al. 1980; Eckmann & Ruelle 1985):

    Q_T = I;  for t = T, ..., 1:  J_t^T Q_t = Q_{t-1} R_t  (a QR factorisation);
    lambda_i = (1/T) sum_t log |R_t[i, i]|.

Since ||delta_0|| / ||delta_T|| = gain_1 ... gain_T (lesson 3), the geometric mean of the gains is
(||delta_0|| / ||delta_T||)^(1/T), which tends to e^(lambda_1) for almost every delta_T: the top
Lyapunov factor is the per-step factor a long gradient really meets, and a typical (median) gain
is close to it. The bound is at least every gain, and can be far above them all.

Four nets, hidden size 64, one sequence, T = 200, L = <u, h_T> with ||u|| = 1 (so ||delta_T|| = 1):
PyTorch's init (vanishing); W_hh with Gaussian entries of standard deviation 2 / sqrt(H) (exploding
through time while |h_t| < 1: a chaotic tanh net, Sompolinsky, Crisanti & Sommers 1988); an
orthogonal W_hh with tiny inputs (tanh nearly linear) and with unit inputs (tanh saturating).
J_t comes from the recorded graph (``diagnostics.step_jacobian``), the gains and bounds from
``diagnostics.steps``.

Run: python examples/lessons/14_spectra.py [--quick] [--out DIR]
"""

from __future__ import annotations

import lessons_common as lc
import numpy as np

from tinygrad_rnn import diagnostics, nn

INPUTS = 4
GAIN = 2.0  # the exploding net's W_hh has entries of standard deviation GAIN / sqrt(hidden)

# label: (how W_hh is set, size of the inputs)
NETS = {
    "PyTorch's init": ("default", 1.0),
    f"Gaussian W_hh, gain {GAIN:g}": ("gaussian", 1.0),
    "orthogonal W_hh, tiny inputs (1e-3)": ("orthogonal", 1e-3),
    "orthogonal W_hh, unit inputs": ("orthogonal", 1.0),
}


def make_net(init: str, input_scale: float, hidden: int, steps: int, seed: int = 0):
    """(cell, xs, u): a tanh RNN with W_hh set by ``init``, one sequence of inputs, the unit read-out u."""
    rng = np.random.default_rng(seed)
    cell = nn.RNNCell(INPUTS, hidden, rng=rng)
    if init == "gaussian":
        nn.init.normal_(cell.weight_hh, 0.0, GAIN / np.sqrt(hidden), rng=rng)
    elif init == "orthogonal":
        nn.init.orthogonal_(cell.weight_hh, rng=rng)
        # An isometry keeps every constant push: a bias would pile up step after step and saturate tanh.
        nn.init.zeros_(cell.bias_ih)
        nn.init.zeros_(cell.bias_hh)
    xs = input_scale * rng.normal(size=(steps, 1, INPUTS))
    u = rng.normal(size=(1, hidden))
    return cell, xs, u / np.linalg.norm(u)


def lyapunov_exponents(jacobians) -> np.ndarray:
    """lambda_1 >= ... >= lambda_H of the backward product J_1^T ... J_T^T, by the QR method.

    Q starts as the identity; each step's J_t^T Q is split into an orthonormal Q and a triangular R,
    whose diagonal holds how much step t stretched each of the H directions after the ones before it
    were taken out. Summing log |R_ii| never forms the product, so nothing overflows or underflows
    (a direction that a step kills, R_ii = 0, gets -inf)."""
    size = jacobians[0].shape[1]
    frame, logs = np.eye(size), np.zeros(size)
    with np.errstate(divide="ignore"):  # log(0) = -inf for a direction a step erases exactly
        for jacobian in reversed(jacobians):
            frame, triangle = np.linalg.qr(jacobian.T @ frame)
            logs += np.log(np.abs(np.diagonal(triangle)))
    return np.sort(logs / len(jacobians))[::-1]


def product_singular_values(jacobians) -> np.ndarray:
    """sigma_i(J_T ... J_1), by forming the product in float64: right for the largest ones only."""
    product = np.eye(jacobians[0].shape[1])
    for jacobian in jacobians:
        product = jacobian @ product
    return np.linalg.svd(product, compute_uv=False)


def analyse(init: str, input_scale: float, hidden: int, steps: int) -> dict:
    """Every number of one net: per step the singular values, gain and bound; for the whole run the
    Lyapunov exponents, the product's singular values, and ||delta_0|| / ||delta_T||."""
    cell, xs, u = make_net(init, input_scale, hidden, steps)
    outputs, states = nn.RNN(cell)(xs, return_states=True)
    loss = (outputs[-1] * u).sum()
    loss.backward()
    rows = diagnostics.steps(loss, states)
    jacobians = [diagnostics.step_jacobian(states[t], states[t - 1])[0] for t in range(1, steps + 1)]
    exponents = lyapunov_exponents(jacobians)
    with np.errstate(divide="ignore", over="ignore", under="ignore"):
        product = product_singular_values(jacobians)
    return {
        "step_singular_values": np.array([np.linalg.svd(j, compute_uv=False) for j in jacobians]),
        "gains": np.array([r.gain for r in rows[1:]]),
        "bounds": np.array([r.bound for r in rows[1:]]),
        "delta_norms": np.array([r.grad_norm for r in rows]),
        "factor": rows[0].grad_norm / rows[-1].grad_norm,
        "lyapunov": exponents,
        "product_singular_values": product,
        "max_abs_h": float(max(np.abs(s.data).max() for s in states[1:])),
        "jacobians": jacobians,
        "hidden": np.array([s.data[0] for s in states]),
        "weights": {name: np.array(p.data) for name, p in cell.named_parameters()},
        "xs": xs, "u": u,
    }


def main(quick: bool = False, out=lc.DEFAULT_OUT) -> dict:
    timer = lc.Timer()
    hidden, steps = (64, 40) if quick else (64, 200)
    runs = {label: analyse(init, scale, hidden, steps) for label, (init, scale) in NETS.items()}
    paths = _plot_spectra(runs, steps, out) + _plot_gains(runs, steps, out)

    lines = []
    for label, r in runs.items():
        top = r["lyapunov"][0]
        lines.append(
            f"{label}: one step's singular values {np.median(r['step_singular_values'][:, -1]):.2g} to "
            f"{np.median(r['bounds']):.3g} (medians over t); top Lyapunov exponent {top:+.4f}, factor "
            f"e^lambda_1 = {np.exp(top):.4f} a step; median gain {np.median(r['gains']):.4f}, geometric mean "
            f"{r['factor'] ** (1 / steps):.4f}; over {steps} steps ||delta_0|| / ||delta_T|| = {r['factor']:.2g}, "
            f"the product of the bounds {np.prod(r['bounds']):.2g}; max |h_t| = {r['max_abs_h']:.6g}.")
    print("\n".join(lines) + "\n")
    default, gaussian, tiny, unit = runs.values()
    bound, top = np.median(default["bounds"]), np.exp(default["lyapunov"][0])
    worst = max(abs(np.median(r["gains"]) / np.exp(r["lyapunov"][0]) - 1) for r in runs.values())
    lc.say(
        "The bound ||J_t||_2 is the largest singular value of one step, the most that step could stretch "
        f"any gradient; it is not what the gradient meets. With PyTorch's init the median bound is {bound:.2f}"
        + (", above 1," if bound > 1 else ",") + f" yet the gradient is multiplied by e^lambda_1 = {top:.2f} a "
        f"step: multiplying the bounds would promise {np.prod(default['bounds']):.2g} over {steps} steps, and "
        f"the gradient becomes {default['factor']:.2g} of itself. The Gaussian net's bounds (median "
        f"{np.median(gaussian['bounds']):.2f}) multiply to {np.prod(gaussian['bounds']):.2g}; its gradient grows "
        f"by {gaussian['factor']:.2g} ({np.exp(gaussian['lyapunov'][0]):.2f} a step), with every |h_t| <= 1. "
        f"An orthogonal W_hh with unit inputs has bounds of at most 1 (median {np.median(unit['bounds']):.4f}), "
        f"and the gradient still falls to {unit['factor']:.2g}: each step shrinks the directions of the units "
        "that saturate (tanh' < 1), and W_hh keeps turning the gradient into new ones.",
        "For every net but the isometry (tiny inputs), the product's leading singular values, per step (the "
        "black line), sit below the single step's (orange): each step stretches different directions, and a "
        "product of bounds only bounds. The top Lyapunov factor e^lambda_1 is what a long gradient meets; "
        f"the median gain is within {worst:.0%} of it for all four nets. Forming the product and taking its "
        "SVD in float64 resolves only the singular values within 1e-16 of the largest; the QR method gets "
        "all of them.",
        f"With tiny inputs, tanh stays linear and the orthogonal W_hh is an isometry: every exponent is "
        f"between {tiny['lyapunov'][-1]:+.1e} and {tiny['lyapunov'][0]:+.1e}, and the gradient keeps "
        f"{tiny['factor']:.4f} of itself over {steps} steps.",
    )
    lc.wrote(paths)
    print(f"({timer})")
    return {"runs": runs, "steps": steps, "hidden": hidden, "paths": paths}


FLOOR = 1e-4  # the spectra's axis starts here; smaller singular values are drawn at the floor


def _plot_spectra(runs, steps, out) -> list:
    with lc.plot_style():
        fig = lc.figure(figsize=(13, 4.2))
        for axes, (label, r) in zip(fig.subplots(1, len(runs), sharey=True), runs.items()):
            index = np.arange(1, r["lyapunov"].size + 1)
            single = np.maximum(r["step_singular_values"], FLOOR)
            axes.fill_between(index, np.percentile(single, 10, axis=0), np.percentile(single, 90, axis=0),
                              color="tab:orange", alpha=0.25, lw=0)
            axes.semilogy(index, np.median(single, axis=0), color="tab:orange", lw=1.5,
                          label="one step: σ_i(J_t), median over t\n(band: 10th to 90th percentile)")
            axes.semilogy(index, np.maximum(np.exp(r["lyapunov"]), FLOOR), color="black", lw=1.8,
                          label=f"{steps} steps, per step: σ_i(J_{steps}···J_1)^(1/{steps})\n"
                                "= e^λ_i, by the QR method")
            direct = np.maximum(r["product_singular_values"] ** (1 / steps), FLOOR)
            axes.semilogy(index, direct, ":", color="tab:purple", lw=1.5,
                          label="the same from the product's SVD in float64\n(wrong below 1e-16 of the largest)")
            axes.plot(1, np.median(r["gains"]), "*", ms=11, color="tab:blue", zorder=5,
                      label="median gain ‖J_tᵀδ_t‖/‖δ_t‖")
            axes.axhline(1.0, color="grey", lw=0.8)
            axes.set_ylim(FLOOR / 1.5, 6)
            axes.set_xlabel("index i (singular values in decreasing order)")
            axes.set_title(f"{label}\nbound {np.median(r['bounds']):.3g} · e^λ₁ {np.exp(r['lyapunov'][0]):.3g}"
                           f" · median gain {np.median(r['gains']):.3g}")
        fig.axes[0].set_ylabel("factor per step (log)")
        fig.axes[0].legend(loc="lower left", fontsize=7)
        fig.suptitle(f"Singular values of one step against those of the product of {steps} steps, tanh RNN, "
                     f"hidden size {r['lyapunov'].size} (values below {FLOOR:g} drawn at the axis)")
        return lc.save_figure(fig, out, "14_spectra_singular_values")


def _plot_gains(runs, steps, out) -> list:
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    with lc.plot_style():
        fig = lc.figure(figsize=(13, 6.6))
        grid = fig.subplots(2, len(runs), sharex=True)
        t = np.arange(1, steps + 1)
        states = np.arange(steps + 1)
        for (top, bottom), (label, r) in zip(grid.T, runs.items()):
            factor = np.exp(r["lyapunov"][0])
            top.semilogy(t, r["bounds"], color="tab:red", lw=1,
                         label="bound ‖J_t‖₂: the most step t could\nstretch any gradient")
            top.semilogy(t, r["gains"], ".", ms=3, color="tab:blue",
                         label="gain ‖J_tᵀδ_t‖/‖δ_t‖: what step t\ndid to the gradient that crossed it")
            top.axhline(np.median(r["gains"]), color="tab:blue", ls="--", lw=1, label="median of the gains over t")
            top.axhline(factor, color="black", lw=1.2, label="top Lyapunov factor e^λ₁ (QR method)")
            # One scale for the whole row, so a factor of 1.0000 looks like 1 and 0.56 like 0.56.
            top.set_ylim(0.3, 6)
            top.yaxis.set_major_locator(FixedLocator([0.3, 0.5, 1, 2, 3, 5]))
            top.yaxis.set_major_formatter(ScalarFormatter())
            top.yaxis.set_minor_locator(NullLocator())
            top.set_title(label)
            # Read backwards from the loss: ||delta_t|| / ||delta_T|| against what the bounds and e^lambda_1 say.
            actual = r["delta_norms"] / r["delta_norms"][-1]
            promised = np.append(np.cumprod(r["bounds"][::-1])[::-1], 1.0)
            lyapunov = factor ** (steps - states)
            bottom.semilogy(states, actual, color="tab:blue", lw=2, label="‖δ_t‖ / ‖δ_T‖ (the gradient itself)")
            bottom.semilogy(states, promised, color="tab:red", ls="--", lw=1.2,
                            label="the bounds of steps t+1..T multiplied")
            bottom.semilogy(states, lyapunov, color="black", ls=":", lw=1.5, label="(e^λ₁)^(T−t)")
            shown = np.concatenate([actual, promised, lyapunov])
            bottom.set_ylim(min(shown.min(), 0.1) / 3, max(shown.max(), 10) * 3)  # at least 0.1 to 10
            bottom.set_xlabel("time step t (the loss reads h_T)")
        grid[0, 0].set_ylabel("factor of one step (log)")
        grid[1, 0].set_ylabel(f"over the steps t+1..{steps} (log)")
        grid[0, 0].legend(fontsize=7, loc="upper right")
        grid[1, 0].legend(fontsize=7, loc="lower right")
        fig.suptitle("A bound is not a factor: the bounds, the gains and the top Lyapunov factor, per step "
                     "(top) and multiplied back from the loss (bottom)")
        return lc.save_figure(fig, out, "14_spectra_gains")


if __name__ == "__main__":
    main(**lc.command_line(__doc__))

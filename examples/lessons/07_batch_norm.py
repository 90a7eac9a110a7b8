"""Lesson 7, batch normalisation: a recurrent batch-norm cell (Cooijmans et al. 2016),

    h' = tanh(BN(x W_ih^T; gamma_ih) + BN(h W_hh^T; gamma_hh) + b),   BN(z; gamma) = gamma (z - mean) / std,

which normalises the two terms separately with statistics per time step, against the plain tanh cell
with the same weights, for W_hh small, medium and large; then what does set its gain: the ratio
rho = gamma_hh / gamma_ih of its two scales.

Each net reads 30 steps (4 features, batch 8, hidden size 8) and is scored on its last state. The
recurrent weights are N(0, s^2 / H) for s = 0.3, 1 and 3. The numbers are those of
``diagnostics.steps``. Batch statistics make every example's state depend on every other's, so a step
of the batch-norm cell is one map of the whole batch state: its bound is the spectral norm of that
(B H) x (B H) Jacobian (``bound_method`` "full"), not the largest over separate rows.

Why the ratio: while tanh is nearly linear, unit j of h_t spreads over the batch by about
tanh'_j sqrt(gamma_ih^2 + gamma_hh^2) (two terms of unit variance each), of which gamma_hh came from
h_{t-1}. The next step's batch norm divides h_t W_hh^T by its spread, so both tanh' and W_hh cancel,
and one step keeps about

    gamma_hh / sqrt(gamma_ih^2 + gamma_hh^2) = rho / sqrt(1 + rho^2)

of the gradient: 1/sqrt(2) = 0.71 for the paper's gamma_ih = gamma_hh = 0.1. An estimate, not a bound;
the sweep measures it, at the paper's size of gamma and ten times larger.

Run: python examples/lessons/07_batch_norm.py [--quick] [--out DIR]
"""

from __future__ import annotations

import lessons_common as lc
import numpy as np

from tinygrad_rnn import Value, diagnostics, nn
from tinygrad_rnn.nn.batchnorm_rnn import BNRNNCell
from visualize import compare_steps

INPUTS, HIDDEN, BATCH = 4, 8, 8
SCALES = (0.3, 1.0, 3.0)
PAPER_GAMMA = 0.1  # Cooijmans et al.'s initial gamma, for both terms
# The sweep's sizes of gamma: sqrt(gamma_ih^2 + gamma_hh^2), the pre-activation's spread; at rho = 1
# they are gamma = 0.1 (the paper's) and gamma = 1 (BatchNorm1d's default) for both terms.
SIZES = {"paper's size (γ = 0.1 for both at ρ = 1)": PAPER_GAMMA * np.sqrt(2),
         "ten times larger (γ = 1 for both at ρ = 1)": np.sqrt(2)}
SWEEP_BATCHES = (8, 64)


def pair(scale: float):
    """A plain tanh cell and a batch-norm cell (gamma 0.1) with the same weights, W_hh ~ N(0, scale^2 / H)."""
    plain = nn.RNNCell(INPUTS, HIDDEN, rng=1)
    nn.init.normal_(plain.weight_hh, 0.0, scale / np.sqrt(HIDDEN), rng=2)
    batch_norm = BNRNNCell(INPUTS, HIDDEN, max_steps=100, gamma=PAPER_GAMMA, rng=1)
    batch_norm.load_state_dict({**batch_norm.state_dict(), **plain.state_dict()})
    return plain, batch_norm


def gammas(ratio: float, size: float) -> tuple[float, float]:
    """(gamma_ih, gamma_hh) with gamma_hh / gamma_ih = ratio and sqrt(gamma_ih^2 + gamma_hh^2) = size."""
    return size / np.sqrt(1 + ratio**2), size * ratio / np.sqrt(1 + ratio**2)


def estimate(ratio):
    """A step's gain when tanh is nearly linear: gamma_hh / sqrt(gamma_ih^2 + gamma_hh^2) (module doc)."""
    return ratio / np.sqrt(1 + ratio**2)


def sequence(steps: int, batch: int, seed: int) -> tuple:
    """(xs, target, h0) for one run. h0 is not zeros: a zero state has zero batch variance, and
    normalising it would divide by sqrt(eps)."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(steps, batch, INPUTS)), rng.normal(size=(batch, HIDDEN)),
            0.5 * rng.normal(size=(batch, HIDDEN)))


def sweep_gains(gamma_ih: float, gamma_hh: float, steps: int, batch: int, seed: int) -> dict:
    """One run of the batch-norm cell (W_hh scale 1) with these gammas, scored on its last state.
    With one loss at the end, step t's gain is ||delta_{t-1}|| / ||delta_t||, read from the states'
    gradients (no bounds needed, so no (B H) x (B H) Jacobians). Also the mean tanh' over the run."""
    _, cell = pair(1.0)
    nn.init.constant_(cell.gamma_ih, gamma_ih)
    nn.init.constant_(cell.gamma_hh, gamma_hh)
    xs, target, h0 = sequence(steps, batch, 100 + seed)
    outputs, states = nn.RNN(cell)(xs, h0=Value(h0), return_states=True)
    nn.mse_loss(outputs[-1], target).backward()
    norms = np.array(diagnostics.gradient_norms(states))
    hidden = np.array([np.asarray(h.data) for h in outputs])
    return {"gains": norms[:-1] / norms[1:], "mean_derivative": float(np.mean(1 - hidden**2))}


def sweep(ratios, steps: int, seeds: int) -> dict:
    """{(size label, batch): {"gain": median gain per ratio, "mean_derivative": per ratio}}, the median
    over every step of ``seeds`` sequences."""
    results = {}
    for label, size in SIZES.items():
        for batch in SWEEP_BATCHES:
            runs = [[sweep_gains(*gammas(ratio, size), steps, batch, seed) for seed in range(seeds)]
                    for ratio in ratios]
            results[(label, batch)] = {
                "gain": np.array([np.median(np.concatenate([r["gains"] for r in row])) for row in runs]),
                "mean_derivative": np.array([np.mean([r["mean_derivative"] for r in row]) for row in runs])}
    return results


def main(quick: bool = False, out=lc.DEFAULT_OUT) -> dict:
    timer = lc.Timer()
    steps = 8 if quick else 30
    ratios, seeds = (np.logspace(-1, 1, 5), 1) if quick else (np.logspace(-1, 1, 9), 3)
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(steps, BATCH, INPUTS))
    target = rng.normal(size=(BATCH, HIDDEN))
    h0 = 0.5 * rng.normal(size=(BATCH, HIDDEN))
    runs = {}
    for scale in SCALES:
        plain, batch_norm = pair(scale)
        for kind, cell in (("plain", plain), ("batch norm", batch_norm)):
            runs[(kind, scale)] = lc.unroll_to_last_state(cell, xs, target, h0=Value(h0, requires_grad=False))

    numbers = {key: {"factor": diagnostics.gradient_factor(rows)[0], "verdict": diagnostics.verdict(rows),
                     "gain": float(np.median([r.gain for r in rows[1:] if r.gain is not None])),
                     "methods": sorted({r.bound_method for r in rows[1:]})} for key, (_, _, rows) in runs.items()}
    ratio_sweep = sweep(ratios, steps, seeds)
    shown = {f"{kind}, W_hh scale {scale:g}": runs[(kind, scale)][:2] for kind in ("plain", "batch norm")
             for scale in (SCALES[0], SCALES[-1])}
    picture = compare_steps(shown, per_row=15, title="Plain tanh cell against the recurrent batch-norm cell, "
                            "W_hh small and large; batch-norm bounds over the whole batch state")
    paths = lc.save_graph(picture, out, "07_batch_norm_steps")
    paths += _plot(runs, numbers, ratios, ratio_sweep, steps, seeds, out)

    lines = [f"{kind:>10}, scale {scale:g}: median gain per step {n['gain']:.3g}, "
             f"||delta_0|| / ||delta_{steps}|| = {n['factor']:.2g} ({n['verdict']}), bound computed by "
             f"{', '.join(n['methods'])}" for (kind, scale), n in numbers.items()]
    print("\n".join(lines) + "\n")
    print(_sweep_table(ratios, ratio_sweep) + "\n")
    lc.say(*_scale_sentences(numbers, steps), *_ratio_sentences(ratios, ratio_sweep),
           "The batch-norm cell's statistics couple the examples of a batch, so its step numbers are "
           "computed over the whole batch: diagnostics.steps tests every step for rows that mix (a random "
           "probe) and found them here ('full'); the plain cell's steps are computed row by row ('rows').")
    lc.wrote(paths)
    print(f"({timer})")
    return {"numbers": numbers, "ratios": ratios, "sweep": ratio_sweep, "steps": steps, "paths": paths}


def _scale_sentences(numbers, steps: int) -> list[str]:
    """What the scale of W_hh does to each cell, and that the batch-norm cell still loses the gradient."""
    plain_gains = [numbers[("plain", s)]["gain"] for s in SCALES]
    bn = [numbers[("batch norm", s)] for s in SCALES]
    lost = "vanishes" if bn[1]["verdict"] == "vanishing" else "loses the gradient at every step"
    return [
        f"In the plain cell what a step does to the gradient follows the scale of W_hh: median gains "
        f"{', '.join(f'{g:.2g}' for g in plain_gains)} for scales {', '.join(f'{s:g}' for s in SCALES)}, from "
        "shrinking to growing. Batch norm divides h W_hh^T by its own standard deviation, so scaling W_hh "
        "changes nothing but the weight of eps in var + eps: the gains are "
        + ", ".join(f"{n['gain']:.3g}" for n in bn) + ", and the three dashed curves lie on each other.",
        f"The batch-norm cell still {lost}: {bn[1]['gain']:.2f} a step leaves "
        + ", ".join(f"{n['factor']:.1e}" for n in bn)
        + f" over {steps} steps ({bn[1]['verdict']} by the verdict's {diagnostics.VANISHING:g} line). Batch norm "
        "takes the scale of W_hh out of the gradient's fate; it does not make the gradient survive.",
    ]


def _ratio_sentences(ratios, ratio_sweep) -> list[str]:
    """What the ratio of the gammas does, and how that compares with Cooijmans et al.'s advice."""
    paper, large = SIZES
    at_one = int(np.argmin(np.abs(np.log(ratios))))  # rho = 1
    paper_gains = [ratio_sweep[(paper, b)]["gain"] for b in SWEEP_BATCHES]
    large_gains = ratio_sweep[(large, BATCH)]["gain"]
    derivative = {label: ratio_sweep[(label, BATCH)]["mean_derivative"][at_one] for label in SIZES}
    above_one = ratios[large_gains > 1]
    larger = all(np.all(ratio_sweep[(large, b)]["gain"] > ratio_sweep[(paper, b)]["gain"]) for b in SWEEP_BATCHES)
    if larger:
        size_effect = (f"and yet give larger gains in this cell at every ratio, not smaller "
                       f"({large_gains[at_one]:.2f} at rho = 1"
                       + (f", above 1 from rho = {above_one[0]:.2g}" if above_one.size else "")
                       + "): here the ratio, not saturation, decides how fast the gradient fades.")
    else:
        size_effect = f"and change the gain at rho = 1 to {large_gains[at_one]:.2f}."
    return [
        f"What sets its gain is the ratio rho = gamma_hh / gamma_ih (right panel). At the paper's size the "
        f"median gain goes from {paper_gains[0][0]:.2f} at rho = {ratios[0]:g} to {paper_gains[0][-1]:.2f} at "
        f"rho = {ratios[-1]:g}, near the estimate rho / sqrt(1 + rho^2) ({estimate(ratios[0]):.2f} to "
        f"{estimate(ratios[-1]):.2f}); at rho = 1 it is "
        + " and ".join(f"{g[at_one]:.2f} with batch {b}" for g, b in zip(paper_gains, SWEEP_BATCHES))
        + f" (estimate {estimate(1.0):.2f}).",
        "Cooijmans et al. found that a large gamma makes the gradient vanish in a simple batch-normalised tanh "
        "RNN on sequential MNIST (their Figure 1a), conjectured that tanh's saturation is the cause, and "
        f"recommend gamma = {PAPER_GAMMA:g} for both terms. In this cell, on these random inputs, gamma = "
        f"{PAPER_GAMMA:g} does keep tanh nearly linear (mean tanh' {derivative[paper]:.2f}), but it also puts "
        f"rho at 1, where a step keeps about {paper_gains[0][at_one]:.2f}. Ten times larger gammas saturate "
        f"tanh (mean tanh' {derivative[large]:.2f} at rho = 1) " + size_effect,
    ]


def _sweep_table(ratios, ratio_sweep) -> str:
    header = "rho = gamma_hh / gamma_ih: " + "  ".join(f"{r:6.3g}" for r in ratios)
    rows = [f"{'estimate':>26}: " + "  ".join(f"{estimate(r):6.3f}" for r in ratios)]
    rows += [f"{label.split(' (')[0] + f', batch {batch}':>26}: " + "  ".join(f"{g:6.3f}" for g in numbers["gain"])
             for (label, batch), numbers in ratio_sweep.items()]
    return "median gain per step of the batch-norm cell\n" + "\n".join([header, *rows])


def _plot(runs, numbers, ratios, ratio_sweep, steps, seeds, out) -> list:
    colours = dict(zip(SCALES, ("tab:blue", "tab:green", "tab:red")))
    with lc.plot_style():
        fig = lc.figure(figsize=(13, 4.6))
        left, right = fig.subplots(1, 2, width_ratios=(1.15, 1))
        for (kind, scale), (_, _, rows) in runs.items():
            held = [r for r in rows if r.grad_norm]
            n = numbers[(kind, scale)]
            left.semilogy([r.t for r in held], [r.grad_norm / rows[-1].grad_norm for r in held],
                          "-" if kind == "plain" else "--", color=colours[scale],
                          label=f"{kind}, W_hh scale {scale:g}: gain {n['gain']:.2g} per step, "
                          f"{n['factor']:.1e} ({n['verdict']})")
        # The verdict's line is explained in the legend: any text beside it would sit on the dashed curves.
        left.axhline(diagnostics.VANISHING, color="#1f5f9e", ls=":", lw=1,
                     label=f"{diagnostics.VANISHING:g}: a net that ends below this line at t = 0 is 'vanishing'")
        left.set_xlabel("time step t (the loss reads the last one)")
        left.set_ylabel(f"‖δ_t‖ / ‖δ_{steps}‖, over the whole batch")
        left.set_title("Batch norm takes out the scale of W_hh, and still vanishes")
        left.legend(fontsize=7, loc="lower right", title=f"legend: median gain, ‖δ_0‖ / ‖δ_{steps}‖ (verdict)",
                    title_fontsize=7)

        dense = np.logspace(np.log10(ratios[0]), np.log10(ratios[-1]), 200)
        right.semilogx(dense, estimate(dense), "--", color="black", lw=1,
                       label="estimate ρ/√(1+ρ²) = γ_hh/√(γ_ih²+γ_hh²) (tanh linear; not a bound)")
        styles = {(label, batch): style for (label, batch), style in zip(ratio_sweep, (
            dict(marker="o", color="tab:purple", ls="-"), dict(marker="s", color="tab:purple", ls=":", mfc="none"),
            dict(marker="^", color="tab:orange", ls="-"), dict(marker="v", color="tab:orange", ls=":", mfc="none")))}
        for (label, batch), result in ratio_sweep.items():
            right.semilogx(ratios, result["gain"], ms=5, lw=1, label=f"{label}, batch {batch}",
                           **styles[(label, batch)])
        right.axhline(1.0, color="black", lw=0.8)
        threshold = diagnostics.VANISHING ** (1 / steps)
        right.axhline(threshold, color="#1f5f9e", ls=":", lw=1)
        right.annotate(f"{threshold:.2f}: a constant gain below it leaves < {diagnostics.VANISHING:g} after {steps} "
                       "steps", (ratios[0], threshold), xytext=(2, 3), textcoords="offset points", fontsize=7,
                       color="#1f5f9e")
        right.axvline(1.0, color="grey", lw=0.8)
        right.annotate(f"Cooijmans et al.: γ_ih = γ_hh = {PAPER_GAMMA:g}", (1.0, 1.2), xytext=(-4, 0),
                       textcoords="offset points", fontsize=7, color="0.3", ha="right")
        right.set_ylim(0, max(1.25, float(max(r["gain"].max() for r in ratio_sweep.values())) + 0.05))
        right.set_xlabel("ρ = γ_hh / γ_ih, the recurrent term's scale over the input term's")
        right.set_ylabel(f"median gain per step ({steps} steps × {seeds} runs)")
        right.set_title("The ratio of the two gammas sets the batch-norm cell's gain (W_hh scale 1)")
        right.legend(fontsize=7, loc="lower right")
        return lc.save_figure(fig, out, "07_batch_norm")


if __name__ == "__main__":
    main(**lc.command_line(__doc__))

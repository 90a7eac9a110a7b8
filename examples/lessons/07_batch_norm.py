"""Lesson 7, batch normalisation: a recurrent batch-norm cell (Cooijmans et al. 2016), which normalises
x W_ih^T and h W_hh^T separately with statistics per time step, against the plain tanh cell with the
same weights, for W_hh small, medium and large.

Each net reads 30 steps (4 features, batch 8, hidden size 8) and is scored on its last state. The
recurrent weights are N(0, s^2 / H) for s = 0.3, 1 and 3. The numbers are those of
``diagnostics.steps``. Batch statistics make every example's state depend on every other's, so a step
of the batch-norm cell is one map of the whole batch state: its bound is the spectral norm of that
(B H) x (B H) Jacobian (``bound_method`` "full"), not the largest over separate rows.

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


def pair(scale: float):
    """A plain tanh cell and a batch-norm cell (gamma 0.1) with the same weights, W_hh ~ N(0, scale^2 / H)."""
    plain = nn.RNNCell(INPUTS, HIDDEN, rng=1)
    nn.init.normal_(plain.weight_hh, 0.0, scale / np.sqrt(HIDDEN), rng=2)
    batch_norm = BNRNNCell(INPUTS, HIDDEN, max_steps=100, gamma=0.1, rng=1)
    batch_norm.load_state_dict({**batch_norm.state_dict(), **plain.state_dict()})
    return plain, batch_norm


def main(quick: bool = False, out=lc.DEFAULT_OUT) -> dict:
    timer = lc.Timer()
    steps = 8 if quick else 30
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(steps, BATCH, INPUTS))
    target = rng.normal(size=(BATCH, HIDDEN))
    # Not zeros: a zero state has zero batch variance, and normalising it would divide by sqrt(eps).
    h0 = 0.5 * rng.normal(size=(BATCH, HIDDEN))
    runs = {}
    for scale in SCALES:
        plain, batch_norm = pair(scale)
        for kind, cell in (("plain", plain), ("batch norm", batch_norm)):
            runs[(kind, scale)] = lc.unroll_to_last_state(cell, xs, target, h0=Value(h0, requires_grad=False))

    numbers = {key: {"factor": diagnostics.gradient_factor(rows)[0],
                     "gain": float(np.median([r.gain for r in rows[1:] if r.gain is not None])),
                     "methods": sorted({r.bound_method for r in rows[1:]})} for key, (_, _, rows) in runs.items()}
    shown = {f"{kind}, W_hh scale {scale:g}": runs[(kind, scale)][:2] for kind in ("plain", "batch norm")
             for scale in (SCALES[0], SCALES[-1])}
    picture = compare_steps(shown, per_row=15, title="Plain tanh cell against the recurrent batch-norm cell, "
                            "W_hh small and large; batch-norm bounds over the whole batch state")
    paths = lc.save_graph(picture, out, "07_batch_norm_steps") + _plot(runs, numbers, out)

    lines = [f"{kind:>10}, scale {scale:g}: median gain per step {n['gain']:.3g}, "
             f"||delta_0|| / ||delta_{steps}|| = {n['factor']:.2g}, bound computed by {', '.join(n['methods'])}"
             for (kind, scale), n in numbers.items()]
    print("\n".join(lines) + "\n")
    plain_gains = [numbers[("plain", s)]["gain"] for s in SCALES]
    bn_gains = [numbers[("batch norm", s)]["gain"] for s in SCALES]
    lc.say(
        f"In the plain cell what a step does to the gradient follows the scale of W_hh: median gains "
        f"{', '.join(f'{g:.2g}' for g in plain_gains)} for scales {', '.join(f'{s:g}' for s in SCALES)}, "
        "from vanishing to exploding. Batch norm divides h W_hh^T by its own standard deviation, so "
        "scaling W_hh changes nothing but the weight of eps in var + eps: the gains are "
        f"{', '.join(f'{g:.3g}' for g in bn_gains)}, and the three dashed curves lie on each other. What "
        "a step does to the gradient is set by gamma (0.1 here) and the data, no longer by the scale "
        "of the weights.",
        "The batch-norm cell's statistics couple the examples of a batch, so its step numbers are "
        "computed over the whole batch: diagnostics.steps tests every step for rows that mix (a random "
        "probe) and found them here ('full'); the plain cell's steps are computed row by row ('rows').",
    )
    lc.wrote(paths)
    print(f"({timer})")
    return {"numbers": numbers, "paths": paths}


def _plot(runs, numbers, out) -> list:
    colours = dict(zip(SCALES, ("tab:blue", "tab:green", "tab:red")))
    with lc.plot_style():
        fig = lc.figure(figsize=(8.5, 4))
        axes = fig.add_subplot()
        for (kind, scale), (_, _, rows) in runs.items():
            t = [r.t for r in rows if r.grad_norm]
            axes.semilogy(t, [r.grad_norm for r in rows if r.grad_norm], "-" if kind == "plain" else "--",
                          color=colours[scale], label=f"{kind}, W_hh scale {scale:g} "
                          f"(gain {numbers[(kind, scale)]['gain']:.2g} per step)")
        axes.set_xlabel("time step t (the loss reads the last one)")
        axes.set_ylabel("‖δ_t‖, over the whole batch")
        axes.set_title("Batch norm makes the gradient's fate independent of the scale of W_hh")
        axes.legend(fontsize=7)
        return lc.save_figure(fig, out, "07_batch_norm")


if __name__ == "__main__":
    main(**lc.command_line(__doc__))

"""Lesson 1, BPTT is a sum: a shared weight's gradient is one contribution per time step, and a small
gradient at the early steps can mean convergence or the vanishing gradient problem.

A tanh RNN reads 12 steps and is scored on its last state against a teacher: another RNN of the same
shape, with a long memory (W_hh orthogonal times 0.97), whose last state is the target. Its output
depends on the first inputs as well as the last ones, so a student that cannot feel the early steps
cannot learn the task.

1. Untying W_hh: step t gets its own copy W_hh^(t), a separate leaf holding the same numbers. The
   forward pass is unchanged, and dL/dW_hh^(t) is step t's contribution C_t. Their sum is compared with
   the W_hh.grad that backward computes for the shared weight.
2. The same contributions for an untrained student (PyTorch's default init) and for one near the
   minimum (the teacher's weights plus noise of 1e-3).

Run: python examples/lessons/01_bptt_sum.py [--quick] [--out DIR]
"""

from __future__ import annotations

import lessons_common as lc
import numpy as np

from tinygrad_rnn import Value, grad, nn
from tinygrad_rnn.autograd import scope

INPUTS, HIDDEN, BATCH = 2, 6, 32


def teacher(rng) -> nn.RNNCell:
    cell = nn.RNNCell(INPUTS, HIDDEN, rng=rng)
    nn.init.orthogonal_(cell.weight_hh, gain=0.97, rng=rng)  # forgets slowly: early inputs matter
    # Small inputs and no biases (a bias adds up over the steps like an input): tanh stays near linear.
    nn.init.normal_(cell.weight_ih, 0.0, 0.1, rng=rng)
    nn.init.zeros_(cell.bias_ih)
    nn.init.zeros_(cell.bias_hh)
    return cell


def tied_gradient(cell, xs, h0, target):
    """The library's own BPTT: one shared W_hh, its .grad from one backward pass; also ||dL/dh_t||."""
    for p in cell.parameters():
        p.grad = None
    outputs, _ = nn.RNN(cell)(xs, h0=Value(h0, requires_grad=False))
    loss = nn.mse_loss(outputs[-1], target)
    loss.backward()
    return loss.item(), np.array(cell.weight_hh.grad), [np.linalg.norm(h.grad) for h in outputs]


def untied_contributions(cell, xs, h0, target) -> list[np.ndarray]:
    """C_t = dL/dW_hh^(t) for t = 1..T, each step with its own copy of W_hh (the same numbers)."""
    copies = [Value(np.array(cell.weight_hh.data), name=f"W_hh^({t})") for t in range(1, len(xs) + 1)]
    weight_ih_t, bias = cell.weight_ih.T, cell.bias_ih + cell.bias_hh
    h = Value(h0, requires_grad=False)
    for t, (x, copy) in enumerate(zip(xs, copies), 1):
        with scope(f"t={t}"):
            h = cell.step((weight_ih_t, copy.T, bias), x, h)
    nn.mse_loss(h, target).backward()
    return [np.array(copy.grad) for copy in copies]


def main(quick: bool = False, out=lc.DEFAULT_OUT) -> dict:
    timer = lc.Timer()
    steps = 6 if quick else 12
    rng = np.random.default_rng(0)
    teach = teacher(rng)
    xs = rng.normal(size=(steps, BATCH, INPUTS))
    # A nonzero start: with h_0 = 0, step 1's contribution h_0-times-anything would be zero by construction.
    h0 = 0.1 * rng.normal(size=(BATCH, HIDDEN))
    target = np.array(nn.RNN(teach)(xs, h0=Value(h0, requires_grad=False))[0][-1].data)

    # How much the target depends on each input: ||dy/dx_t||, the Frobenius norm of the teacher's
    # Jacobian from x_t to its last state y (one backward pass per unit of y, summed over the batch).
    x_value = Value(xs, name="x")
    y = nn.RNN(teach)([x_value[t] for t in range(steps)], h0=Value(h0, requires_grad=False))[0][-1]
    squares = np.zeros(steps)
    for unit in range(HIDDEN):
        seed = np.zeros(y.shape)
        seed[:, unit] = 1.0
        (g,) = grad(y, [x_value], seed)
        squares += np.sum(np.asarray(g) ** 2, axis=(1, 2))
    sensitivity = np.sqrt(squares / BATCH)

    students = {"untrained (PyTorch's default init)": nn.RNNCell(INPUTS, HIDDEN, rng=1)}
    near = nn.RNNCell(INPUTS, HIDDEN, rng=1)
    near.load_state_dict({k: v + 1e-3 * rng.normal(size=v.shape) for k, v in teach.state_dict().items()})
    students["near the minimum (teacher + 1e-3 noise)"] = near

    runs = {}
    for label, cell in students.items():
        loss, shared, deltas = tied_gradient(cell, xs, h0, target)
        contributions = untied_contributions(cell, xs, h0, target)
        runs[label] = {"loss": loss, "grad": shared, "contributions": contributions, "deltas": deltas,
                       "error": float(np.max(np.abs(sum(contributions) - shared)))}
    untrained, near_min = runs.values()
    paths = _plot_sum(untrained, out) + _plot_compare(runs, sensitivity, out)

    norms = {label: [np.linalg.norm(c) for c in run["contributions"]] for label, run in runs.items()}
    u, n = norms.values()
    lc.say(
        f"Untying W_hh into {steps} copies changes nothing in the forward pass, and the copies' gradients "
        f"add up to the shared weight's gradient: the largest difference between sum_t C_t and W_hh.grad "
        f"is {untrained['error']:.1g} (untrained) and {near_min['error']:.1g} (near the minimum), "
        "rounding error. BPTT is ordinary backpropagation on the unrolled graph; a shared weight "
        "collects one term per step.",
        f"The task needs the early steps: the teacher's last state depends on the first input "
        f"{sensitivity[0] / sensitivity[-1]:.2g} times as much as on the last "
        f"(||dy/dx_1|| = {sensitivity[0]:.3g}, ||dy/dx_{steps}|| = {sensitivity[-1]:.3g}, Frobenius norms, "
        "root mean square over the batch).",
        f"Untrained, the loss is {untrained['loss']:.3g} and the contributions fall from {u[-1]:.3g} at "
        f"step {steps} to {u[0]:.3g} at step 1, a factor of {u[0] / u[-1]:.2g}: the early steps, which "
        "matter for the task, hardly move W_hh. That is the vanishing gradient problem: small early "
        "gradients while the loss is still high and the weights far from any minimum.",
        f"Near the minimum the loss is {near_min['loss']:.2g} and every contribution is small (largest "
        f"{max(n):.2g}); the early ones are {n[0] / n[-1]:.2g} times the last. A small gradient there "
        "is convergence: there is little left to learn, at any step.",
    )
    lc.wrote(paths)
    print(f"({timer})")
    return {"runs": runs, "sensitivity": sensitivity, "paths": paths}


def _plot_sum(run: dict, out) -> list:
    contributions, shared = run["contributions"], run["grad"]
    steps = len(contributions)
    scale = float(np.max(np.abs(shared)))
    with lc.plot_style():
        fig = lc.figure(figsize=(1.25 * (steps + 3), 2.6))
        panels = fig.subplots(1, steps + 2, gridspec_kw={"wspace": 0.05})
        for t, (axes, c) in enumerate(zip(panels, contributions), 1):
            image = axes.imshow(c, cmap="RdBu_r", vmin=-scale, vmax=scale)
            axes.set_title(f"C_{t}\n‖C‖ {np.linalg.norm(c):.1e}", fontsize=7)
        panels[-2].imshow(sum(contributions), cmap="RdBu_r", vmin=-scale, vmax=scale)
        panels[-2].set_title(f"Σ_t C_t\n‖Σ‖ {np.linalg.norm(sum(contributions)):.1e}", fontsize=7)
        panels[-1].imshow(shared, cmap="RdBu_r", vmin=-scale, vmax=scale)
        panels[-1].set_title("W_hh.grad\n(backward)", fontsize=7)
        for axes in panels:
            axes.set_xticks([])
            axes.set_yticks([])
            axes.grid(False)
        fig.colorbar(image, ax=list(panels), shrink=0.8, pad=0.01, label="entry of dL/dW_hh")
        fig.suptitle(f"Each step's contribution C_t = dL/dW_hh^(t) (untrained tanh RNN, loss at step {steps}): "
                     f"they add up to W_hh.grad, largest difference {run['error']:.1g}", fontsize=9)
        return lc.save_figure(fig, out, "01_bptt_sum")


def _plot_compare(runs: dict, sensitivity, out) -> list:
    with lc.plot_style():
        fig = lc.figure(figsize=(10, 3.8))
        shares, reach = fig.subplots(1, 2)
        for (label, run), colour in zip(runs.items(), ("crimson", "tab:blue")):
            t = np.arange(1, len(run["contributions"]) + 1)
            short = label.split(" (")[0]
            shares.semilogy(t, [np.linalg.norm(c) for c in run["contributions"]], ".-", color=colour,
                            label=f"{label}, loss {run['loss']:.2g}")
            reach.semilogy(t, run["deltas"], ".-", color=colour, label=f"{short}, loss {run['loss']:.2g}")
        reach.semilogy(np.arange(1, len(sensitivity) + 1), sensitivity, "--", color="grey",
                       label="teacher's ‖dy/dx_t‖: how much\nthe target depends on x_t")
        shares.set_title("each step's contribution to dL/dW_hh")
        shares.set_ylabel("‖C_t‖")
        reach.set_title("gradient reaching each step")
        reach.set_ylabel("‖dL/dh_t‖")
        for axes in (shares, reach):
            axes.set_xlabel("time step t")
        shares.legend(fontsize=7, loc="upper left")
        reach.legend(fontsize=7, loc="lower right")
        fig.suptitle("Small at the early steps: a problem while the loss is high, convergence near a minimum")
        return lc.save_figure(fig, out, "01_bptt_early_steps")


if __name__ == "__main__":
    main(**lc.command_line(__doc__))

"""Lesson 1, BPTT is a sum: a shared weight's gradient is one contribution per time step, and a small
gradient at the early steps can mean the vanishing gradient problem or convergence.

A tanh RNN reads 12 steps and is scored on its last state against a teacher: another RNN of the same
shape, with a long memory (W_hh orthogonal times 0.97), whose last state is the target. Its output
depends on the first inputs as well as the last ones, so a student that cannot feel the early steps
cannot learn the task. Both start from the same h_0: the untrained student's own state after 50
earlier inputs, of the size and kind of the states that follow it. (C_1 = sum_b dL/da_1 h_0^T is the
only contribution that multiplies h_0: a small h_0, or one unlike the student's states, would shrink
C_1 on its own and fake part of the drop at step 1.)

1. Untying W_hh: step t gets its own copy W_hh^(t), a separate leaf holding the same numbers. The
   forward pass is unchanged, and dL/dW_hh^(t) is step t's contribution C_t. Their sum is compared with
   the W_hh.grad that backward computes for the shared weight.
2. The same contributions for one student (PyTorch's default init) untrained and after training it
   with Adam to near the minimum: the same net, the same task, before and after.

Run: python examples/lessons/01_bptt_sum.py [--quick] [--out DIR]
"""

from __future__ import annotations

import lessons_common as lc
import numpy as np

from tinygrad_rnn import Value, grad, nn, optim
from tinygrad_rnn.autograd import scope
from tinygrad_rnn.replay import replay

INPUTS, HIDDEN, BATCH, WARMUP = 2, 6, 32, 50
LEARNING_RATE = 0.003  # Adam; larger rates reach the minimum's neighbourhood sooner but rattle around it


def teacher(rng) -> nn.RNNCell:
    cell = nn.RNNCell(INPUTS, HIDDEN, rng=rng)
    nn.init.orthogonal_(cell.weight_hh, gain=0.97, rng=rng)  # forgets slowly: early inputs matter
    # Small inputs and no biases (a bias adds up over the steps like an input): tanh stays near linear.
    nn.init.normal_(cell.weight_ih, 0.0, 0.1, rng=rng)
    nn.init.zeros_(cell.bias_ih)
    nn.init.zeros_(cell.bias_hh)
    return cell


def run_states(cell, xs, h0) -> list[np.ndarray]:
    """[h_0, h_1, ..., h_T] of ``cell`` over ``xs`` from ``h0``, as arrays."""
    _, states = nn.RNN(cell)(xs, h0=Value(h0, requires_grad=False), return_states=True)
    return [np.array(s.data) for s in states]


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


def input_sensitivity(cell, xs, h0) -> np.ndarray:
    """||dy/dx_t|| for t = 1..T: the Frobenius norm of the Jacobian from input x_t to the last state y,
    root mean square over the batch (one backward pass per unit of y)."""
    steps = len(xs)
    x_value = Value(xs, name="x")
    y = nn.RNN(cell)([x_value[t] for t in range(steps)], h0=Value(h0, requires_grad=False))[0][-1]
    squares = np.zeros(steps)
    for unit in range(HIDDEN):
        seed = np.zeros(y.shape)
        seed[:, unit] = 1.0
        (g,) = grad(y, [x_value], seed)
        squares += np.sum(np.asarray(g) ** 2, axis=(1, 2))
    return np.sqrt(squares / BATCH)


def train(cell, xs, h0, target, iterations: int, every: int) -> list[dict]:
    """Adam on the one batch; every ``every`` iterations a row: iteration, loss, ||C_1||, ||C_T||, the
    largest ||C_t||, and "memory", ||dy/dx_1|| / ||dy/dx_T||: how much the student's last state depends
    on the first input."""
    optimizer = optim.Adam(cell.parameters(), lr=LEARNING_RATE)

    def last_state_loss(inputs, start):
        outputs, _ = nn.RNN(cell)([inputs[t] for t in range(len(xs))], h0=start)
        return nn.mse_loss(outputs[-1], target)

    step = replay(last_state_loss)  # records the unrolled graph once, then replays it: same floats, faster
    history = []
    for i in range(iterations + 1):
        if i % every == 0:
            norms = [np.linalg.norm(c) for c in untied_contributions(cell, xs, h0, target)]
            loss = tied_gradient(cell, xs, h0, target)[0]
            sensitivity = input_sensitivity(cell, xs, h0)
            history.append({"iteration": i, "loss": loss, "first": norms[0], "last": norms[-1],
                            "largest": max(norms),
                            "memory": sensitivity[0] / sensitivity[-1]})
        if i < iterations:
            optimizer.zero_grad()
            step(xs, h0)
            optimizer.step()
    return history


def times(ratio: float) -> str:
    """A ratio to two significant digits, written out: 4,000 rather than 4e+03."""
    return f"{float(f'{ratio:.2g}'):,.0f}" if ratio >= 100 else f"{ratio:.2g}"


def rms(array) -> float:
    return float(np.sqrt(np.mean(np.square(array))))


def main(quick: bool = False, out=lc.DEFAULT_OUT) -> dict:
    timer = lc.Timer()
    # --quick trains nearly as long (the claims need the minimum; replayed, training is cheap), looks less often.
    steps, iterations, snapshots = (12, 3500, 20) if quick else (12, 5000, 100)
    rng = np.random.default_rng(0)
    teach = teacher(rng)
    xs = rng.normal(size=(steps, BATCH, INPUTS))
    warmup = rng.normal(size=(WARMUP, BATCH, INPUTS))
    student = nn.RNNCell(INPUTS, HIDDEN, rng=1)
    # h_0 is where the untrained student stands after 50 earlier inputs (see the docstring).
    h0 = run_states(student, warmup, np.zeros((BATCH, HIDDEN)))[-1]
    target = run_states(teach, xs, h0)[-1]
    teacher_sensitivity = input_sensitivity(teach, xs, h0)

    runs = {"untrained": measure(student, xs, h0, target)}
    history = train(student, xs, h0, target, iterations, every=iterations // snapshots)
    runs["trained"] = measure(student, xs, h0, target)
    untrained, trained = runs.values()
    paths = _plot_sum(untrained, out) + _plot_compare(runs, teacher_sensitivity, history, out)

    u, n = untrained["norms"], trained["norms"]
    shares = [u[t] / u[t + 1] for t in range(steps - 1)]  # C_t / C_t+1, t = 1..T-1
    reaching = [untrained["deltas"][t] / untrained["deltas"][t + 1] for t in range(steps - 1)]
    caught_up = next((row for row in history if row["first"] >= 0.1 * row["last"]), None)
    teacher_ratio = teacher_sensitivity[0] / teacher_sensitivity[-1]
    middle = history[len(history) // 2]
    student_sizes, trained_sizes = untrained["state_rms"][1:], trained["state_rms"][1:]
    lc.say(
        f"Untying W_hh into {steps} copies changes nothing in the forward pass, and the copies' gradients "
        f"add up to the shared weight's gradient: the largest difference between sum_t C_t and W_hh.grad "
        f"is {untrained['error']:.1g} (untrained) and {trained['error']:.1g} (trained), rounding error. "
        "BPTT is ordinary backpropagation on the unrolled graph; a shared weight collects one term per step.",
        f"The task needs the early steps: the teacher's last state depends on the first input "
        f"{teacher_ratio:.2g} times as much as on the last (||dy/dx_1|| = {teacher_sensitivity[0]:.3g}, "
        f"||dy/dx_{steps}|| = {teacher_sensitivity[-1]:.3g}, Frobenius norms, root mean square over the batch).",
        "C_t = sum over the batch of dL/da_t h_t-1^T: the gradient at step t's pre-activation times the state "
        f"the step read. h_0 is the untrained student's own state after {WARMUP} earlier inputs, RMS "
        f"{untrained['state_rms'][0]:.2f}, its h_1..h_{steps} {min(student_sizes):.2f} to "
        f"{max(student_sizes):.2f}, so C_1 is not made small by a small h_0. (After training the states are "
        f"{min(trained_sizes):.2f} to {max(trained_sizes):.2f}: for the trained student h_0 is the larger one.)",
        f"Untrained, the loss is {untrained['loss']:.3g} and the contributions fall from {u[-1]:.3g} at step "
        f"{steps} to {u[0]:.3g} at step 1, a factor of {u[0] / u[-1]:.2g}. Each is {min(shares):.2g} to "
        f"{max(shares):.2g} times the next one (C_1 / C_2 = {shares[0]:.2g}), as the gradient reaching each "
        f"step is {min(reaching):.2g} to {max(reaching):.2g} times the next. The early steps, which matter "
        "for the task, hardly move W_hh: the update is what the last few steps ask for. That is the "
        "vanishing gradient problem: small early gradients while the loss is still high.",
        f"Over these {steps} steps the student escaped the vanishing gradient: "
        + (f"by iteration {caught_up['iteration']} ||C_1|| was a tenth of ||C_{steps}|| or more, and its last "
           f"state depended on x_1 {caught_up['memory']:.2g} times as much as on x_{steps} (untrained: "
           f"{history[0]['memory']:.2g})."
           if caught_up is not None else "not within this run."),
        f"The same student after {iterations} Adam iterations: loss {trained['loss']:.2g}, every contribution "
        f"small (the largest {max(n):.2g}, against {max(u):.2g} untrained), the first {n[0] / n[-1]:.2g} times "
        f"the last. It has learnt what the task needs: on these sequences its last state depends on the first input "
        f"{trained['sensitivity'][0] / trained['sensitivity'][-1]:.2g} times as much as on the last (the "
        f"teacher: {teacher_ratio:.2g}). Here a small gradient at every step is convergence: there is little "
        "left to learn, at any step.",
        f"Small everywhere is not proof of a minimum, though: at iteration {middle['iteration']} the loss was "
        f"{middle['loss']:.2g}, {times(middle['loss'] / trained['loss'])} times the final one, and the largest "
        f"contribution {middle['largest']:.2g}. Here the minimum's loss is known, 0 (the teacher has the student's "
        "shape), and only the loss tells that plateau from it.",
    )
    lc.wrote(paths)
    print(f"({timer})")
    return {"runs": runs, "sensitivity": teacher_sensitivity, "history": history, "h0": h0, "xs": xs,
            "target": target, "teacher": teach.state_dict(), "paths": paths}


def measure(cell, xs, h0, target) -> dict:
    """Everything the lesson shows about one student at its current weights."""
    loss, shared, deltas = tied_gradient(cell, xs, h0, target)
    contributions = untied_contributions(cell, xs, h0, target)
    return {"loss": loss, "grad": shared, "contributions": contributions, "deltas": deltas,
            "norms": [float(np.linalg.norm(c)) for c in contributions],
            "error": float(np.max(np.abs(sum(contributions) - shared))),
            "sensitivity": input_sensitivity(cell, xs, h0),
            "state_rms": [rms(s) for s in run_states(cell, xs, h0)],
            "weights": cell.state_dict()}


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
        panels[-1].set_title(f"W_hh.grad\n‖·‖ {np.linalg.norm(shared):.1e}", fontsize=7)
        for axes in panels:
            axes.set_xticks([])
            axes.set_yticks([])
            axes.grid(False)
        fig.colorbar(image, ax=list(panels), shrink=0.8, pad=0.01, label="entry of dL/dW_hh")
        fig.suptitle(f"Each step's contribution C_t = dL/dW_hh^(t) (untrained tanh RNN, loss at step {steps}): "
                     f"they add up to W_hh.grad, largest difference {run['error']:.1g}", fontsize=9)
        return lc.save_figure(fig, out, "01_bptt_sum")


COLOURS = {"untrained": "crimson", "trained": "tab:blue"}


def _plot_compare(runs: dict, teacher_sensitivity, history, out) -> list:
    with lc.plot_style():
        fig = lc.figure(figsize=(11, 7))
        (shares, reach), (sizes, training) = fig.subplots(2, 2)
        for label, run in runs.items():
            t = np.arange(1, len(run["norms"]) + 1)
            name = f"{label}, loss {run['loss']:.2g}"
            shares.semilogy(t, run["norms"], ".-", color=COLOURS[label], label=name)
            reach.semilogy(t, run["deltas"], ".-", color=COLOURS[label], label=f"‖dL/dh_t‖, {label}")
            sizes.plot(np.arange(len(run["state_rms"])), run["state_rms"], ".-", color=COLOURS[label], label=label)
        t = np.arange(1, len(teacher_sensitivity) + 1)
        reach.semilogy(t, teacher_sensitivity, "--", color="grey", label="‖dy/dx_t‖, teacher: how much\n"
                       "the target depends on x_t")
        reach.semilogy(t, runs["trained"]["sensitivity"], "x", color="tab:blue", ms=6,
                       label="‖dy/dx_t‖, trained student")
        shares.set_title("each step's contribution to dL/dW_hh, one student before and after training")
        shares.set_ylabel("‖C_t‖")
        reach.set_title("gradient reaching each step; how much the last state depends on x_t")
        reach.set_ylabel("norm (log scale)")
        sizes.set_title("each state h_t, h_0 the initial one (C_t multiplies h_t−1)")
        sizes.set_ylabel("root mean square of h_t")
        sizes.set_ylim(0, None)
        for axes in (shares, reach, sizes):
            axes.set_xlabel("time step t")
        iterations = [row["iteration"] for row in history]
        steps = len(runs["trained"]["norms"])
        training.semilogy(iterations, [row["loss"] for row in history], color="black", lw=1.2, label="loss")
        training.semilogy(iterations, [row["last"] for row in history], color="tab:purple", lw=1.2,
                          label=f"‖C_{steps}‖, the last step")
        training.semilogy(iterations, [row["first"] for row in history], color="tab:orange", lw=1.2,
                          label="‖C_1‖, the first step")
        middle = history[len(history) // 2]
        training.plot(middle["iteration"], middle["loss"], "o", color="black", mfc="none", ms=7)
        training.annotate(f"a plateau: loss {middle['loss']:.2g},\nthe largest ‖C_t‖ {middle['largest']:.2g}",
                          (middle["iteration"], middle["loss"]), xytext=(-10, -40), textcoords="offset points",
                          fontsize=7, ha="right", arrowprops={"arrowstyle": "->", "lw": 0.7})
        training.set_title("while training (Adam): the first step's share catches up")
        training.set_xlabel("iteration")
        training.set_ylabel("loss; ‖C_t‖ (log scale)")
        shares.legend(fontsize=7, loc="lower right")
        reach.legend(fontsize=7, loc="lower right")
        sizes.legend(fontsize=7, loc="lower right")
        training.legend(fontsize=7, loc="upper right")
        fig.suptitle("Small at the early steps: a problem while the loss is high; small everywhere near a minimum: "
                     "convergence")
        return lc.save_figure(fig, out, "01_bptt_early_steps")


if __name__ == "__main__":
    main(**lc.command_line(__doc__))

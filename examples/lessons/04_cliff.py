"""Lesson 4, the cliff: Pascanu, Mikolov and Bengio's one-unit RNN, plain gradient descent thrown off a
wall in its loss surface, and the same descent with the gradient's norm clipped.

The model is x_t = w sigmoid(x_{t-1}) + b from x_0 = 0.5, with loss (x_T - 0.7)^2
(tinygrad_rnn.problems). Two runs start at the same (w, b) with the same learning rate; one clips the
gradient to norm 10 with clip_grad_norm_ before each step (the paper's Algorithm 1).

Run: python examples/lessons/04_cliff.py [--quick] [--out DIR]
"""

from __future__ import annotations

import math

import lessons_common as lc
import numpy as np

from tinygrad_rnn import Value, clip, optim
from tinygrad_rnn.problems import cliff_loss, cliff_loss_and_grad, cliff_loss_grid, cliff_states

# T = 15 steps rather than the paper's 50: the wall's width shrinks geometrically with T, and at 50 it
# is about 1e-6 wide, thinner than any grid can show (tests/test_cliff.py measures both).
STEPS, START, LEARNING_RATE, MAX_NORM = 15, (9.0, -3.0), 0.05, 10.0


def descend(iterations: int, max_norm: float | None) -> np.ndarray:
    """Rows (w, b, loss, gradient norm before clipping) per iteration of SGD on the cliff model."""
    w, b = Value(START[0], name="w"), Value(START[1], name="b")
    optimizer = optim.SGD([w, b], lr=LEARNING_RATE)
    rows = []
    for _ in range(iterations):
        loss = cliff_loss(w, b, steps=STEPS)
        optimizer.zero_grad()
        loss.backward()
        # With max_norm = inf nothing is scaled: the call only measures the norm.
        norm = clip.clip_grad_norm_([w, b], math.inf if max_norm is None else max_norm)
        rows.append((w.item(), b.item(), loss.item(), norm))
        optimizer.step()
    return np.array(rows)


def step_factors(w: float, b: float) -> np.ndarray:
    """dx_t/dx_t-1 = w sigmoid'(x_t-1) = w s (1 - s) for t = 1..T, from the recorded states."""
    xs = np.array([x.item() for x in cliff_states(w, b, steps=STEPS)[:-1]])
    s = 1.0 / (1.0 + np.exp(-xs))
    return w * s * (1.0 - s)


def main(quick: bool = False, out=lc.DEFAULT_OUT) -> dict:
    timer = lc.Timer()
    iterations, resolution = (60, 80) if quick else (150, 400)
    plain, clipped = descend(iterations, None), descend(iterations, MAX_NORM)
    jumps = np.hypot(*np.diff(plain[:, :2], axis=0).T)
    k = int(np.argmax(jumps))  # the iteration whose step was the catapult
    w_k, b_k, _, norm_k = plain[k]
    typical = float(np.median(plain[:k, 3]))
    start_factors, wall_factors = step_factors(*START), step_factors(w_k, b_k)
    back = next((i for i in range(k + 1, iterations) if plain[i, 2] <= plain[k, 2]), None)

    with lc.plot_style():
        fig = lc.figure(figsize=(12, 4.4))
        surface, section, history = fig.subplots(1, 3, width_ratios=(1.25, 1, 1))
        _draw_surface(surface, plain, clipped, k, resolution)
        _draw_section(section, w_k, b_k, plain[k + 1, :2] - plain[k, :2], resolution)
        history.semilogy(plain[:, 2], color="black", lw=1.2, label="plain SGD")
        history.semilogy(clipped[:, 2], color="crimson", lw=1.2, label=f"clip_grad_norm_ at {MAX_NORM:g}")
        history.axvline(k, color="grey", ls=":", lw=1)
        history.annotate(f"iteration {k}: ‖g‖ = {norm_k:.3g}", (k, plain[k, 2]), xytext=(8, 20),
                         textcoords="offset points", fontsize=8, arrowprops={"arrowstyle": "->", "lw": 0.7})
        history.set_xlabel("iteration")
        history.set_ylabel("loss (log scale)")
        history.set_title("loss per iteration")
        history.legend(loc="lower left")
        fig.suptitle(f"The cliff: x_t = w·σ(x_t−1) + b, T = {STEPS}, L = (x_T − 0.7)²; SGD lr {LEARNING_RATE:g} "
                     f"from (w, b) = {START}")
        paths = lc.save_figure(fig, out, "04_cliff")

    lc.say(
        f"Plain SGD walks downhill towards the wall for {k} iterations with gradient norms near {typical:.3g}. "
        f"At iteration {k}, at (w, b) = ({w_k:.3f}, {b_k:.3f}), it stands on the wall, where the gradient's "
        f"norm is {norm_k:.3g}: one step moves the parameters {jumps[k]:.1f} units, to "
        f"({plain[k + 1, 0]:.1f}, {plain[k + 1, 1]:.1f}), and the loss jumps from {plain[k, 2]:.3g} to "
        f"{plain[k + 1, 2]:.3g}.",
        f"The clipped run takes the same steps until its gradient exceeds norm {MAX_NORM:g}; there the step "
        f"keeps its direction but is at most {LEARNING_RATE * MAX_NORM:g} long, so it is never thrown: its "
        f"largest move is {np.hypot(*np.diff(clipped[:, :2], axis=0).T).max():.2f}, and it zig-zags down "
        f"along the wall to loss {clipped[-1, 2]:.3g} after {iterations} iterations.",
        "The thrown run lost everything it had learned: "
        + (f"its loss took until iteration {back} to come back to {plain[k, 2]:.3g}. " if back else
           "its loss never came back within the run. ")
        + f"(On this surface the place it landed happens to slope down to another minimum: it ends at "
        f"loss {plain[-1, 2]:.3g}.)",
        f"Why the wall: dx_T/dx_0 is the product of {STEPS} factors w·σ'(x_t-1). At the start, x_t sits on an "
        f"attractor and most are about {np.median(start_factors):.2g} (product {start_factors.prod():.1g}); on "
        f"the wall x_t lingers near the unstable fixed point between the two attractors, and all {STEPS} lie "
        f"between {wall_factors.min():.2f} and {wall_factors.max():.2f} (product {wall_factors.prod():.3g}). "
        "A little more b and x_T falls to the other attractor: the loss jumps, and its gradient is huge "
        "on the thin strip between.",
    )
    lc.wrote(paths)
    print(f"({timer})")
    return {"catapult_iteration": k, "catapult_norm": float(norm_k), "catapult_distance": float(jumps[k]),
            "clipped_max_move": float(np.hypot(*np.diff(clipped[:, :2], axis=0).T).max()),
            "final_loss_plain": float(plain[-1, 2]), "final_loss_clipped": float(clipped[-1, 2]), "paths": paths}


def _draw_surface(axes, plain, clipped, k, resolution):
    from matplotlib.colors import LogNorm

    ws, bs = np.linspace(2.0, 12.0, resolution), np.linspace(-7.0, 1.0, resolution)
    grid = cliff_loss_grid(ws, bs, steps=STEPS)
    mesh = axes.pcolormesh(ws, bs, grid, norm=LogNorm(1e-3, grid.max()), cmap="viridis", shading="auto",
                           rasterized=True)
    axes.figure.colorbar(mesh, ax=axes, label="loss", pad=0.01)
    axes.plot(plain[: k + 1, 0], plain[: k + 1, 1], ".-", color="white", lw=1, ms=3, label="plain SGD")
    landing = plain[k + 1, :2]
    # The landing point is far outside the view: an arrow towards it, labelled with where it is.
    axes.annotate("", xy=(11.9, 0.9), xytext=plain[k, :2],
                  arrowprops={"arrowstyle": "-|>", "color": "white", "lw": 1, "ls": "--"})
    axes.text(11.8, 0.5, f"iteration {k}: thrown to\n({landing[0]:.1f}, {landing[1]:.1f})", color="white",
              fontsize=8, ha="right", va="top")
    axes.plot(clipped[:, 0], clipped[:, 1], ".-", color="crimson", lw=1, ms=3, label="norm-clipped SGD")
    axes.plot(*START, "o", color="white", mec="black", ms=6)
    axes.set_xlim(ws[0], ws[-1])
    axes.set_ylim(bs[0], bs[-1])
    axes.set_xlabel("w")
    axes.set_ylabel("b")
    axes.set_title("loss over (w, b): the wall is the sharp edge")
    axes.legend(loc="lower left", facecolor="#444444", labelcolor="white", framealpha=0.8)


def _draw_section(axes, w_k, b_k, step, resolution):
    """The loss and the gradient's norm along the catapult step's line, through the point it left."""
    direction = step / np.hypot(*step)
    s = np.linspace(-1.0, 1.0, 4 * resolution + 1)
    ws, bs = w_k + s * direction[0], b_k + s * direction[1]
    losses, dw, db = cliff_loss_and_grad(ws, bs, steps=STEPS)
    axes.plot(s, losses, color="black", lw=1.2, label="loss")
    axes.set_xlabel("distance along the catapult step's direction (0: where it left)")
    axes.set_ylabel("loss")
    twin = axes.twinx()
    twin.semilogy(s, np.hypot(dw, db), color="tab:orange", lw=1, label="‖∇L‖ (log scale)")
    twin.set_ylabel("‖∇L‖", color="tab:orange")
    twin.grid(False)
    axes.set_title("a section through the wall")
    lines = axes.get_lines() + twin.get_lines()
    axes.legend(lines, [line.get_label() for line in lines], loc="upper left")


if __name__ == "__main__":
    main(**lc.command_line(__doc__))

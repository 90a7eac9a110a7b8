"""Lesson 4, the cliff: Pascanu, Mikolov and Bengio's one-unit RNN, plain gradient descent thrown off a
wall in its loss surface, and the same descent with the gradient's norm clipped.

The model is x_t = w sigmoid(x_{t-1}) + b from x_0 = 0.5, with loss (x_T - 0.7)^2
(tinygrad_rnn.problems). Two runs start at the same (w, b) with the same learning rate; one clips the
gradient to norm 20 (twice its usual size) with clip_grad_norm_ before each step (the paper's
Algorithm 1). Then the same pair from 400 starting points at nine learning rates: how often is a run
thrown, and where do the runs end? Last, how wide the wall is: the range of b, at fixed w, over which
x_T climbs from 10% to 90% of the way between the two attractors, found by bisection for T = 1..50.

Run: python examples/lessons/04_cliff.py [--quick] [--out DIR]
"""

from __future__ import annotations

import math

import lessons_common as lc
import numpy as np

from tinygrad_rnn import Value, clip, optim
from tinygrad_rnn.problems import (
    X0,
    cliff_loss,
    cliff_loss_and_grad,
    cliff_loss_grid,
    cliff_states,
    cliff_wall,
)

# T = 15 steps rather than the paper's 50: the wall narrows geometrically with T, and at 50 it is far
# thinner than any grid can show (the lesson measures it).
STEPS, PAPER_STEPS, START, LEARNING_RATE, MAX_NORM = 15, 50, (9.0, -3.0), 0.05, 20.0
THROWN = 10.0  # a run is thrown when its loss climbs above THROWN times the loss it started from
CONVERGED = 1e-3  # the loss a run must be below at the end to count as having arrived


def descend(iterations: int, max_norm: float | None, start=START, lr: float = LEARNING_RATE) -> np.ndarray:
    """Rows (w, b, loss, gradient norm before clipping) per iteration of SGD on the cliff model, with
    the library's optimiser and clip_grad_norm_."""
    w, b = Value(start[0], name="w"), Value(start[1], name="b")
    optimizer = optim.SGD([w, b], lr=lr)
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


def descend_many(w, b, lr: float, max_norm: float | None, iterations: int) -> np.ndarray:
    """The losses (iterations + 1, runs) of many independent SGD runs at once, one per start (w[i], b[i]).

    One backward pass over the whole array gives every run's gradient (the runs do not interact); each
    run's is then clipped on its own as clip_grad_norm_ would: g <- g min(1, max_norm / (||g|| + 1e-6))."""
    w, b = np.array(w, dtype=np.float64), np.array(b, dtype=np.float64)
    losses = []
    for _ in range(iterations + 1):
        loss, dw, db = cliff_loss_and_grad(w, b, steps=STEPS)
        losses.append(loss)
        scale = 1.0 if max_norm is None else np.minimum(1.0, max_norm / (np.hypot(dw, db) + 1e-6))
        w, b = w - lr * scale * dw, b - lr * scale * db
    return np.array(losses)


def starting_points(per_side: int) -> tuple[np.ndarray, np.ndarray]:
    """A grid of starts above the wall: w from 4.5 to 12, b from 0.5 to 3 above the wall's line
    b = x_0 - w sigmoid(x_0) (where it lies for long runs), so every run walks down towards it."""
    grid_w, above = np.meshgrid(np.linspace(4.5, 12.0, per_side), np.linspace(0.5, 3.0, per_side))
    w = grid_w.ravel()
    return w, X0 - w / (1 + np.exp(-X0)) + above.ravel()


def sweep(learning_rates, per_side: int, iterations: int) -> dict:
    """Per method ("plain", "clipped"): for every learning rate the share of runs thrown, how many of
    those ended below where they started, the share below CONVERGED at the end, the median final loss
    and the worst loss over the start."""
    w, b = starting_points(per_side)
    result = {}
    for method, max_norm in (("plain", None), ("clipped", MAX_NORM)):
        rows = []
        for lr in learning_rates:
            losses = descend_many(w, b, lr, max_norm, iterations)
            worst = np.max(losses[1:] / losses[0], axis=0)
            thrown = worst > THROWN
            rows.append({"lr": lr, "thrown": float(np.mean(thrown)), "thrown_runs": int(thrown.sum()),
                         "thrown_back": int(np.sum(thrown & (losses[-1] < losses[0]))),
                         "converged": float(np.mean(losses[-1] < CONVERGED)),
                         "median": float(np.median(losses[-1])), "worst": float(worst.max())})
        result[method] = rows
    return {"runs": len(w), "iterations": iterations, **result}


def step_factors(w: float, b: float) -> np.ndarray:
    """dx_t/dx_t-1 = w sigmoid'(x_t-1) = w s (1 - s) for t = 1..T, from the recorded states."""
    xs = np.array([x.item() for x in cliff_states(w, b, steps=STEPS)[:-1]])
    s = 1.0 / (1.0 + np.exp(-xs))
    return w * s * (1.0 - s)


def wall_widths(w: float, steps) -> np.ndarray:
    return np.array([cliff_wall(w, int(t))["width"] for t in steps])


def main(quick: bool = False, out=lc.DEFAULT_OUT) -> dict:
    timer = lc.Timer()
    iterations, resolution, per_side, rates = (60, 80, 8, 4) if quick else (150, 400, 20, 9)
    plain, clipped = descend(iterations, None), descend(iterations, MAX_NORM)
    jumps = np.hypot(*np.diff(plain[:, :2], axis=0).T)
    k = int(np.argmax(jumps))  # the iteration whose step was the catapult
    w_k, b_k, _, norm_k = map(float, plain[k])
    typical = float(np.median(plain[:k, 3]))
    start_factors, wall_factors = step_factors(*START), step_factors(w_k, b_k)
    back = next((i for i in range(k + 1, iterations) if plain[i, 2] <= plain[k, 2]), None)
    first_clip = int(np.argmax(clipped[:, 3] > MAX_NORM))
    same_until = int(np.argmax(np.any(plain[:, :2] != clipped[:, :2], axis=1)))
    clipped_moves = np.hypot(*np.diff(clipped[:, :2], axis=0).T)

    many = sweep(np.geomspace(0.005, 0.2, rates), per_side, iterations)
    lengths = np.arange(1, PAPER_STEPS + 1)
    walls = {w: {"lambda": cliff_wall(w, 1)["lambda_"], "widths": wall_widths(w, lengths)} for w in (w_k, 8.0)}

    with lc.plot_style():
        fig = lc.figure(figsize=(12, 9))
        (surface, section), (widths, shares) = fig.subplots(2, 2, width_ratios=(1.2, 1))
        _draw_surface(surface, plain, clipped, k, resolution)
        _draw_section(section, w_k, b_k, plain[k + 1, :2] - plain[k, :2], resolution)
        _draw_widths(widths, lengths, walls, w_k)
        _draw_shares(shares, many)
        fig.suptitle(f"The cliff: x_t = w·σ(x_t−1) + b, x_0 = {X0:g}, L = (x_T − 0.7)², T = {STEPS} "
                     f"(bottom left: T = 1 to {PAPER_STEPS})")
        paths = lc.save_figure(fig, out, "04_cliff")

    plain_rows, clipped_rows = many["plain"], many["clipped"]
    most = max(plain_rows, key=lambda row: row["thrown"])
    at_lesson_rate = min(range(rates), key=lambda i: abs(math.log(plain_rows[i]["lr"] / LEARNING_RATE)))
    near, far = walls[w_k], walls[8.0]
    lc.say(
        f"Plain SGD walks downhill towards the wall for {k} iterations with gradient norms near {typical:.3g}. "
        f"At iteration {k}, at (w, b) = ({w_k:.3f}, {b_k:.3f}), it stands on the wall, where the gradient's "
        f"norm is {norm_k:.3g}: one step moves the parameters {jumps[k]:.1f} units, to "
        f"({plain[k + 1, 0]:.1f}, {plain[k + 1, 1]:.1f}), and the loss jumps from {plain[k, 2]:.3g} to "
        f"{number(plain[k + 1, 2])}.",
        f"The clipped run is the plain run until iteration {first_clip}, where its gradient's norm first "
        f"exceeds {MAX_NORM:g}; from there on, a step keeps its direction but is at most "
        f"{LEARNING_RATE * MAX_NORM:g} long, so it is never thrown: its largest move is "
        f"{clipped_moves.max():.2f}, and it zig-zags down along the wall to loss {clipped[-1, 2]:.3g} after "
        f"{iterations} iterations.",
        ("The thrown run lost all it had gained (it started at loss " if plain[k + 1, 2] > plain[0, 2] else
         "The thrown run lost much of what it had gained (it started at loss ")
        + f"{plain[0, 2]:.3g}): "
        + (f"its loss took until iteration {back} to come back to {plain[k, 2]:.3g}. " if back else
           "its loss never came back within the run. ")
        + f"Then it slid down elsewhere, far outside the picture: it ends at (w, b) = ({plain[-1, 0]:.2f}, "
        f"{plain[-1, 1]:.2f}), loss {plain[-1, 2]:.3g}, "
        + ("lower" if plain[-1, 2] < clipped[-1, 2] else "higher") + " than the clipped run's.",
        f"So one run proves little. From {many['runs']} starting points above the wall, at {rates} learning "
        f"rates from {plain_rows[0]['lr']:g} to {plain_rows[-1]['lr']:g}, {iterations} iterations each: plain "
        f"SGD is thrown (its loss climbs above {THROWN:g} times where it started) in up to "
        f"{100 * most['thrown']:.0f}% of the runs (at lr {most['lr']:.2g}), clipped SGD in "
        f"{100 * max(row['thrown'] for row in clipped_rows):.0f}%: its worst loss is "
        f"{max(row['worst'] for row in clipped_rows):.2g} times its start, against "
        f"{times(max(row['worst'] for row in plain_rows))} for plain SGD.",
        f"But on this surface thrown runs can come back: of the {sum(row['thrown_runs'] for row in plain_rows)} "
        f"throws (all rates together), {sum(row['thrown_back'] for row in plain_rows)} end below where they "
        "started. And at the end plain SGD is below "
        f"{CONVERGED:g} in {share_range(plain_rows)} of the runs, clipped SGD in {share_range(clipped_rows)} "
        f"(at lr {plain_rows[at_lesson_rate]['lr']:.2g}: {100 * plain_rows[at_lesson_rate]['converged']:.0f}% "
        f"against {100 * clipped_rows[at_lesson_rate]['converged']:.0f}%). Clipping takes away the catapult, not "
        "the cliff" + ("; on this surface it does not speed the descent up: at every rate plain SGD ends below "
                       f"{CONVERGED:g} about as often (within 1% of the runs) or more often."
                       if plain_arrives_as_often(many) else "."),
        f"Why the wall: dx_T/dx_0 is the product of {STEPS} factors w·σ'(x_t-1). At the start, x_t sits on an "
        f"attractor and most are about {np.median(start_factors):.2g} (product {start_factors.prod():.1g}); on "
        f"the wall x_t lingers near the unstable fixed point between the two attractors, and all {STEPS} lie "
        f"between {wall_factors.min():.2f} and {wall_factors.max():.2f} (product {wall_factors.prod():.3g}). "
        "A little more b and x_T falls to the other attractor: the loss jumps, and its gradient is huge "
        "on the thin strip between.",
        "How thin: the range of b, at fixed w, over which x_T climbs from 10% to 90% of the way between the "
        f"two attractors (bisection in b). At w = {w_k:.3f}, where SGD met the wall, it is "
        f"{near['widths'][STEPS - 1]:.2g} for T = {STEPS} and {near['widths'][-1]:.2g} for T = {PAPER_STEPS}; "
        f"at w = 8, {far['widths'][STEPS - 1]:.2g} and {far['widths'][-1]:.2g}. Each step divides it by about "
        f"lambda = w σ'(x_0) ({near['lambda']:.2f} and {far['lambda']:.2f}): for long runs x_0 itself is the "
        "unstable fixed point on the wall, and every step multiplies a distance from it by lambda.",
    )
    lc.wrote(paths)
    print(f"({timer})")
    return {"catapult_iteration": k, "catapult_norm": float(norm_k), "catapult_distance": float(jumps[k]),
            "clipped_max_move": float(clipped_moves.max()), "first_clip": first_clip, "same_until": same_until,
            "final_loss_plain": float(plain[-1, 2]), "final_loss_clipped": float(clipped[-1, 2]),
            "catapult_point": (float(w_k), float(b_k)), "many": many, "walls": walls, "paths": paths}


def number(value: float) -> str:
    """Three significant digits, written out from 1,000 on: 1,650 rather than 1.65e+03."""
    return f"{float(f'{value:.3g}'):,.0f}" if value >= 1000 else f"{value:.3g}"


def times(ratio: float) -> str:
    """A ratio to two significant digits, written out: 2,000,000 rather than 2e+06."""
    return f"{float(f'{ratio:.2g}'):,.0f}" if ratio >= 100 else f"{ratio:.2g}"


def plain_arrives_as_often(many: dict) -> bool:
    """Whether at every learning rate plain SGD ends below CONVERGED in at least as many runs as the
    clipped one, give or take 1% of the runs."""
    return all(p["converged"] >= c["converged"] - 0.01 for p, c in zip(many["plain"], many["clipped"]))


def share_range(rows) -> str:
    low, high = min(row["converged"] for row in rows), max(row["converged"] for row in rows)
    return f"{100 * low:.0f}% to {100 * high:.0f}%"


def _draw_surface(axes, plain, clipped, k, resolution):
    from matplotlib.colors import LogNorm

    ws, bs = np.linspace(2.0, 12.0, resolution), np.linspace(-7.0, 1.0, resolution)
    grid = cliff_loss_grid(ws, bs, steps=STEPS)
    mesh = axes.pcolormesh(ws, bs, grid, norm=LogNorm(1e-3, grid.max()), cmap="viridis", shading="auto",
                           rasterized=True)
    axes.figure.colorbar(mesh, ax=axes, label="loss", pad=0.01)
    # The clipped run first: until its first clip it is the plain run, which is drawn over it.
    axes.plot(clipped[:, 0], clipped[:, 1], ".-", color="crimson", lw=1, ms=3,
              label=f"clip_grad_norm_ at {MAX_NORM:g}")
    axes.plot(plain[: k + 1, 0], plain[: k + 1, 1], ".-", color="white", lw=1, ms=3, label="plain SGD")
    landing = plain[k + 1, :2]
    # The landing point is far outside the view: an arrow towards it, labelled with where it is.
    axes.annotate("", xy=(11.9, 0.9), xytext=plain[k, :2],
                  arrowprops={"arrowstyle": "-|>", "color": "white", "lw": 1, "ls": "--"})
    axes.text(11.8, 0.5, f"iteration {k}: thrown to\n({landing[0]:.1f}, {landing[1]:.1f})", color="white",
              fontsize=8, ha="right", va="top")
    axes.plot(*START, "o", color="white", mec="black", ms=6, label=f"start {START}, lr {LEARNING_RATE:g}")
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


def _draw_widths(axes, lengths, walls, w_k):
    for (w, wall), colour in zip(walls.items(), ("crimson", "tab:blue")):
        widths, slope = wall["widths"], wall["lambda"]
        axes.semilogy(lengths, widths, ".", color=colour, ms=4,
                      label=f"w = {w:.4g}{' (where SGD met it)' if w == w_k else ''}: bisection")
        # The hand-derived rate through the last point: the width shrinks by lambda per step.
        axes.semilogy(lengths, widths[-1] * slope ** (lengths[-1] - lengths), "--", color=colour, lw=0.8,
                      label=rf"$\propto \lambda^{{-T}}$, λ = w·σ′(x_0) = {slope:.2f}")
    axes.axvline(STEPS, color="grey", ls=":", lw=1)
    axes.text(STEPS + 0.7, axes.get_ylim()[1] / 3, f"T = {STEPS},\ndrawn above", fontsize=8, color="grey", va="top")
    axes.set_xlabel("T, the number of steps")
    axes.set_ylabel("width of the wall in b (log scale)")
    axes.set_title("how wide the wall is: the b over which x_T climbs\n10% to 90% of the way between the attractors")
    axes.legend(loc="lower left")


def _draw_shares(axes, many):
    for method, colour in (("plain", "black"), ("clipped", "crimson")):
        rows = many[method]
        rates = [row["lr"] for row in rows]
        name = "plain" if method == "plain" else f"clipped at {MAX_NORM:g}"
        axes.semilogx(rates, [100 * row["thrown"] for row in rows], "o-", color=colour, ms=4,
                      label=f"{name}: thrown, loss > {THROWN:g}× its start")
        axes.semilogx(rates, [100 * row["converged"] for row in rows], "s--", color=colour, ms=4, mfc="none",
                      label=f"{name}: loss < {CONVERGED:g} at iteration {many['iterations']}")
    axes.set_ylim(-3, 103)
    axes.set_xlabel("learning rate")
    axes.set_ylabel(f"% of the {many['runs']} runs")
    # The second line says what the dashed lines show, whichever way they fall.
    arrivals = (f"yet plain SGD ends below {CONVERGED:g} about as often or more (dashed)"
                if plain_arrives_as_often(many) else f"and how many end below {CONVERGED:g} (dashed)")
    axes.set_title(f"{many['runs']} starts above the wall (T = {STEPS}): clipping stops the throws (solid),\n"
                   + arrivals)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=7)


if __name__ == "__main__":
    main(**lc.command_line(__doc__))

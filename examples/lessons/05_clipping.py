"""Lesson 5, clipping by value against clipping by norm: what each does to the gradient's direction,
per time step with a hook, and globally with clip_grad_value_ and clip_grad_norm_.

An exploding tanh RNN (W_hh orthogonal times 1.5, small inputs, one loss at the last step) is run once
without clipping; its gradient is the reference. Then the same forward pass is backpropagated with a
clip hook on every h_t (``RNN(cell, hidden_hook=clip_value(c))`` or ``clip_norm(c)``), and the
unclipped parameter gradient is clipped after backward (``clip_grad_value_``, ``clip_grad_norm_``).
Each result is compared with the reference by the cosine of the angle between them: 1 means the same
direction, whatever the length.

Run: python examples/lessons/05_clipping.py [--quick] [--out DIR]
"""

from __future__ import annotations

import lessons_common as lc
import numpy as np

from tinygrad_rnn import clip, nn


def make_problem(steps: int, hidden: int, batch: int = 8, inputs: int = 4):
    rng = np.random.default_rng(0)
    cell = nn.RNNCell(inputs, hidden, rng=rng)
    nn.init.orthogonal_(cell.weight_hh, gain=1.5, rng=rng)  # every singular value 1.5
    xs = 0.1 * rng.normal(size=(steps, batch, inputs))
    target = rng.normal(size=(batch, hidden))
    return cell, xs, target


def backward(cell, xs, target, hook=None):
    """One forward and backward pass; returns (the parameter gradient as one vector, [dL/dh_t for t = 1..T])."""
    for p in cell.parameters():
        p.grad = None
    outputs, _ = nn.RNN(cell, hidden_hook=hook)(xs)
    nn.mse_loss(outputs[-1], target).backward()
    return flat_grad(cell), [np.asarray(h.grad) for h in outputs]


def flat_grad(cell) -> np.ndarray:
    return np.concatenate([np.ravel(p.grad) for p in cell.parameters()])


def cosine(a, b) -> float:
    return float(np.dot(np.ravel(a), np.ravel(b)) / (np.linalg.norm(a) * np.linalg.norm(b)))


def main(quick: bool = False, out=lc.DEFAULT_OUT) -> dict:
    timer = lc.Timer()
    steps, hidden, points = (12, 8, 6) if quick else (40, 16, 25)
    cell, xs, target = make_problem(steps, hidden)
    reference, deltas = backward(cell, xs, target)
    norms = [np.linalg.norm(d) for d in deltas]
    largest_norm, largest_element = max(norms), max(np.abs(d).max() for d in deltas)

    # Per time step: a hook on every h_t, at a threshold the last step's gradient stays under.
    step_norm = 2.0 * norms[-1]
    step_value = step_norm / np.sqrt(deltas[-1].size)  # the same bound if all elements were equal
    _, by_norm = backward(cell, xs, target, clip.clip_norm(step_norm))
    _, by_value = backward(cell, xs, target, clip.clip_value(step_value))
    per_step = {"clip_norm hook": [cosine(c, d) for c, d in zip(by_norm, deltas)],
                "clip_value hook": [cosine(c, d) for c, d in zip(by_value, deltas)]}

    # The whole parameter gradient, thresholds as a fraction of what the unclipped gradient has.
    fractions = np.logspace(-3, 0, points)
    sweep = {name: [] for name in ("clip_grad_norm_", "clip_grad_value_", "clip_norm hook", "clip_value hook")}
    for f in fractions:
        for p, g in zip(cell.parameters(), split(reference, cell)):
            p.grad = g
        clip.clip_grad_norm_(cell.parameters(), f * np.linalg.norm(reference))
        sweep["clip_grad_norm_"].append(cosine(flat_grad(cell), reference))
        for p, g in zip(cell.parameters(), split(reference, cell)):
            p.grad = g
        clip.clip_grad_value_(cell.parameters(), f * np.abs(reference).max())
        sweep["clip_grad_value_"].append(cosine(flat_grad(cell), reference))
        sweep["clip_norm hook"].append(cosine(backward(cell, xs, target, clip.clip_norm(f * largest_norm))[0],
                                              reference))
        sweep["clip_value hook"].append(cosine(backward(cell, xs, target, clip.clip_value(f * largest_element))[0],
                                               reference))

    paths = _plot(norms, by_norm, by_value, per_step, fractions, sweep, step_norm, out)
    at = int(np.argmin(np.abs(fractions - 0.1)))
    lc.say(
        f"Without clipping, ||dL/dh_t|| grows from {norms[-1]:.3g} at the last step to {norms[0]:.3g} at the "
        f"first: each step back multiplies it by up to 1.5.",
        f"Per time step, with a hook on every h_t at {step_norm:.3g}: clip_norm rescales dL/dh_t and keeps "
        f"its direction, so with one loss at the end every step's gradient points exactly where the "
        f"unclipped one did (every cosine is 1 to within "
        f"{max(abs(1 - c) for c in per_step['clip_norm hook']):.1g}). clip_value, at {step_value:.3g} per "
        f"element, cuts the large elements and not the small ones: the cosine falls to "
        f"{min(per_step['clip_value hook']):.3f}, and the bend is carried back to every earlier step.",
        f"For the whole parameter gradient, at thresholds one tenth of the unclipped gradient's size: "
        f"clip_grad_norm_ keeps the direction (cosine {sweep['clip_grad_norm_'][at]:.4f}), clip_grad_value_ "
        f"turns it (cosine {sweep['clip_grad_value_'][at]:.3f}). The per-step norm hook is not a global "
        f"rescaling: it shrinks the early steps' shares more than the late ones', so it turns the update "
        f"too (cosine {sweep['clip_norm hook'][at]:.3f}); the per-step value hook gives "
        f"{sweep['clip_value hook'][at]:.3f}. Pascanu's Algorithm 1 is the global norm clip: "
        "only it keeps the direction of the update.",
    )
    lc.wrote(paths)
    print(f"({timer})")
    return {"per_step": per_step, "fractions": fractions, "sweep": sweep, "norms": norms, "paths": paths}


def split(vector: np.ndarray, cell) -> list:
    """The pieces of a flat gradient, one array per parameter (copies: clipping must not change the reference)."""
    pieces, start = [], 0
    for p in cell.parameters():
        pieces.append(vector[start : start + p.size].reshape(p.shape).copy())
        start += p.size
    return pieces


def _plot(norms, by_norm, by_value, per_step, fractions, sweep, step_norm, out) -> list:
    t = np.arange(1, len(norms) + 1)
    styles = {"clip_grad_norm_": ("black", "-"), "clip_grad_value_": ("crimson", "-"),
              "clip_norm hook": ("black", "--"), "clip_value hook": ("crimson", "--")}
    with lc.plot_style():
        fig = lc.figure(figsize=(12, 3.8))
        sizes, turns, overall = fig.subplots(1, 3)
        sizes.semilogy(t, norms, color="grey", lw=2, label="no clipping")
        sizes.semilogy(t, [np.linalg.norm(d) for d in by_norm], "--", color="black",
                       label=f"clip_norm({step_norm:.2g}) hook")
        sizes.semilogy(t, [np.linalg.norm(d) for d in by_value], "--", color="crimson", label="clip_value hook")
        sizes.set_xlabel("time step t")
        sizes.set_ylabel("‖dL/dh_t‖")
        sizes.set_title("gradient reaching each step")
        sizes.legend()
        for name, values in per_step.items():
            colour, line = styles[name]
            turns.plot(t, values, line, color=colour, label=name, marker=".")
        turns.set_xlabel("time step t")
        turns.set_ylabel("cosine to the unclipped dL/dh_t")
        turns.set_title("direction at each step (hooks)")
        turns.legend(loc="center right")
        for name, values in sweep.items():
            colour, line = styles[name]
            overall.semilogx(fractions, values, line, color=colour, label=name, marker=".")
        overall.set_xlabel("threshold / size of the unclipped gradient\n"
                           "(norm for *_norm*, largest |element| for *_value*)")
        overall.set_ylabel("cosine to the unclipped ∇L")
        overall.set_title("direction of the whole parameter gradient")
        overall.legend(loc="lower right")
        fig.suptitle("Clipping by value bends the gradient; clipping the global norm only shortens it")
        return lc.save_figure(fig, out, "05_clipping")


if __name__ == "__main__":
    main(**lc.command_line(__doc__))

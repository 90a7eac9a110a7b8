"""Lesson 5, clipping by value against clipping by norm: what each does to the gradient's direction,
per time step with a hook, and globally with clip_grad_value_ and clip_grad_norm_.

The example explodes through time with bounded activations. A tanh RNN whose W_hh has random entries of
standard deviation g / sqrt(H), g = 2, driven by inputs of size 1, one loss at the last step:

    h_t = tanh(x_t W_ih^T + b + h_{t-1} W_hh^T),    L = mean((h_T - target)^2),
    dL/dh_{t-1} = (dL/dh_t * (1 - h_t^2)) W_hh.

tanh keeps every |h_t| below 1, and the states do not grow: after the first few steps their mean size
stays where it is (about 0.7). Yet the gradient grows by orders of magnitude on its way back (2e4 over
60 steps): ||W_hh||_2 is about 2g = 4, far above Pascanu et al.'s (2013) necessary condition
||W_hh||_2 > 1/gamma (gamma = 1 bounds tanh'), and tanh' stays large enough (about 0.45 on average)
for the product of the step Jacobians to grow. The condition is necessary, not sufficient:
W_hh = 1.5 x orthogonal with inputs of 0.1 also meets it, but its states grow until tanh' undoes
W_hh's stretch, and its gradient only grows a few dozen times (diagnostics.verdict: "stable").

The run without clipping is the reference. Then the same forward pass is backpropagated with a clip
hook on every h_t (``RNN(cell, hidden_hook=clip_value(c))`` or ``clip_norm(c)``), and the unclipped
parameter gradient is clipped after backward (``clip_grad_value_``, ``clip_grad_norm_``). Each result
is compared with the reference by the cosine of the angle between them: 1 means the same direction,
whatever the length.

Run: python examples/lessons/05_clipping.py [--quick] [--out DIR]
"""

from __future__ import annotations

import lessons_common as lc
import numpy as np

from tinygrad_rnn import Value, clip, diagnostics, nn

GAIN = 2.0  # W_hh's entries have standard deviation GAIN / sqrt(hidden)
SETTLED = 5  # from this step on, the states' mean size has settled (the lesson prints its range)


def make_problem(steps: int, hidden: int, batch: int = 8, inputs: int = 4, seed: int = 0):
    """(cell, xs, target): the exploding tanh RNN of the module docstring, inputs of size 1."""
    rng = np.random.default_rng(seed)
    cell = nn.RNNCell(inputs, hidden, rng=rng)
    nn.init.normal_(cell.weight_hh, 0.0, GAIN / np.sqrt(hidden), rng=rng)
    xs = rng.normal(size=(steps, batch, inputs))
    target = rng.normal(size=(batch, hidden))
    return cell, xs, target


def make_saturating_problem(steps: int, hidden: int, batch: int = 8, inputs: int = 4):
    """The same shapes with W_hh = 1.5 x orthogonal and inputs of 0.1: ||W_hh||_2 = 1.5 > 1 too."""
    rng = np.random.default_rng(0)
    cell = nn.RNNCell(inputs, hidden, rng=rng)
    nn.init.orthogonal_(cell.weight_hh, gain=1.5, rng=rng)
    xs = 0.1 * rng.normal(size=(steps, batch, inputs))
    target = rng.normal(size=(batch, hidden))
    return cell, xs, target


def backward(cell, xs, target, hook=None):
    """One forward and backward pass from h_0 = 0, the hook (if any) on every state h_0..h_T.

    Returns (the parameter gradient as one vector, [dL/dh_t for t = 0..T], [h_t for t = 0..T], loss,
    states): dL/dh_t is the gradient that flowed on from h_t, after the hook."""
    for p in cell.parameters():
        p.grad = None
    h0 = Value(np.zeros((xs.shape[1], cell.hidden_size)), name="h0")  # needs a gradient: delta_0 is kept
    if hook is not None:
        h0.register_hook(hook)
    outputs, states = nn.RNN(cell, hidden_hook=hook)(xs, h0=h0, return_states=True)
    loss = nn.mse_loss(outputs[-1], target)
    loss.backward()
    return (flat_grad(cell), [np.asarray(h.grad) for h in states], [np.asarray(h.data) for h in states],
            loss, states)


def flat_grad(cell) -> np.ndarray:
    return np.concatenate([np.ravel(p.grad) for p in cell.parameters()])


def cosine(a, b) -> float:
    return float(np.dot(np.ravel(a), np.ravel(b)) / (np.linalg.norm(a) * np.linalg.norm(b)))


def explosion(cell, xs, target) -> dict:
    """The project's own numbers for one unclipped run: the verdict of diagnostics.steps, the factor
    ||delta_0|| / ||delta_T||, and how large the states got."""
    _, deltas, hs, loss, states = backward(cell, xs, target)
    rows = diagnostics.steps(loss, states)
    factor, _, _ = diagnostics.gradient_factor(rows)
    return {"verdict": diagnostics.verdict(rows), "factor": factor, "norms": [np.linalg.norm(d) for d in deltas],
            "max_abs_h": float(max(np.abs(h).max() for h in hs[1:])),
            "max_abs_h_t": [float(np.abs(h).max()) for h in hs],
            "mean_abs_h": [float(np.abs(h).mean()) for h in hs],
            "mean_tanh_derivative": [float((1 - h**2).mean()) for h in hs],
            "spectral_norm_w_hh": float(np.linalg.norm(cell.weight_hh.data, 2))}


def main(quick: bool = False, out=lc.DEFAULT_OUT) -> dict:
    timer = lc.Timer()
    steps, hidden, points = (60, 32, 6) if quick else (60, 32, 25)
    cell, xs, target = make_problem(steps, hidden)
    run = explosion(cell, xs, target)
    saturating = explosion(*make_saturating_problem(steps, hidden))
    reference, deltas, _, _, _ = backward(cell, xs, target)
    norms = run["norms"]
    largest_norm, largest_element = max(norms), max(np.abs(d).max() for d in deltas)

    # Per time step: a hook on every h_t, at a threshold the last step's gradient stays under.
    step_norm = 2.0 * norms[-1]
    step_value = step_norm / np.sqrt(deltas[-1].size)  # the same bound if all elements were equal
    _, by_norm, _, _, _ = backward(cell, xs, target, clip.clip_norm(step_norm))
    _, by_value, _, _, _ = backward(cell, xs, target, clip.clip_value(step_value))
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

    paths = _plot(run, by_norm, by_value, per_step, fractions, sweep, step_norm, step_value, out)
    at = int(np.argmin(np.abs(fractions - 0.1)))
    settled = run["mean_abs_h"][SETTLED:]
    lc.say(
        f"The example: a tanh RNN, {steps} steps, hidden size {hidden}, W_hh random with ||W_hh||_2 = "
        f"{run['spectral_norm_w_hh']:.2g}, inputs of size 1. Its states stay bounded: max |h_t| over every "
        f"step and unit is {run['max_abs_h']:.5f} < 1, and the mean |h_t| rises from {run['mean_abs_h'][1]:.2f} "
        f"at t = 1 to stay between {min(settled):.2f} and {max(settled):.2f} from t = {SETTLED} to {steps}, with "
        f"tanh' = 1 - h^2 at "
        f"{np.mean(run['mean_tanh_derivative'][1:]):.2f} on average. Its gradient explodes through time: "
        f"||dL/dh_t|| grows from {norms[-1]:.3g} at the last step to {norms[0]:.3g} at h_0, "
        f"||delta_0|| / ||delta_T|| = {run['factor']:.3g}, and diagnostics.verdict says "
        f"{run['verdict']!r} (above {diagnostics.EXPLODING:g}).",
        f"Pascanu et al.'s condition ||W_hh||_2 > 1 is necessary, not sufficient: W_hh = 1.5 x orthogonal "
        f"with inputs of 0.1 meets it too (||W_hh||_2 = {saturating['spectral_norm_w_hh']:.2g}), but its "
        f"states grow until tanh' ({np.mean(saturating['mean_tanh_derivative'][1:]):.2f} on average) undoes "
        f"W_hh's stretch, and its gradient grows only {saturating['factor']:.3g} times: {saturating['verdict']!r}.",
        f"Per time step, with a hook on every h_t at {step_norm:.3g}: clip_norm rescales dL/dh_t and keeps "
        f"its direction, so with one loss at the end every step's gradient points exactly where the "
        f"unclipped one did (every cosine is 1 to within "
        f"{max(abs(1 - c) for c in per_step['clip_norm hook']):.1g}). clip_value, at {step_value:.3g} per "
        f"element, cuts the large elements and not the small ones: the cosine falls to "
        f"{min(per_step['clip_value hook']):.3f}, and the bend is carried back to every earlier step.",
        f"For the whole parameter gradient, at thresholds one tenth of the unclipped gradient's size: "
        f"clip_grad_norm_ keeps the direction (cosine {sweep['clip_grad_norm_'][at]:.4f}), clip_grad_value_ "
        f"turns it (cosine {sweep['clip_grad_value_'][at]:.3f}). The per-step norm hook is not a global "
        f"rescaling: it shrinks the early steps' shares (where the gradient is largest) more than the late "
        f"ones', so it turns the update too (cosine {sweep['clip_norm hook'][at]:.3f}); the per-step value "
        f"hook gives {sweep['clip_value hook'][at]:.3f}. Pascanu's Algorithm 1 is the global norm clip: "
        "only it keeps the direction of the update.",
    )
    lc.wrote(paths)
    print(f"({timer})")
    return {"per_step": per_step, "fractions": fractions, "sweep": sweep, "norms": norms, "run": run,
            "saturating": saturating, "step_norm": step_norm, "step_value": step_value, "at": at,
            "problem": (cell, xs, target), "paths": paths}


def split(vector: np.ndarray, cell) -> list:
    """The pieces of a flat gradient, one array per parameter (copies: clipping must not change the reference)."""
    pieces, start = [], 0
    for p in cell.parameters():
        pieces.append(vector[start : start + p.size].reshape(p.shape).copy())
        start += p.size
    return pieces


def _plot(run, by_norm, by_value, per_step, fractions, sweep, step_norm, step_value, out) -> list:
    norms = run["norms"]
    t = np.arange(len(norms))
    styles = {"clip_grad_norm_": ("black", "-"), "clip_grad_value_": ("crimson", "-"),
              "clip_norm hook": ("black", "--"), "clip_value hook": ("crimson", "--")}
    with lc.plot_style():
        fig = lc.figure(figsize=(11, 7.6))
        (states, sizes), (turns, overall) = fig.subplots(2, 2)
        states.plot(t, run["max_abs_h_t"], color="grey", marker=".", label="max |h_t| (over units and batch)")
        states.plot(t, run["mean_abs_h"], color="black", marker=".", label="mean |h_t|")
        states.plot(t[1:], run["mean_tanh_derivative"][1:], color="tab:blue", marker=".",
                    label="mean tanh'(a_t) = 1 - h_t², the diagonal of J_t")
        states.axhline(1.0, color="black", lw=0.8, ls=":", label="1, tanh's bound")
        states.set_ylim(0, 1.08)
        states.set_xlabel("time step t (h_0 = 0)")
        states.set_ylabel("size of the state")
        states.set_title("forward: the states stay below 1 and settle after a few steps")
        states.legend(loc="lower right")
        sizes.semilogy(t, norms, color="grey", lw=2,
                       label=f"no clipping: ‖δ_0‖/‖δ_T‖ = {run['factor']:.2g}, '{run['verdict']}'")
        sizes.semilogy(t, [np.linalg.norm(d) for d in by_norm], "--", color="black",
                       label=f"clip_norm({step_norm:.2g}) hook on every h_t")
        sizes.semilogy(t, [np.linalg.norm(d) for d in by_value], "--", color="crimson",
                       label=f"clip_value({step_value:.2g}) hook on every h_t")
        sizes.set_xlabel("time step t")
        sizes.set_ylabel("‖dL/dh_t‖ (after the hook)")
        sizes.set_title("backward: the gradient reaching each step explodes")
        sizes.legend(loc="upper right")
        for name, values in per_step.items():
            colour, line = styles[name]
            turns.plot(t, values, line, color=colour, label=name, marker=".")
        turns.set_xlabel("time step t")
        turns.set_ylabel("cosine to the unclipped dL/dh_t")
        turns.set_title("direction at each step (hooks)")
        turns.legend(loc="lower right")
        for name, values in sweep.items():
            colour, line = styles[name]
            overall.semilogx(fractions, values, line, color=colour, label=name, marker=".")
        overall.set_xlabel("threshold / size of the unclipped gradient\n"
                           "(norm for *_norm*, largest |element| for *_value*)")
        overall.set_ylabel("cosine to the unclipped ∇L")
        overall.set_title("direction of the whole parameter gradient")
        overall.legend(loc="lower right")
        fig.suptitle("A gradient that explodes through time while the states stay bounded: clipping by value "
                     "bends it, clipping the global norm only shortens it")
        return lc.save_figure(fig, out, "05_clipping")


if __name__ == "__main__":
    main(**lc.command_line(__doc__))

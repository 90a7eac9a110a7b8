"""Lesson 9, recognising the problems while training: diagnostics.Monitor on four kinds of run, and
which of its signals tells what.

- Vanishing across layers: an 8-layer sigmoid net (width 32, PyTorch's default init) learning a smooth
  regression with SGD. Its states are the layer outputs. Each layer has its own weights, so the update
  ratio ||update|| / ||W|| of the early layers shows that they do not learn.
- Vanishing through time: a tanh RNN (PyTorch's default init) stuck on the adding problem (Hochreiter &
  Schmidhuber 1997; ``tinygrad_rnn.data.adding_problem``), 80 steps, the two marked numbers in the first
  half. Its weights are shared by every step: W_hh's gradient is the sum over steps of

      C_t = (delta_t * tanh'(a_t))^T h_{t-1},    delta_t = dL/dh_t,

  which the last few steps dominate, so its update ratio looks healthy (about 1e-3) while nothing from
  the marked steps arrives. The heatmap of ||dL/ds_t|| over (time step, iteration) shows it.
- Exploding through time with bounded states: the same task and SGD, with W_hh random of standard
  deviation 2 / sqrt(H). tanh keeps |h| < 1, yet ||dL/dh_0|| / ||dL/dh_80|| is in the tens of
  thousands (diagnostics.verdict: "exploding"). One unclipped step rewrites W_hh and throws the net
  into saturation, where the gradient then vanishes; clip_grad_norm_ bounds every step instead, and
  the gradient goes on exploding through time at every iteration (the picture is this clipped run).
- A forward blow-up, which a non-saturating nonlinearity allows: a leaky-ReLU RNN (f(a) = a for a > 0,
  0.01 a below; nothing bounds h), W_hh of standard deviation 1.5 / sqrt(H), in float32. Two SGD
  steps move the weights to where the states themselves grow step by step, and float32 overflows:
  the monitor names the iteration and the op where the first NaN or Inf was born.

Each iteration calls ``monitor.after_backward(loss, states)`` after the backward pass and
``monitor.after_step()`` after the optimiser's step; ``monitor.plot`` draws the loss, the update ratios
per parameter, and the gradient heatmap.

Run: python examples/lessons/09_monitor.py [--quick] [--out DIR]
"""

from __future__ import annotations

import math

import lessons_common as lc
import numpy as np

from tinygrad_rnn import Value, clip, diagnostics, nn, optim
from tinygrad_rnn.data import adding_problem
from tinygrad_rnn.diagnostics import Monitor

STEPS, HIDDEN, BATCH, LEARNING_RATE = 80, 32, 32, 0.02  # every adding-problem run shares these


def feedforward_run(iterations: int, depth: int = 8, width: int = 32, batch: int = 64) -> Monitor:
    rng = np.random.default_rng(0)
    layers = [nn.Linear(2 if k == 0 else width, width, rng=rng) for k in range(depth)]
    readout = nn.Linear(width, 1, rng=rng)
    params = {f"layer{k + 1}.weight": layer.weight for k, layer in enumerate(layers)}
    params["readout.weight"] = readout.weight
    monitor = Monitor(params, state_axis="layer")
    optimizer = optim.SGD([p for m in (*layers, readout) for p in m.parameters()], lr=0.05)
    for _ in range(iterations):
        x = rng.uniform(-2, 2, size=(batch, 2))
        target = np.sin(x[:, :1]) * np.cos(x[:, 1:])
        a = Value(x, requires_grad=False, name="a_0")
        outputs = [a]
        for layer in layers:
            a = layer(a).sigmoid()
            outputs.append(a)
        loss = nn.mse_loss(readout(a), target)
        optimizer.zero_grad()
        loss.backward()
        monitor.after_backward(loss, outputs)
        optimizer.step()
        monitor.after_step()
    return monitor


def adding_run(iterations: int, nonlinearity: str = "tanh", w_hh_std: float | None = None, dtype=np.float64,
               max_norm: float | None = None, diagnose: bool = False) -> dict:
    """An RNN and a linear read-out of h_T trained with SGD on the adding problem (mean squared error).

    ``w_hh_std``: W_hh's entries drawn with standard deviation w_hh_std / sqrt(H) (None: PyTorch's
    default init). Training stops at the first NaN or Inf, as a training loop would. Returns the
    monitor; per iteration the largest |h_t| and the mean f'(a_t) over the steps; the first
    iteration's batch and the initial weights (for an independent recomputation), and with
    ``diagnose`` the diagnostics.steps verdict and factor of that iteration; the last iteration's
    states, their gradients and W_hh's gradient."""
    rng = np.random.default_rng(0)
    cell = nn.RNNCell(2, HIDDEN, nonlinearity=nonlinearity, rng=rng, dtype=dtype)
    head = nn.Linear(HIDDEN, 1, rng=rng, dtype=dtype)
    if w_hh_std is not None:
        nn.init.normal_(cell.weight_hh, 0.0, w_hh_std / np.sqrt(HIDDEN), rng=rng)
    params = {**{f"rnn.{name}": p for name, p in cell.named_parameters()},
              **{f"head.{name}": p for name, p in head.named_parameters()}}
    monitor = Monitor(params)
    optimizer = optim.SGD(list(params.values()), lr=LEARNING_RATE)
    record = {"monitor": monitor, "max_abs_h": [], "mean_derivative": [],
              "initial": {name: np.array(p.data) for name, p in params.items()}}
    for iteration in range(iterations):
        xs, targets = adding_problem(BATCH, STEPS, rng, dtype=dtype)
        h0 = cell.initial_state(BATCH)
        # Overflow is what the leaky-ReLU run is about: numpy's warnings would only repeat the monitor.
        with np.errstate(all="ignore"):
            outputs, states = nn.RNN(cell)(xs, h0=h0, return_states=True)
            loss = nn.mse_loss(head(outputs[-1]), targets[:, None])
            optimizer.zero_grad()
            loss.backward()
            monitor.after_backward(loss, states)
            hs = [np.asarray(h.data, dtype=np.float64) for h in outputs]
            record["max_abs_h"].append(max(float(np.abs(h).max()) for h in hs))
            record["mean_derivative"].append(_mean_derivative(hs, nonlinearity))
            if iteration == 0:
                record["first_batch"] = (xs, targets)
            if iteration == 0 and diagnose:  # the step Jacobians' bounds cost a vjp per unit and step
                rows = diagnostics.steps(loss, states)
                record["first_verdict"] = diagnostics.verdict(rows)
                record["first_factor"] = diagnostics.gradient_factor(rows)[0]
            if iteration == iterations - 1 or monitor.first_nonfinite is not None:
                record["last_states"] = [np.asarray(s.data, dtype=np.float64) for s in states]
                record["last_deltas"] = [np.asarray(s.grad if s.grad is not None else np.zeros(s.shape))
                                         for s in states]
                record["last_w_hh_grad"] = np.array(cell.weight_hh.grad, dtype=np.float64)
            if monitor.first_nonfinite is not None:
                break
            if max_norm is not None:
                clip.clip_grad_norm_(list(params.values()), max_norm)
            optimizer.step()
        monitor.after_step()
    return record


def _mean_derivative(hs, nonlinearity: str) -> float:
    """The mean over steps, units and batch of f'(a_t), the diagonal of each step's Jacobian."""
    if nonlinearity == "tanh":
        return float(np.mean([np.mean(1.0 - h**2) for h in hs]))
    return float(np.mean([np.mean(np.where(h > 0, 1.0, 0.01)) for h in hs]))


def step_shares(record: dict) -> tuple[float, float]:
    """(share of the first half, share of the last 10 steps) in the norm of W_hh's gradient at the last
    iteration, from the per-step terms C_t = (delta_t * (1 - h_t^2))^T h_{t-1} (tanh; numpy)."""
    hs, deltas = record["last_states"], record["last_deltas"]
    terms = [(deltas[t] * (1.0 - hs[t] ** 2)).T @ hs[t - 1] for t in range(1, len(hs))]
    whole = np.linalg.norm(sum(terms))
    half = len(terms) // 2
    return float(np.linalg.norm(sum(terms[:half])) / whole), float(np.linalg.norm(sum(terms[-10:])) / whole)


def predicting_the_mean(steps: int = STEPS) -> float:
    """The mean squared error of the best constant answer to the adding problem: the target's variance.

    By hand, for the "hochreiter" variant: X1 and X2 are independent, uniform in [-1, 1] (variance 1/3,
    mean 0), except that a marked step 0 carries 0. X1 sits at step 0 with probability 1/10; X2 with
    probability (9/10) / (T/2 - 1) (its index k is uniform over T/2 - 1 values, shifted past X1's; it is
    0 only for k = 0 when X1 is not at 0). So Var = (1/3) (9/10) + (1/3) (1 - (9/10) / (T/2 - 1))."""
    return (0.9 + 1.0 - 0.9 / (steps // 2 - 1)) / 3.0


def regression_variance() -> float:
    """The variance of the feed-forward target sin(x1) cos(x2), x uniform in [-2, 2]^2, by hand: its
    mean is 0 (sin is odd), and E[sin^2 x] = 1/2 - sin(4)/8, E[cos^2 x] = 1/2 + sin(4)/8."""
    return (0.5 - math.sin(4.0) / 8) * (0.5 + math.sin(4.0) / 8)


def median_ratio(monitor: Monitor, name: str) -> float:
    """The median of a parameter's update ratios over the iterations that have a finite positive one."""
    values = [r for r in monitor.update_ratios[name] if r is not None and math.isfinite(r) and r > 0]
    return float(np.median(values)) if values else float("nan")


def main(quick: bool = False, out=lc.DEFAULT_OUT) -> dict:
    timer = lc.Timer()
    feedforward = feedforward_run(40 if quick else 300)
    shallow = feedforward_run(40 if quick else 300, depth=1)
    stuck = adding_run(20 if quick else 300)
    exploding = adding_run(5 if quick else 30, w_hh_std=2.0, diagnose=True)
    exploding_clipped = adding_run(5 if quick else 30, w_hh_std=2.0, max_norm=1.0)
    blow_up = adding_run(6 if quick else 12, nonlinearity="leaky_relu", w_hh_std=1.5, dtype=np.float32)
    blow_up_clipped = adding_run(6 if quick else 30, nonlinearity="leaky_relu", w_hh_std=1.5, dtype=np.float32,
                                 max_norm=1.0)
    adding = f"adding problem, {STEPS} steps"
    titles = {
        "vanishing": (feedforward, "an 8-layer sigmoid net: vanishing across layers"),
        "rnn_stuck": (stuck["monitor"], f"a tanh RNN stuck on the {adding}: vanishing through time"),
        "exploding": (exploding_clipped["monitor"], "a tanh RNN, W_hh std 2/√H, clip_grad_norm_: explodes "
                                                    "through time, |h| < 1"),
        "blow_up": (blow_up["monitor"], f"a leaky-ReLU RNN in float32, {adding}: the states themselves blow up"),
    }
    paths = []
    out.mkdir(parents=True, exist_ok=True)
    with lc.plot_style():
        for name, (monitor, title) in titles.items():
            png, svg = out / f"09_monitor_{name}.png", out / f"09_monitor_{name}.svg"
            figure = monitor.plot(png, title=f"Monitor: {title}")
            figure.set_layout_engine("none")  # laid out for the PNG already: the SVG keeps those positions
            figure.savefig(svg)
            paths += [png, svg]

    baseline = predicting_the_mean()
    results = {"feedforward": feedforward, "shallow": shallow, "stuck": stuck, "exploding": exploding,
               "exploding_clipped": exploding_clipped, "blow_up": blow_up, "blow_up_clipped": blow_up_clipped,
               "baseline": baseline, "paths": paths}
    results.update(_say(results))
    lc.wrote(paths)
    print(f"({timer})")
    return results


def _say(r: dict) -> dict:
    """Print what the runs show; returns the numbers the sentences quote."""
    feedforward, stuck, exploding, blow_up = r["feedforward"], r["stuck"], r["exploding"], r["blow_up"]
    first, last = median_ratio(feedforward, "layer1.weight"), median_ratio(feedforward, "layer8.weight")
    layer_grads = feedforward.step_grad_norms[-1]

    monitor = stuck["monitor"]
    w_hh_ratio = median_ratio(monitor, "rnn.weight_hh")
    stuck_ratios = {name: median_ratio(monitor, name) for name in monitor.parameters}
    deltas = monitor.step_grad_norms[-1]
    half = STEPS // 2
    early_share, late_share = step_shares(stuck)
    tail = min(50, monitor.iterations)
    stuck_loss = float(np.mean(monitor.losses[-tail:]))

    explode = exploding["monitor"]
    later = [row[0] / row[-1] for row in explode.step_grad_norms[1:]]
    later_ratios = explode.update_ratios["rnn.weight_hh"][1:]
    clipped_run = r["exploding_clipped"]
    clipped = clipped_run["monitor"]
    clipped_factors = [row[0] / row[-1] for row in clipped.step_grad_norms]

    burst, burst_clipped = blow_up["monitor"], r["blow_up_clipped"]
    nan_at = burst.first_nonfinite
    finite_losses = [x for x in burst.losses if math.isfinite(x)]
    lc.say(
        f"Vanishing across layers (8 sigmoid layers): the update ratio ||update||/||W|| of the first layer has "
        f"median {first:.2g}, the last layer's {last:.2g}: the later layers learn, the earlier ones barely move "
        f"({last / first:.2g} times less). The heatmap says why: at the last iteration ||dL/da_l|| is "
        f"{layer_grads[-1]:.2g} at layer 8 and {layer_grads[1]:.2g} at layer 1. The loss went from "
        f"{feedforward.losses[0]:.3g} to {np.mean(feedforward.losses[-20:]):.3g} (mean of the last 20), where "
        f"predicting the mean puts it (the target's variance, {regression_variance():.3g}); a single sigmoid "
        f"layer on the same data reaches {np.mean(r['shallow'].losses[-20:]):.3g}. Here the update ratios tell, "
        f"because each layer has weights of its own.",
        f"Vanishing through time (tanh RNN, adding problem over {STEPS} steps, SGD lr {LEARNING_RATE}): the loss "
        f"stays at {stuck_loss:.3g} (mean of the last {tail} iterations), where predicting the mean puts it (the "
        f"target's variance, {r['baseline']:.3g}). Yet W_hh's update ratio has median {w_hh_ratio:.2g}, on the "
        f"plot's 'healthy' line, and every parameter's median is between {min(stuck_ratios.values()):.2g} and "
        f"{max(stuck_ratios.values()):.2g}. The update ratio cannot see this: W_hh is shared by all {STEPS} "
        f"steps, and at the last iteration the last 10 steps make {late_share:.0%} of its gradient's norm, the "
        f"first {half} (where the marked numbers are) {early_share:.1g}. The heatmap shows it: ||dL/dh_t|| is "
        f"{deltas[-1]:.2g} at t = {STEPS}, {deltas[half]:.2g} at t = {half} and {deltas[1]:.2g} at t = 1: no "
        f"gradient from the loss reaches the steps it would have to learn from.",
        f"Exploding through time with bounded states, without clipping (tanh, W_hh of standard deviation "
        f"2/sqrt(H), ||W_hh||_2 = "
        f"{np.linalg.norm(exploding['initial']['rnn.weight_hh'], 2):.2g}): at iteration 0 the largest |h_t| over "
        f"all steps is {exploding['max_abs_h'][0]:.6f} < 1, tanh' averages {exploding['mean_derivative'][0]:.2f}, "
        f"and ||dL/dh_0|| / ||dL/dh_{STEPS}|| = {exploding['first_factor']:.3g}: diagnostics.verdict says "
        f"{exploding['first_verdict']!r}. The loss shows nothing ({explode.losses[0]:.2g}); the update ratio "
        f"does: {explode.update_ratios['rnn.weight_hh'][0]:.2g} for W_hh at iteration 0, where a healthy step is "
        f"1e-3. That one step rewrote the recurrent weights and threw the net into saturation: from iteration 1 "
        f"on tanh' averages {min(exploding['mean_derivative'][1:]):.2g} to "
        f"{max(exploding['mean_derivative'][1:]):.2g} and the largest |h_t| is "
        f"{min(exploding['max_abs_h'][1:]):.6f}, and the gradient vanishes instead (||dL/dh_0|| / "
        f"||dL/dh_{STEPS}|| between {min(later):.1g} and {max(later):.1g} over iterations 1 to {len(later)}). "
        f"The largest later update ratio, {max(later_ratios):.2g} at iteration "
        f"{later_ratios.index(max(later_ratios)) + 1}, is another such step.",
        f"The same run with clip_grad_norm_(params, 1.0) before each step (the picture): the gradient still "
        f"explodes through time at every iteration (||dL/dh_0|| / ||dL/dh_{STEPS}|| between "
        f"{min(clipped_factors):.2g} and {max(clipped_factors):.2g}; every row of the heatmap brightens towards "
        f"s_0) while the largest |h_t| stays at most "
        f"{max(clipped_run['max_abs_h']):.6f} and tanh' averages {np.mean(clipped_run['mean_derivative']):.2f}; "
        f"each step moves W_hh by {median_ratio(clipped, 'rnn.weight_hh'):.2g} of itself (median), on the "
        f"'healthy' line. Clipping bounds the step, not the explosion: here too only the heatmap shows it. And it "
        f"scales every parameter's step by the same factor: the read-out, whose own gradient is small, now moves "
        f"{median_ratio(clipped, 'head.weight'):.1g} of itself per step (median) against "
        f"{median_ratio(explode, 'head.weight'):.1g} without clipping.",
        f"A forward blow-up (leaky ReLU, float32, W_hh of standard deviation 1.5/sqrt(H)): nothing bounds the "
        f"states. The largest |h_t| goes {', '.join(f'{x:.3g}' for x in blow_up['max_abs_h'])} over iterations 0 "
        f"to {len(blow_up['max_abs_h']) - 1}, the loss {', '.join(f'{x:.3g}' for x in finite_losses)}"
        + (f", and at iteration {nan_at} float32 overflows: the first NaN or Inf is made by the op "
           f"{burst.nonfinite_op!r} (monitor.first_nonfinite, monitor.nonfinite_op), and training stops there."
           if nan_at is not None else "; nothing overflowed.")
        + f" W_hh's update ratios before it: "
        f"{', '.join(f'{x:.2g}' for x in burst.update_ratios['rnn.weight_hh'] if x is not None)}. With "
        f"clip_grad_norm_(params, 1.0) the same run stays finite for {burst_clipped['monitor'].iterations} "
        f"iterations (first NaN/Inf: {burst_clipped['monitor'].first_nonfinite}), though its states still reach "
        f"{max(burst_clipped['max_abs_h']):.3g} at iteration {int(np.argmax(burst_clipped['max_abs_h']))} "
        f"({burst_clipped['max_abs_h'][-1]:.3g} at the last).",
        "Which signal tells what: a loss stuck where predicting the mean puts it says that nothing is learnt, "
        "not why. The update ratio per parameter finds the layers that do not learn when each has weights of its "
        "own, and a step that rewrites the weights; it does not see the time steps of an RNN, whose weights all "
        "steps share. The heatmap of ||dL/ds_t|| over (time step, iteration) shows both problems through time: "
        "a gradient that fades towards s_0 (vanishing) or grows towards it (exploding, even with |h| < 1). A "
        "NaN is traced to the op that made it.",
    )
    if burst.nonfinite_text is not None:
        print(f"Where it was born (trace_nonfinite at iteration {nan_at}):\n" + burst.nonfinite_text + "\n")
    return {"numbers": {"first_layer_ratio": first, "last_layer_ratio": last, "stuck_loss": stuck_loss,
                        "stuck_ratios": stuck_ratios, "early_share": early_share, "late_share": late_share,
                        "later_factors": later, "clipped_factors": clipped_factors}}


if __name__ == "__main__":
    main(**lc.command_line(__doc__))

"""Lesson 9, recognising the problems while training: diagnostics.Monitor on a vanishing run and on an
exploding run.

- Vanishing: an 8-layer sigmoid net (width 32, PyTorch's default init) learning a smooth regression
  with SGD. The monitor gets each layer's output as its states, so its heatmap is the gradient per
  layer.
- Exploding: a linear RNN (``nonlinearity="identity"``) in float32 with W_hh at spectral radius 1.2,
  trained with SGD and no clipping on a memory task (report the first input after 30 steps): each
  step back multiplies the gradient by W_hh^T, and nothing saturates. Its states are the hidden
  states h_0..h_T.

Each iteration calls ``monitor.after_backward(loss, states)`` after the backward pass and
``monitor.after_step()`` after the optimiser's step; ``monitor.plot`` draws the loss, the update ratios
per parameter, and the gradient heatmap.

Run: python examples/lessons/09_monitor.py [--quick] [--out DIR]
"""

from __future__ import annotations

import math

import lessons_common as lc
import numpy as np

from tinygrad_rnn import Value, clip, nn, optim
from tinygrad_rnn.diagnostics import Monitor


def vanishing_run(iterations: int, depth: int = 8, width: int = 32, batch: int = 64) -> Monitor:
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


def memory_batch(rng, steps: int, batch: int):
    """Inputs (T, B, 1): the value to remember at t = 1, small noise after; target: that value."""
    xs = 0.1 * rng.normal(size=(steps, batch, 1)).astype(np.float32)
    xs[0] = rng.normal(size=(batch, 1))
    return xs, xs[0].copy()


def exploding_run(iterations: int, steps: int = 30, hidden: int = 16, batch: int = 16,
                  max_norm: float | None = None) -> Monitor:
    rng = np.random.default_rng(0)
    cell = nn.RNNCell(1, hidden, nonlinearity="identity", rng=rng, dtype=np.float32)
    head = nn.Linear(hidden, 1, rng=rng, dtype=np.float32)
    nn.init.normal_(cell.weight_hh, 0.0, 1.0, rng=rng)
    nn.init.scale_spectral_radius_(cell.weight_hh, 1.2)
    params = {**{f"rnn.{name}": p for name, p in cell.named_parameters()},
              **{f"head.{name}": p for name, p in head.named_parameters()}}
    monitor = Monitor(params)
    optimizer = optim.SGD(list(params.values()), lr=3e-4)
    for _ in range(iterations):
        xs, target = memory_batch(rng, steps, batch)
        h0 = cell.initial_state(batch)
        # Overflow is what this run is about: numpy's warnings would only repeat what the monitor reports.
        with np.errstate(all="ignore"):
            outputs, _ = nn.RNN(cell)(xs, h0=h0)
            loss = nn.mse_loss(head(outputs[-1]), target)
            optimizer.zero_grad()
            loss.backward()
            monitor.after_backward(loss, [h0, *outputs])
            if max_norm is not None:
                clip.clip_grad_norm_(list(params.values()), max_norm)
            optimizer.step()
        monitor.after_step()
    return monitor


def _median_ratio(monitor: Monitor, name: str, since: int = 0) -> float:
    values = [r for r in monitor.update_ratios[name][since:] if r is not None and math.isfinite(r) and r > 0]
    return float(np.median(values)) if values else float("nan")


def main(quick: bool = False, out=lc.DEFAULT_OUT) -> dict:
    timer = lc.Timer()
    vanishing = vanishing_run(40 if quick else 300)
    shallow = vanishing_run(40 if quick else 300, depth=1)
    exploding = exploding_run(12 if quick else 20)
    clipped = exploding_run(12 if quick else 20, max_norm=1.0)
    paths = []
    with lc.plot_style():
        vanishing.plot(out / "09_monitor_vanishing.png", title="Monitor: an 8-layer sigmoid net (vanishing)")
        vanishing.plot(out / "09_monitor_vanishing.svg", title="Monitor: an 8-layer sigmoid net (vanishing)")
        exploding.plot(out / "09_monitor_exploding.png", title="Monitor: a linear RNN, radius 1.2 (exploding)")
        exploding.plot(out / "09_monitor_exploding.svg", title="Monitor: a linear RNN, radius 1.2 (exploding)")
    paths += [out / f"09_monitor_{kind}.{suffix}" for kind in ("vanishing", "exploding") for suffix in ("png", "svg")]

    first, last = _median_ratio(vanishing, "layer1.weight"), _median_ratio(vanishing, "layer8.weight")
    grads = vanishing.step_grad_norms[-1]
    known = [r for r in exploding.update_ratios["rnn.weight_hh"] if r is not None and math.isfinite(r)]
    print("Vanishing run:\n" + vanishing.summary() + "\n")
    print("Exploding run:\n" + exploding.summary() + "\n")
    lc.say(
        f"Vanishing: the update ratio ||update||/||W|| of the first layer has median {first:.2g}, the last "
        f"layer's {last:.2g}: the later layers learn, the earlier ones barely move ({last / first:.2g} times "
        f"less). The heatmap says why: at the last iteration ||dL/da_l|| is {grads[-1]:.2g} at layer 8 and "
        f"{grads[1]:.2g} at layer 1. The loss went from {vanishing.losses[0]:.3g} to "
        f"{np.mean(vanishing.losses[-20:]):.3g} (mean of the last 20): it flattens at once, at about what "
        f"predicting the mean scores. The same data and settings with a single sigmoid layer reach "
        f"{np.mean(shallow.losses[-20:]):.3g}.",
        f"Exploding: W_hh's update ratios are {', '.join(f'{r:.2g}' for r in known)} while they stay "
        f"finite: single steps rewrite the recurrent weights, and the loss jumps from iteration to "
        f"iteration ({', '.join(f'{x:.2g}' for x in exploding.losses if math.isfinite(x))}) until float32 "
        f"overflows"
        + (f": the first NaN or Inf is at iteration {exploding.first_nonfinite}, made by the op "
           f"{exploding.nonfinite_op!r}." if exploding.first_nonfinite is not None else
           "; within this run nothing overflowed yet.")
        + f" The same run with clip_grad_norm_(params, 1.0) before each step (lesson 5) stays finite: loss "
        f"{clipped.losses[0]:.3g} at the start, {clipped.losses[-1]:.3g} after {clipped.iterations} iterations, "
        f"first NaN/Inf: {clipped.first_nonfinite}.",
    )
    if exploding.nonfinite_text is not None:
        print(f"Where it was born (trace_nonfinite at iteration {exploding.first_nonfinite}):\n"
              + exploding.nonfinite_text + "\n")
    lc.wrote(paths)
    print(f"({timer})")
    return {"vanishing": vanishing, "exploding": exploding, "clipped": clipped, "paths": paths}


if __name__ == "__main__":
    main(**lc.command_line(__doc__))

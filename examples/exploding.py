"""Exploding gradients in a tanh RNN, and gradient-norm clipping (Pascanu, Mikolov & Bengio 2013).

A tanh RNN whose recurrent matrix W_hh has spectral radius 3 reads sequences of 50 steps. Going back
through time, each step multiplies dL/dh_t by diag(1 - h_t^2) W_hh^T, and here those factors stretch the
gradient by orders of magnitude on its way from h_50 to h_1. Two runs with the same initial weights, data
and SGD settings:

- no clipping: the first update is lr times a gradient of norm ~1e4; W_hh is thrown far out (its
  spectral radius jumps), tanh saturates everywhere and the loss stalls at the level of predicting the
  mean (1/6);
- clip_grad_norm_(params, 1.0) after each backward pass: the update keeps its direction but at most
  unit length, and the RNN learns the task.

The task is the adding problem (inputs: a value in [0, 1] and a marker per step; target: the sum of the
two marked values) with both marks among the last 10 steps, so a vanilla RNN can learn it in seconds;
the backward pass still runs through all 50 steps, which is where the explosion happens.

Run: python examples/exploding.py    (about 20 s on two cores)
"""

import math
import time

import numpy as np

from tinygrad_rnn import clip, diagnostics, nn, optim

STEPS, REPORT_EVERY, BATCH, LENGTH, HIDDEN = 4000, 500, 32, 50, 32
RADIUS, LEARNING_RATE, MOMENTUM, MAX_NORM = 3.0, 0.01, 0.9, 1.0


def adding_batch(rng, window: int = 10):
    """(T, B, 2) inputs (value, marker) and (B,) targets: the sum of the two marked values, one mark in
    each half of the last ``window`` steps."""
    inputs = np.zeros((LENGTH, BATCH, 2))
    inputs[:, :, 0] = rng.uniform(0.0, 1.0, (LENGTH, BATCH))
    rows = np.arange(BATCH)
    first = rng.integers(LENGTH - window, LENGTH - window // 2, BATCH)
    second = rng.integers(LENGTH - window // 2, LENGTH, BATCH)
    inputs[first, rows, 1] = inputs[second, rows, 1] = 1.0
    return inputs, inputs[first, rows, 0] + inputs[second, rows, 0]


def make_model():
    rng = np.random.default_rng(0)  # the same weights for both runs
    cell, head = nn.RNNCell(2, HIDDEN, rng=rng), nn.Linear(HIDDEN, 1, rng=rng)
    nn.init.normal_(cell.weight_hh, 0.0, 1.0, rng=rng)
    nn.init.scale_spectral_radius_(cell.weight_hh, RADIUS)
    return cell, head


def loss_of(rnn, head, inputs, targets, h0=None):
    outputs, _ = rnn(inputs, h0=h0)
    return nn.mse_loss(head(outputs[-1]).reshape(BATCH), targets), outputs


def train(clipping: bool) -> list[dict]:
    cell, head = make_model()
    rnn, params = nn.RNN(cell), [*cell.parameters(), *head.parameters()]
    optimizer = optim.SGD(params, lr=LEARNING_RATE, momentum=MOMENTUM)
    data_rng, rows, window = np.random.default_rng(1), [], []
    for step in range(1, STEPS + 1):
        loss, _ = loss_of(rnn, head, *adding_batch(data_rng))
        optimizer.zero_grad()
        loss.backward()
        # With max_norm = inf nothing is scaled; the call then only measures the total norm.
        norm = clip.clip_grad_norm_(params, MAX_NORM if clipping else math.inf)
        optimizer.step()
        window.append((loss.item(), norm))
        if step % REPORT_EVERY == 0:
            losses, norms = zip(*window, strict=True)
            rows.append({"loss": float(np.mean(losses)), "norm": max(norms),
                         "clipped": sum(n > MAX_NORM for n in norms),
                         "radius": nn.init.spectral_radius(cell.weight_hh)})
            window = []
    return rows


def main():
    start = time.perf_counter()
    cell, head = make_model()
    h0 = cell.initial_state(BATCH)
    loss, outputs = loss_of(nn.RNN(cell), head, *adding_batch(np.random.default_rng(1)), h0=h0)
    loss.backward()
    norms = diagnostics.gradient_norms(outputs)
    step_rows = diagnostics.steps(loss, [h0, *outputs])
    jacobian_norms = [row.bound for row in step_rows[1:]]
    print(f"At initialisation (spectral radius of W_hh {RADIUS}): ||dL/dh_t|| at t = {LENGTH}, "
          f"{LENGTH // 2}, 1: {norms[-1]:.3g}, {norms[LENGTH // 2 - 1]:.3g}, {norms[0]:.3g} "
          f"({diagnostics.verdict(step_rows)}); ||dh_t/dh_t-1|| averages {np.mean(jacobian_norms):.2f}\n")

    plain, clipped = train(clipping=False), train(clipping=True)
    print(f"{'':>6} | {'no clipping':^28} | {'clip_grad_norm_(params, ' + str(MAX_NORM) + ')':^38}")
    print(f"{'step':>6} | {'loss':>8} {'max norm':>10} {'radius':>7} | {'loss':>8} {'max norm':>10} "
          f"{'clipped':>9} {'radius':>7}")
    for k, (a, b) in enumerate(zip(plain, clipped, strict=True), start=1):
        print(f"{k * REPORT_EVERY:>6} | {a['loss']:>8.4f} {a['norm']:>10.3g} {a['radius']:>7.1f} | "
              f"{b['loss']:>8.4f} {b['norm']:>10.3g} {b['clipped']:>4}/{REPORT_EVERY:<4} {b['radius']:>7.1f}")
    print(f"\nloss: mean squared error over the last {REPORT_EVERY} steps (predicting the mean scores 1/6 = 0.167); "
          f"max norm: the largest total gradient norm before clipping; radius: of W_hh.")
    for name, rows in (("no clipping", plain), ("clipping", clipped)):
        finite = all(math.isfinite(r["loss"]) for r in rows)
        print(f"{name:>11}: largest gradient norm {max(r['norm'] for r in rows):.3g}, final loss "
              f"{rows[-1]['loss']:.4f}{'' if finite else ' (became NaN/inf)'}")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()

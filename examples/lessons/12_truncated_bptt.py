"""Lesson 12, truncated BPTT as fewer layers: what a window of k steps can and cannot learn, and what
it costs.

``nn.RNN(cell, truncate=k)`` detaches the state after every k-th step (Williams & Peng 1990's
BPTT(h; h') with h = h' = k; Sutskever's thesis, 2013). The forward pass is unchanged; the backward
pass of a loss at step t stops at the start of its window. Inside a window the unrolled net is a
feed-forward net at most k layers deep: a loss at position p of its window (p = 1..k) reaches the
inputs of its own step and of the p - 1 steps before it, and no further.

The task is a delayed copy: x_t = +1 or -1 at random, the target at step t is y_t = x_{t-d}, read from
h_t by a linear layer, with a mean squared error at every step t > d. Predicting 0 scores E[x^2] = 1.
The loss at step t depends on x_{t-d} through the steps t-d+1..t, so its gradient reaches that input
only when p > d. With d < k a share (k - d) / k of the losses see the input they must copy; with
d >= k none does: no term of the truncated gradient connects a target to its input.

- The reach (``12_truncated_bptt_reach``): ``diagnostics.lags`` of an untrained tanh RNN with a loss at
  every step, entry [t, j] = ||delta_j^(t)||, the gradient that the loss at step t alone sends to state
  s_j, for full BPTT and for k = 4; where x_{t-d} enters is marked.
- What is learnt (``12_truncated_bptt``): a tanh RNN (hidden 16) trained with Adam on sequences of 32
  steps for delays d in {2, 4, 8} and windows k in {1, 2, 3, 4, 6, 8, 12, all 32}, three seeds each;
  the test MSE, the learning curves for d = 4, and, for scale, what a linear readout alone gets from the
  untrained net's states (least squares: the memory the random recurrence has before any training).
- The cost: a stream of 96 steps read in windows of k (forward, backward and one Adam step per window,
  the state carried on, detached). The memory a window's graph holds for its backward pass (the bytes
  of the arrays its ops made) against k, and the time per step.

Run: python examples/lessons/12_truncated_bptt.py [--quick] [--out DIR]
"""

from __future__ import annotations

import time

import lessons_common as lc
import numpy as np

import tinygrad_rnn as tg
from tinygrad_rnn import clip, diagnostics, nn, optim
from tinygrad_rnn.graph import walk

HIDDEN, LEARNING_RATE, MAX_NORM = 16, 1e-2, 1.0
LEARNT, PARTLY = 0.1, 0.5  # test MSE below this (the baseline is 1): learnt; below PARTLY: partly
FULL = {"length": 32, "delays": (2, 4, 8), "windows": (1, 2, 3, 4, 6, 8, 12, None), "seeds": (1, 2, 3),
        "iterations": 300, "batch": 32, "test": 500, "curves_delay": 4,
        "reach": {"length": 16, "delay": 3, "window": 4}, "stream": 96, "stream_windows": (1, 2, 4, 8, 16, 32, 96)}
QUICK = {"length": 12, "delays": (1, 3), "windows": (1, 2, 4, None), "seeds": (1,),
         "iterations": 40, "batch": 16, "test": 100, "curves_delay": 3,
         "reach": {"length": 8, "delay": 2, "window": 4}, "stream": 16, "stream_windows": (1, 2, 4, 8, 16)}


def window_name(k: int | None, length: int) -> str:
    return f"all {length}" if k is None else str(k)


def copy_batch(size: int, length: int, delay: int, rng) -> tuple:
    """(inputs (T, B, 1) of +-1, targets (T - d, B)): target row i is the input at step i + 1, read at
    step i + 1 + d."""
    inputs = rng.choice([-1.0, 1.0], size=(length, size, 1))
    return inputs, inputs[: length - delay, :, 0].copy()


def copy_loss(cell, head, inputs, targets, delay: int, window: int | None):
    """The mean squared error of reading x_{t-d} from h_t, over every step t > d and the batch."""
    hidden, _ = nn.RNN(cell, truncate=window)(inputs)
    length = len(hidden)
    return nn.mse_loss(head(tg.stack(hidden[delay:])).reshape(length - delay, -1), targets)


def reachable(t: int, j: int, window: int | None) -> bool:
    """Whether the loss at step t sends any gradient into step j (j <= t): the hand rule. Step j is in
    t's window when no cut lies between them; the cuts follow steps k, 2k, ..."""
    return j <= t and (window is None or (j - 1) // window == (t - 1) // window)


# ---- the reach: which states a loss's gradient gets to --------------------------------------------

def reach_matrices(size: dict) -> dict:
    """For full BPTT and for the reach window: the lag matrix of an untrained net, [t, j] =
    ||delta_j^(t)||, with the loss at every step t > d split into its terms."""
    config = size["reach"]
    length, delay = config["length"], config["delay"]
    rng = np.random.default_rng(0)
    cell, head = nn.RNNCell(1, HIDDEN, rng=rng), nn.Linear(HIDDEN, 1, rng=rng)
    inputs, targets = copy_batch(8, length, delay, rng)
    matrices = {}
    for window in (None, config["window"]):
        hidden, states = nn.RNN(cell, truncate=window)(inputs, return_states=True)
        loss = nn.mse_loss(head(tg.stack(hidden[delay:])).reshape(length - delay, -1), targets)
        matrices[window] = diagnostics.lags(loss, states)
    return {"matrices": matrices, "length": length, "delay": delay, "window": config["window"],
            "cell": cell, "head": head, "inputs": inputs, "targets": targets}


# ---- what is learnt ----------------------------------------------------------------------------

def train(delay: int, window: int | None, seed: int, size: dict) -> dict:
    """A tanh RNN trained on the delayed copy with truncation ``window``: its loss per iteration (the
    full loss: truncation changes only the backward pass) and its test MSE."""
    rng = np.random.default_rng(seed)
    cell, head = nn.RNNCell(1, HIDDEN, rng=rng), nn.Linear(HIDDEN, 1, rng=rng)
    params = [*cell.parameters(), *head.parameters()]
    optimizer = optim.Adam(params, lr=LEARNING_RATE)
    step = tg.replay(lambda inputs, targets: copy_loss(cell, head, inputs, targets, delay, window))
    losses = []
    for _ in range(size["iterations"]):
        optimizer.zero_grad()
        losses.append(step(*copy_batch(size["batch"], size["length"], delay, rng)))
        clip.clip_grad_norm_(params, MAX_NORM)
        optimizer.step()
    inputs, targets = copy_batch(size["test"], size["length"], delay, np.random.default_rng(100 + delay))
    with tg.no_grad():
        test = float(copy_loss(cell, head, inputs, targets, delay, None).item())
    return {"losses": np.array(losses), "test": test,
            "state": {"cell": {k: np.array(v.data) for k, v in cell.named_parameters()},
                      "head": {k: np.array(v.data) for k, v in head.named_parameters()}}}


def readout_alone(delay: int, seed: int, size: dict, examples: int = 2000) -> float:
    """The test MSE of the best linear readout (least squares, with a bias) of the untrained net's
    states: what the random recurrence remembers of x_{t-d} before any training."""
    cell = nn.RNNCell(1, HIDDEN, rng=np.random.default_rng(seed))  # the same draws as train's first
    inputs, targets = copy_batch(examples, size["length"], delay, np.random.default_rng(200 + delay))
    with tg.no_grad():
        hidden, _ = nn.RNN(cell)(inputs)
    states = np.stack([np.asarray(h.data) for h in hidden[delay:]])  # (T - d, examples, H), row i reads x_{i+1}
    features = np.concatenate([states, np.ones(states.shape[:-1] + (1,))], axis=-1)
    half = examples // 2  # fit on one half of the sequences, score on the other
    fit, score = features[:, :half].reshape(-1, HIDDEN + 1), features[:, half:].reshape(-1, HIDDEN + 1)
    weights, *_ = np.linalg.lstsq(fit, targets[:, :half].reshape(-1), rcond=None)
    return float(np.mean((score @ weights - targets[:, half:].reshape(-1)) ** 2))


# ---- the cost ------------------------------------------------------------------------------------

def stream_cost(window: int, size: dict, delay: int = 2, repeats: int = 3) -> dict:
    """Read a stream of ``size["stream"]`` steps in windows of ``window``: per window a forward pass from
    the carried state, a backward pass, one Adam step, then the state detached and carried on.
    Returns the bytes of the arrays the ops of one window's graph made (what its backward pass needs
    kept, views not counted twice) and the best of ``repeats`` wall times per step."""
    rng = np.random.default_rng(0)
    cell, head = nn.RNNCell(1, HIDDEN, rng=rng), nn.Linear(HIDDEN, 1, rng=rng)
    params = [*cell.parameters(), *head.parameters()]
    optimizer = optim.Adam(params, lr=LEARNING_RATE)
    length = size["stream"]
    inputs = rng.choice([-1.0, 1.0], size=(length + delay, size["batch"], 1))
    seconds, held = [], None
    for _ in range(repeats):
        state = cell.initial_state(size["batch"])
        start = time.perf_counter()
        for first in range(delay, length + delay, window):
            chunk = inputs[first : first + window]
            hidden, state = nn.RNN(cell)(chunk, h0=state)
            targets = inputs[first - delay : first - delay + len(chunk), :, 0]
            loss = nn.mse_loss(head(tg.stack(hidden)).reshape(len(chunk), -1), targets)
            if held is None:
                held = graph_bytes(loss)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            state = nn.detach_state(state)
        seconds.append((time.perf_counter() - start) / length)
    return {"bytes": held, "seconds_per_step": min(seconds)}


def graph_bytes(loss) -> int:
    """Bytes of the memory that the arrays made by ``loss``'s ops keep alive (not the parameters or the
    inputs): each array's own buffer, or the buffer it is a view of, counted once."""
    buffers = {}
    for node in walk(loss).nodes:
        data = node.data
        if node.op is None or not isinstance(data, np.ndarray):
            continue
        while data.base is not None:
            data = data.base
        buffers[id(data)] = data.nbytes
    return sum(buffers.values())


def verdict(mse: float) -> str:
    return "learnt" if mse < LEARNT else "partly" if mse < PARTLY else "not learnt"


def main(quick: bool = False, out=lc.DEFAULT_OUT) -> dict:
    timer = lc.Timer()
    size = QUICK if quick else FULL
    reach = reach_matrices(size)
    runs = {(d, k, seed): train(d, k, seed, size)
            for d in size["delays"] for k in size["windows"] for seed in size["seeds"]}
    readout = {d: readout_alone(d, size["seeds"][0], size) for d in size["delays"]}
    cost = {k: stream_cost(k, size) for k in size["stream_windows"]}
    paths = _plot_reach(reach, out) + _plot_learning(runs, readout, cost, size, out)
    numbers = _say(reach, runs, readout, cost, size)
    lc.wrote(paths)
    print(f"({timer})")
    return {"reach": reach, "runs": runs, "readout": readout, "cost": cost, "paths": paths, **numbers}


def _say(reach: dict, runs: dict, readout: dict, cost: dict, size: dict) -> dict:
    length, seeds = size["length"], size["seeds"]
    matrix, window, delay = reach["matrices"][reach["window"]], reach["window"], reach["delay"]
    seen = [t for t in range(delay + 1, reach["length"] + 1) if matrix[t, t - delay] > 0]
    print(f"Reach, {reach['length']} steps, d = {delay}, k = {window}: the losses whose gradient gets to the "
          f"step where their x_(t-d) entered: t = {', '.join(map(str, seen))}")
    print()
    print(f"Test MSE after {size['iterations']} steps of Adam (baseline 1), seeds {', '.join(map(str, seeds))}:")
    print(f"  {'window k':>10s}" + "".join(f"{window_name(k, length):>17s}" for k in size["windows"]))
    for d in size["delays"]:
        cells = ["/".join(f"{runs[d, k, s]['test']:.2f}" for s in seeds) for k in size["windows"]]
        print(f"  {'d = ' + str(d):>10s}" + "".join(f"{c:>17s}" for c in cells))
    print("  a linear readout alone of the untrained net (seed " + f"{seeds[0]}): "
          + ", ".join(f"d = {d}: {readout[d]:.3f}" for d in size["delays"]))
    print()
    print("Cost of a stream of " + f"{size['stream']} steps read in windows of k:")
    for k, c in cost.items():
        print(f"  k = {k:3d}: {c['bytes'] / 1024:8.1f} KB held by a window's graph, "
              f"{c['seconds_per_step'] * 1e3:.2f} ms per step")
    print()

    inside = [r["test"] for (d, k, _), r in runs.items() if k is None or d < k]
    beyond = [r["test"] for (d, k, _), r in runs.items() if k is not None and d >= k]
    counts = {v: sum(verdict(m) == v for m in beyond) for v in ("learnt", "partly", "not learnt")}
    rule = [t for t in range(delay + 1, reach["length"] + 1) if reachable(t, t - delay, window)]
    text = [f"With k = {window}, only the losses at t = {', '.join(map(str, seen))} reach the step where their "
            f"input x_(t-{delay}) entered: in each window, the positions p > d = {delay}"
            + (", as the hand rule says." if seen == rule else f"; the hand rule says t = {rule}.")]
    if inside and max(inside) < LEARNT:
        text.append(f"Every run with d < k (or no truncation) learnt the copy: test MSE at most {max(inside):.3f}.")
    elif inside:
        text.append(f"Of the runs with d < k (or no truncation), {sum(m < LEARNT for m in inside)} of {len(inside)} "
                    "learnt the copy.")
    if beyond:
        text.append(f"Of the {len(beyond)} runs with d >= k, {counts['learnt']} learnt it, {counts['partly']} partly "
                    f"(MSE below {PARTLY}), {counts['not learnt']} did not (median MSE {np.median(beyond):.2f}).")
        worse = [d for d in size["delays"] if all(runs[d, k, s]["test"] > readout[d]
                                                   for k in size["windows"] if k is not None and d >= k for s in seeds)]
        if worse:
            scores = ", ".join(f"{readout[d]:.2f}" for d in worse)
            text.append("For d = " + ", ".join(map(str, worse)) + ", every run with d >= k ended worse than a "
                        f"linear readout alone gets from the untrained net ({scores}): the update truncation "
                        "computes is not the gradient of the loss, and following it did worse than leaving the "
                        "recurrence as it was and fitting only the readout.")
    ks = list(cost)
    per_step = (cost[ks[-1]]["bytes"] - cost[ks[0]]["bytes"]) / (ks[-1] - ks[0])
    text.append(f"The cost: a window's graph holds {per_step / 1024:.1f} KB more per step of window "
                f"({cost[ks[0]]['bytes'] / 1024:.0f} KB at k = {ks[0]}, {cost[ks[-1]]['bytes'] / 1024:.0f} KB at "
                f"k = {ks[-1]}, the whole stream). The time per step goes from "
                f"{cost[ks[0]]['seconds_per_step'] * 1e3:.2f} ms to {cost[ks[-1]]['seconds_per_step'] * 1e3:.2f} ms: "
                "every step is one forward and one backward whatever k, while a window's fixed costs (its loss, "
                "starting its backward pass, one Adam step) are shared by fewer steps when k is short. Truncation "
                "saves memory and updates the weights every k steps; it does not make a step cheaper.")
    lc.say(*[t for t in text if t])
    return {"seen": seen, "per_step_bytes": per_step}


def _plot_reach(reach: dict, out) -> list:
    from matplotlib.colors import LogNorm

    length, delay = reach["length"], reach["delay"]
    matrices = reach["matrices"]
    positive = np.concatenate([m[m > 0] for m in matrices.values()])
    norm = LogNorm(vmin=positive.min(), vmax=positive.max())
    with lc.plot_style():
        fig = lc.figure(figsize=(10, 5))
        axes_pair = fig.subplots(1, 2, sharey=True)
        for axes, (window, matrix) in zip(axes_pair, matrices.items()):
            rows = np.arange(delay + 1, length + 1)
            shown = np.ma.masked_equal(matrix[rows], 0.0)
            axes.set_facecolor("#e6e6e6")
            image = axes.imshow(shown, norm=norm, cmap="viridis", origin="lower", aspect="auto",
                                extent=(-0.5, length + 0.5, delay + 0.5, length + 0.5))
            got = [t for t in rows if matrix[t, t - delay] > 0]
            missed = [t for t in rows if matrix[t, t - delay] == 0]
            axes.plot([t - delay for t in got], got, "o", mfc="white", mec="black", ms=6,
                      label=f"where x_(t-{delay}) enters (step t-{delay} makes s_(t-{delay})): "
                            "the loss's gradient gets there")
            axes.plot([t - delay for t in missed], missed, "o", mfc="none", mec="red", ms=6, mew=1.5,
                      label=f"where x_(t-{delay}) enters: cut off, no gradient gets there")
            if window is not None:
                for cut in range(window, length, window):
                    axes.axvline(cut + 0.5, color="red", lw=0.8, ls=":")
            axes.set_xlabel("state s_j (j = 0: the initial state)")
            axes.set_title("full BPTT" if window is None else f"truncate = {window}: cut after every "
                           f"{window}th step (dotted lines)")
        axes_pair[0].set_ylabel(f"the loss term at step t (it reads h_t; targets from t = {delay + 1})")
        fig.colorbar(image, ax=axes_pair, label="‖δ_j^(t)‖, the gradient the loss at t alone sends to s_j "
                                                "(grey: exactly 0)")
        fig.legend(*axes_pair[1].get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=8)
        fig.suptitle(f"How far back each loss reaches: an untrained tanh RNN, {length} steps, delay d = {delay} "
                     "(diagnostics.lags)")
        return lc.save_figure(fig, out, "12_truncated_bptt_reach")


def _plot_learning(runs: dict, readout: dict, cost: dict, size: dict, out) -> list:
    length, delays, windows, seeds = size["length"], size["delays"], size["windows"], size["seeds"]
    with lc.plot_style():
        fig = lc.figure(figsize=(12, 8))
        (grid_axes, curve_axes), (memory_axes, time_axes) = fig.subplots(2, 2)

        medians = np.array([[np.median([runs[d, k, s]["test"] for s in seeds]) for k in windows] for d in delays])
        image = grid_axes.imshow(np.minimum(medians, 1.2), cmap="RdYlGn_r", vmin=0.0, vmax=1.2, aspect="auto")
        for i, d in enumerate(delays):
            for j, k in enumerate(windows):
                learnt = sum(runs[d, k, s]["test"] < LEARNT for s in seeds)
                grid_axes.text(j, i, f"{medians[i, j]:.2f}\n{learnt}/{len(seeds)} learnt", ha="center",
                               va="center", fontsize=7)
        # The staircase between k <= d (left) and k > d (right): a vertical edge per row, joined.
        edges = [next(j for j, k in enumerate(windows) if k is None or k > d) - 0.5 for d in delays]
        xs = [x for edge in edges for x in (edge, edge)]
        ys = [y for i in range(len(delays)) for y in (i - 0.5, i + 0.5)]
        grid_axes.plot(xs, ys, color="black", lw=2.5)
        grid_axes.grid(False)
        grid_axes.set_xticks(range(len(windows)), [window_name(k, length) for k in windows])
        grid_axes.set_yticks(range(len(delays)), [str(d) for d in delays])
        grid_axes.set_xlabel("window k (truncate=k)")
        grid_axes.set_ylabel("delay d")
        grid_axes.set_title(f"test MSE, median of {len(seeds)} seeds (baseline 1); right of the black line k > d")
        fig.colorbar(image, ax=grid_axes, label="median test MSE (1 = knows nothing)")

        d = size["curves_delay"]
        colours = {k: ("tab:red" if k is not None and k <= d else "tab:blue") for k in windows}
        shades = {}
        for k in windows:
            group = [w for w in windows if colours[w] == colours[k]]
            shades[k] = 0.45 + 0.55 * (group.index(k) + 1) / len(group)
        window_size = max(1, size["iterations"] // 30)
        for k in windows:
            losses = runs[d, k, seeds[0]]["losses"]
            smooth = np.convolve(losses, np.ones(window_size) / window_size, mode="valid")
            curve_axes.semilogy(np.arange(window_size - 1, len(losses)), smooth, color=colours[k], alpha=shades[k],
                                lw=1.3, label=f"k = {window_name(k, length)}" + (" (k ≤ d)" if colours[k] == "tab:red"
                                                                                 else " (k > d)"))
        curve_axes.axhline(1.0, color="black", ls="--", lw=1, label="predicting 0: MSE 1")
        curve_axes.axhline(readout[d], color="black", ls=":", lw=1.2,
                           label=f"linear readout alone, untrained net: {readout[d]:.2f}")
        curve_axes.set_xlabel("Adam step")
        curve_axes.set_ylabel(f"training MSE (full loss), mean of {window_size}")
        curve_axes.set_title(f"d = {d}, seed {seeds[0]}: learning curves per window k")
        curve_axes.legend(fontsize=7, ncol=2, loc="lower left")

        ks = list(cost)
        memory_axes.plot(ks, [cost[k]["bytes"] / 1024 for k in ks], "o-", color="tab:purple")
        memory_axes.set_xscale("log", base=2)
        memory_axes.set_yscale("log")
        memory_axes.set_xticks(ks, [str(k) for k in ks])
        memory_axes.set_xlabel(f"window k (k = {ks[-1]}: the whole stream, full BPTT)")
        memory_axes.set_ylabel("KB held by one window's graph")
        per_step = (cost[ks[-1]]["bytes"] - cost[ks[0]]["bytes"]) / (ks[-1] - ks[0]) / 1024
        memory_axes.set_title(f"Memory: {per_step:.0f} KB per step of window, in proportion to k")
        time_axes.plot(ks, [cost[k]["seconds_per_step"] * 1e3 for k in ks], "o-", color="tab:brown")
        time_axes.set_xscale("log", base=2)
        time_axes.set_xticks(ks, [str(k) for k in ks])
        time_axes.set_ylim(bottom=0)
        time_axes.set_xlabel(f"window k (k = {ks[-1]}: the whole stream, full BPTT)")
        time_axes.set_ylabel("ms per step (forward, backward, updates)")
        time_axes.set_title(f"Time per step, a stream of {size['stream']} steps read in windows of k")
        fig.suptitle("Truncated BPTT: a window of k steps learns a delay d < k, not d ≥ k; it holds k steps in memory")
        return lc.save_figure(fig, out, "12_truncated_bptt")


if __name__ == "__main__":
    main(**lc.command_line(__doc__))

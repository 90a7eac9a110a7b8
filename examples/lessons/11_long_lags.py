"""Lesson 11, long lags: what the vanishing gradient costs in what a net can learn. Five cells learn
two of Hochreiter & Schmidhuber's (1997) long-lag tasks at three sequence lengths T, with the same
optimiser and the same budget; their test error against T, their learning curves, and how far their
gradient reaches back, at initialisation and while they train.

The tasks (``tinygrad_rnn.data``), the answer read from the last hidden state by a linear layer:

- the adding problem, Le, Jaitly & Hinton's (2015) form (``adding_problem(variant="le2015")``): each
  step holds a value uniform in [0, 1] and a marker; the target is the sum of the two marked values,
  one in each half of the sequence, so the first lies between T/2 and T steps before the answer.
  Mean squared error. Predicting the mean scores Var(X1 + X2) = 2 * 1/12 = 1/6.
- temporal order, H&S's experiment 6a (``temporal_order``): X or Y at one position in 10-20% of T and
  one in 50-60%, random distractors a-d elsewhere; four classes (XX, XY, YX, YY). Cross-entropy for
  training, the error rate on the test set; guessing scores an error rate of 3/4 and a cross-entropy
  of ln 4.

The cells, hidden size 16: a tanh RNN (PyTorch's init), an IRNN (ReLU, W_hh = I, zero biases, input
weights of variance 0.001: Le et al. 2015), an LSTM whose forget-gate bias b_if + b_hf is set to 0
(gates near 0.5) and one with it at 2 (near 0.88; Gers et al. 2000, Jozefowicz et al. 2015), and a
GRU, all otherwise with PyTorch's init. Each trains for a fixed number of Adam steps (learning rate 0.01, a fresh
batch every step, gradient norm clipped at 1, float32 to be fast) with ``tinygrad_rnn.replay``, and is
tested on held-out sequences. "Learnt" means a test error below a tenth of the baseline.

The reach, ||delta_0|| / ||delta_T|| on a fixed probe batch at the longest T (the gradient that gets
back to the initial state over the one that leaves the last; ``diagnostics``' ``delta_norms``), is
measured before training and every few steps during it: a net learns a lag only if some gradient
crosses it, and the reach says how much crosses the whole sequence.

Run: python examples/lessons/11_long_lags.py [--quick] [--out DIR]
"""

from __future__ import annotations

import math

import lessons_common as lc
import numpy as np

import tinygrad_rnn as tg
from tinygrad_rnn import clip, data, nn, optim
from tinygrad_rnn.diagnostics.steps import delta_norms

HIDDEN = 16
DTYPE = np.float32
LEARNING_RATE, MAX_NORM = 1e-2, 1.0
LEARNT, PARTLY = 0.1, 0.5  # test error below this fraction of the baseline: learnt; below PARTLY: partly
CELLS = ("tanh RNN", "IRNN (ReLU, W_hh = I)", "LSTM, forget bias 0", "LSTM, forget bias 2", "GRU")
COLOURS = dict(zip(CELLS, ("tab:red", "tab:orange", "tab:purple", "tab:blue", "tab:green")))
FULL = {"lengths": {"adding": (10, 30, 60), "order": (20, 40, 60)}, "iterations": 300, "batch": 128,
        "test": 1000, "probe": 16, "probe_every": 30}
QUICK = {"lengths": {"adding": (5, 10), "order": (20, 24)}, "iterations": 30, "batch": 32,
         "test": 200, "probe": 4, "probe_every": 10}


class Task:
    """One long-lag task: its batches, its loss and error, its baseline."""

    def __init__(self, name: str):
        self.name = name
        self.inputs, self.outputs = (2, 1) if name == "adding" else (8, 4)

    def batch(self, size: int, length: int, rng) -> tuple:
        """(inputs (T, B, I) float32, targets (B,)): float sums, or class ids."""
        if self.name == "adding":
            return data.adding_problem(size, length, rng, variant="le2015", dtype=DTYPE)
        symbols, labels = data.temporal_order(size, length, rng)
        return data.one_hot(symbols, 8, dtype=DTYPE), labels

    def loss(self, output, targets):
        """Mean squared error of the sum, or cross-entropy of the class."""
        if self.name == "adding":
            return nn.mse_loss(output.reshape(-1), targets)
        return nn.cross_entropy(output, targets)

    def error(self, output: np.ndarray, targets: np.ndarray) -> float:
        """Test error: the mean squared error, or the fraction of sequences classified wrongly."""
        if self.name == "adding":
            return float(np.mean((output[:, 0].astype(np.float64) - targets) ** 2))
        return float(np.mean(output.argmax(axis=1) != targets))

    def baseline(self, targets: np.ndarray) -> float:
        """The best answer that ignores the inputs, on these targets: the mean (its error is the targets'
        variance), or the most frequent class (its error rate is 1 - that class's share)."""
        if self.name == "adding":
            return float(np.var(targets.astype(np.float64)))
        return float(1.0 - np.bincount(targets).max() / len(targets))

    def loss_baseline(self) -> float:
        """The training loss of ignoring the inputs, in theory: Var(X1 + X2) = 1/6, or ln 4."""
        return 1.0 / 6.0 if self.name == "adding" else math.log(4.0)

    @property
    def title(self) -> str:
        return "adding problem" if self.name == "adding" else "temporal order"


def make_cell(name: str, inputs: int, rng):
    if name == "tanh RNN":
        return nn.RNNCell(inputs, HIDDEN, rng=rng, dtype=DTYPE)
    if name.startswith("IRNN"):
        cell = nn.RNNCell(inputs, HIDDEN, nonlinearity="relu", rng=rng, dtype=DTYPE)
        nn.init.eye_(cell.weight_hh)
        nn.init.normal_(cell.weight_ih, 0.0, math.sqrt(0.001), rng=rng)
        nn.init.zeros_(cell.bias_ih)
        nn.init.zeros_(cell.bias_hh)
        return cell
    if name.startswith("LSTM"):
        cell = nn.LSTMCell(inputs, HIDDEN, rng=rng, dtype=DTYPE)
        forget = slice(HIDDEN, 2 * HIDDEN)  # gates i, f, g, o are stacked in that order
        for bias, value in ((cell.bias_ih, float(name.split()[-1])), (cell.bias_hh, 0.0)):
            values = np.array(bias.data)
            values[forget] = value
            bias.data = values
        return cell
    return nn.GRUCell(inputs, HIDDEN, rng=rng, dtype=DTYPE)


def predict(cell, head, inputs) -> np.ndarray:
    with tg.no_grad():
        hidden, _ = nn.RNN(cell)(inputs)
        return np.asarray(head(hidden[-1]).data)


def reach(cell, head, task: Task, probe: tuple) -> float:
    """||delta_0|| / ||delta_T||: of the gradient that leaves the last state, the share that gets back to
    the first (for an LSTM the state is (h, c)). 0 when none gets back (every ReLU unit silent at a step)."""
    outputs, states = nn.RNN(cell)(probe[0], return_states=True)
    task.loss(head(outputs[-1]), probe[1]).backward()
    norms = delta_norms(states)
    for p in (*cell.parameters(), *head.parameters()):
        p.grad = None
    return (norms[0] or 0.0) / norms[-1] if norms[-1] else 0.0


def train(name: str, task: Task, length: int, size: dict, seed: int, probe: tuple | None) -> dict:
    """One net trained on one task at one length: its loss per iteration, its test error, and (with a
    probe batch) its reach every ``probe_every`` iterations and, after training, the share of its hidden
    values h_t that are not exactly 0 on the probe (a ReLU unit at 0 passes no gradient)."""
    rng = np.random.default_rng(seed)
    cell = make_cell(name, task.inputs, rng)
    head = nn.Linear(HIDDEN, task.outputs, rng=rng, dtype=DTYPE)
    params = [*cell.parameters(), *head.parameters()]
    optimizer = optim.Adam(params, lr=LEARNING_RATE)

    def loss_of(inputs, targets):
        hidden, _ = nn.RNN(cell)(inputs)
        return task.loss(head(hidden[-1]), targets)

    step = tg.replay(loss_of)  # records the unrolled graph once, then replays it: the same floats, faster
    losses, reaches = [], []
    for iteration in range(size["iterations"]):
        if probe is not None and iteration % size["probe_every"] == 0:
            reaches.append((iteration, reach(cell, head, task, probe)))
        optimizer.zero_grad()
        losses.append(step(*task.batch(size["batch"], length, rng)))
        clip.clip_grad_norm_(params, MAX_NORM)
        optimizer.step()
    active = None
    if probe is not None:
        reaches.append((size["iterations"], reach(cell, head, task, probe)))
        with tg.no_grad():
            hidden, _ = nn.RNN(cell)(probe[0])
        active = float(np.mean([np.mean(np.asarray(h.data) != 0) for h in hidden]))
    test_inputs, test_targets = task.batch(size["test"], length, np.random.default_rng(1000 + length))
    return {"losses": np.array(losses), "reaches": reaches, "active": active,
            "error": task.error(predict(cell, head, test_inputs), test_targets),
            "baseline": task.baseline(test_targets), "test": (test_inputs, test_targets),
            "state": {"cell": {k: np.array(v.data) for k, v in cell.named_parameters()},
                      "head": {k: np.array(v.data) for k, v in head.named_parameters()}}}


def verdict(error: float, baseline: float) -> str:
    if error < LEARNT * baseline:
        return "learnt"
    return "partly" if error < PARTLY * baseline else "not learnt"


def main(quick: bool = False, out=lc.DEFAULT_OUT) -> dict:
    timer = lc.Timer()
    size = QUICK if quick else FULL
    results = {}
    for task_name, lengths in size["lengths"].items():
        task = Task(task_name)
        probe = task.batch(size["probe"], lengths[-1], np.random.default_rng(7))
        runs = {name: {length: train(name, task, length, size, seed=1, probe=probe if length == lengths[-1] else None)
                       for length in lengths} for name in CELLS}
        results[task_name] = {"task": task, "lengths": lengths, "runs": runs, "probe": probe}
    paths = _plot(results, size, out)
    numbers = _say(results, size)
    lc.wrote(paths)
    print(f"({timer})")
    return {"results": results, "paths": paths, **numbers}


def _say(results: dict, size: dict) -> dict:
    """Print the tables and what they show; return the numbers the sentences quote."""
    numbers = {"errors": {}, "baselines": {}, "verdicts": {}, "reach": {}, "active": {}}
    for task_name, r in results.items():
        task, lengths, runs = r["task"], r["lengths"], r["runs"]
        unit = "test MSE" if task_name == "adding" else "test error rate"
        baselines = {length: runs[CELLS[0]][length]["baseline"] for length in lengths}
        numbers["baselines"][task_name] = baselines
        print(f"{task.title}, {unit} after {size['iterations']} steps of Adam")
        print(f"  {'':24s}" + "".join(f"T = {t:<9d}" for t in lengths))
        print(f"  {'baseline':24s}" + "".join(f"{baselines[t]:<13.3f}" for t in lengths))
        for name in CELLS:
            errors = {t: runs[name][t]["error"] for t in lengths}
            numbers["errors"][task_name, name] = errors
            numbers["verdicts"][task_name, name] = {t: verdict(errors[t], baselines[t]) for t in lengths}
            print(f"  {name:24s}" + "".join(f"{errors[t]:<13.3f}" for t in lengths))
        longest = lengths[-1]
        print(f"  at T = {longest}: reach ||delta_0|| / ||delta_{longest}|| before -> after training; "
              "share of hidden values not 0")
        for name in CELLS:
            run = runs[name][longest]
            before, after = run["reaches"][0][1], run["reaches"][-1][1]
            numbers["reach"][task_name, name] = (before, after)
            numbers["active"][task_name, name] = run["active"]
            print(f"  {name:24s}{before:9.1e} -> {after:<9.1e} {run['active']:5.0%}   "
                  f"({numbers['verdicts'][task_name, name][longest]})")
        print()
    lc.say(*_sentences(results, numbers))
    return numbers


def _lengths(lengths) -> str:
    return "T = " + ", ".join(map(str, lengths))


def _sentences(results: dict, numbers: dict) -> list[str]:
    """Each sentence is chosen by the numbers it states, so it holds for whatever this run printed."""
    text = []
    for task_name, r in results.items():
        lengths, title = r["lengths"], r["task"].title
        verdicts = {name: numbers["verdicts"][task_name, name] for name in CELLS}
        reach = {name: numbers["reach"][task_name, name] for name in CELLS}
        parts = []
        for name in CELLS:
            learnt = [t for t in lengths if verdicts[name][t] == "learnt"]
            partly = [t for t in lengths if verdicts[name][t] == "partly"]
            said = ([f"learnt at {_lengths(learnt)}"] if learnt else []) + (
                [f"partly at {_lengths(partly)}"] if partly else [])
            parts.append(f"{name} {' and '.join(said) if said else 'at no length'}")
        text.append(f"{title.capitalize()} (learnt: test error below a tenth of the baseline; partly: below half): "
                    + "; ".join(parts) + ".")
        shortest, longest = lengths[0], lengths[-1]
        short = [name for name in CELLS if verdicts[name][shortest] == "learnt"]
        long_ = [name for name in CELLS if verdicts[name][longest] == "learnt"]
        if len(short) > len(long_):
            text.append(f"At T = {shortest}, {len(short)} of the 5 nets learnt it; at T = {longest}, {len(long_)}. "
                        "The same nets with the same budget: only the lag is longer.")
        learnt_reach = [reach[n][1] for n in long_]
        failed_reach = [reach[n][1] for n in CELLS if n not in long_]
        if learnt_reach and failed_reach and min(learnt_reach) > max(failed_reach):
            text.append(f"At T = {longest}, every net that learnt ended training with a reach of at least "
                        f"{min(learnt_reach):.2g}, every other net with at most {max(failed_reach):.2g}.")
        grew = [n for n in long_ if reach[n][1] > 100 * reach[n][0]]
        if grew:
            text.append("A gradient that vanishes at initialisation can come to reach while the net learns: "
                        + ", ".join(f"the {n}'s reach went from {reach[n][0]:.2g} to {reach[n][1]:.2g}" for n in grew)
                        + ".")
        silent = [n for n in CELLS if n not in long_ and numbers["active"][task_name, n] == 0.0]
        for name in silent:
            text.append(f"The {name} did not vanish, it died: after training every one of its hidden values is "
                        f"exactly 0 at every step of the probe batch (ReLU units below 0 pass no gradient), so its "
                        "answer ignores the inputs. Le et al. tuned their learning rate; this lesson uses one for all.")
        kept = [n for n in CELLS if n not in long_ and n not in silent and reach[n][0] > 0.1]
        if kept:
            text.append(f"A gradient that reaches is not enough either: the {', '.join(kept)} started with a reach "
                        f"above 0.1 and did not learn T = {longest} in this budget.")
    return text


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """The running mean over the last ``window`` iterations (fewer at the start)."""
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (cumulative[ends] - cumulative[starts]) / (ends - starts)


def _plot(results: dict, size: dict, out) -> list:
    from matplotlib.lines import Line2D
    from matplotlib.transforms import blended_transform_factory

    window = max(1, size["iterations"] // 30)
    any_dead = False
    with lc.plot_style():
        fig = lc.figure(figsize=(14, 7))
        grid = fig.subplots(2, 4)
        for row, (task_name, r) in zip(grid, results.items()):
            task, lengths, runs = r["task"], r["lengths"], r["runs"]
            errors_axes, first_axes, last_axes, reach_axes = row
            baselines = [runs[CELLS[0]][t]["baseline"] for t in lengths]
            nudge = 0.012 * (lengths[-1] - lengths[0])  # sideways, so that equal errors do not hide each other
            for k, name in enumerate(CELLS):
                errors_axes.plot(np.array(lengths) + (k - 2) * nudge, [runs[name][t]["error"] for t in lengths],
                                 "o-", ms=5, color=COLOURS[name])
            errors_axes.plot(lengths, baselines, "k--", lw=1,
                             label="predicting the mean: the variance\nof the test targets (about 1/6)"
                             if task_name == "adding" else "guessing the commonest class\n(error rate about 3/4)")
            errors_axes.set_xticks(lengths)
            errors_axes.set_ylim(-0.04 * max(baselines), 1.25 * max(baselines))
            errors_axes.set_xlabel("sequence length T (points nudged sideways)")
            errors_axes.set_ylabel("test MSE" if task_name == "adding" else "test error rate")
            errors_axes.set_title(f"{task.title}: test error after {size['iterations']} steps")
            errors_axes.legend(fontsize=7, loc="upper left")
            for axes, length in ((first_axes, lengths[0]), (last_axes, lengths[-1])):
                for name in CELLS:
                    axes.semilogy(_smooth(runs[name][length]["losses"], window), color=COLOURS[name], lw=1.2)
                axes.axhline(task.loss_baseline(), color="black", ls="--", lw=1,
                             label="ignoring the inputs: " + ("1/6" if task_name == "adding" else "ln 4"))
                axes.set_xlabel("Adam step")
                axes.set_ylabel(("training MSE" if task_name == "adding" else "training cross-entropy")
                                + (f", mean of last {window}" if window > 1 else ""))
                axes.set_title(f"{task.title}, T = {length}: learning curves")
                axes.legend(fontsize=7, loc="lower left")
            for name in CELLS:
                iterations, values = zip(*runs[name][lengths[-1]]["reaches"])
                values = np.array(values, dtype=np.float64)
                reach_axes.semilogy(iterations, np.where(values > 0, values, np.nan), "o-", ms=3,
                                    color=COLOURS[name])
                dead = [i for i, v in zip(iterations, values) if v == 0]
                if dead:  # 0 has no place on a log scale: marked on the bottom axis instead
                    reach_axes.plot(dead, [0.0] * len(dead), "x", color=COLOURS[name], clip_on=False,
                                    transform=blended_transform_factory(reach_axes.transData, reach_axes.transAxes))
                    any_dead = True
            reach_axes.axhline(1.0, color="grey", lw=0.8)
            reach_axes.set_xlabel("Adam step")
            reach_axes.set_ylabel(f"‖δ_0‖ / ‖δ_{lengths[-1]}‖ on a probe batch")
            reach_axes.set_title(f"{task.title}: the reach at T = {lengths[-1]}")
        handles = [Line2D([], [], color=COLOURS[name], marker="o", ms=4, label=name) for name in CELLS]
        if any_dead:
            handles.append(Line2D([], [], color="grey", marker="x", ls="none",
                                  label="× on a reach panel's bottom axis: reach exactly 0 (no gradient gets back)"))
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8)
        fig.suptitle(f"Long lags: five cells, one optimiser (Adam, learning rate {LEARNING_RATE:g}), "
                     f"{size['iterations']} steps each; the cells' colours are in the legend below")
        return lc.save_figure(fig, out, "11_long_lags")


if __name__ == "__main__":
    main(**lc.command_line(__doc__))

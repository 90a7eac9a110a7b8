"""Pictures of a replayed training loop: an LSTM learns the adding problem with ``tinygrad_rnn.replay``,
and every 250 iterations one step runs eagerly instead, its graph kept, and is drawn.

A replayed step keeps no graph (that is what makes it fast): it returns the loss as a float and,
since ``loss_of`` returns its states too, their data as arrays. ``step.eager(inputs, targets)`` runs
the same function eagerly and backpropagates it: the same gradients as the replayed step, to
rounding, and the loss and states as Values with their gradients, which the step view draws. The
Monitor takes both kinds of step, numbered by their iteration.

Shows: the step view of iterations 0, 250, ..., 1500 (how far the gradient reaches back through the
40 time steps as the LSTM learns), and the Monitor's page with the iterations on its axis. Writes
them to a folder (default replay_pictures/). A step is drawn before the optimiser's step: its graph
read the weights the optimiser is about to change, and the view computes its numbers from that graph.

Run: python examples/replay_pictures.py [folder]    (about 10 s on two cores)
"""

import sys
import time
from pathlib import Path

import numpy as np

import tinygrad_rnn as tg
from tinygrad_rnn import nn, optim
from tinygrad_rnn.diagnostics import Monitor
from tinygrad_rnn.problems import AddingProblem

ITERATIONS, PICTURE_EVERY, MONITOR_EVERY = 1501, 250, 10
LENGTH, BATCH, HIDDEN = 40, 32, 16


def main(folder: Path) -> None:
    import visualize  # the pictures; the library itself never imports them

    task, rng = AddingProblem(LENGTH, variant="le2015"), np.random.default_rng(0)
    cell, readout = nn.LSTMCell(2, HIDDEN, rng=1), nn.Linear(HIDDEN, 1, rng=2)
    parameters = {**{f"cell.{k}": v for k, v in cell.named_parameters()},
                  **{f"readout.{k}": v for k, v in readout.named_parameters()}}
    optimizer = optim.Adam(list(parameters.values()), lr=0.01)
    monitor = Monitor(parameters)

    def loss_of(inputs, targets):
        hiddens, states = nn.RNN(cell)(inputs, return_states=True)
        return task.loss(task.predictions(hiddens, readout), targets), states

    step = tg.replay(loss_of)
    folder.mkdir(parents=True, exist_ok=True)
    pictures, start = [], time.perf_counter()
    for iteration in range(ITERATIONS):
        inputs, targets = task.batch(BATCH, rng)
        optimizer.zero_grad()
        if iteration % PICTURE_EVERY == 0:  # eager: the graph is kept, the states carry their gradients
            loss, states = step.eager(inputs, targets)
            monitor.after_backward(loss, states, iteration=iteration)
            view = visualize.draw_steps(loss, states, title=f"the LSTM's step view at iteration {iteration}")
            pictures.append(visualize.render(view, folder / f"steps_{iteration:05d}.svg"))
            loss = loss.item()
        else:  # replayed: a float, and the states' data as arrays (not needed here)
            loss, _ = step(inputs, targets)
            if iteration % MONITOR_EVERY == 0:
                monitor.after_backward(loss, iteration=iteration)
        optimizer.step()
        if iteration % MONITOR_EVERY == 0:
            monitor.after_step()
            if iteration % PICTURE_EVERY == 0:
                print(f"iteration {iteration:5d}  loss {loss:.4f}  (baseline {task.baseline_loss():.4f})")
    print(f"{ITERATIONS} iterations in {time.perf_counter() - start:.1f} s, {step.recordings} recording, "
          f"{len(pictures)} eager steps drawn")
    monitor.plot(folder / "monitor.png", title="adding problem, T = 40, replayed (eager every 250 iterations)")
    print(f"wrote {len(pictures)} step views ({pictures[0].name} ... {pictures[-1].name}) and monitor.png "
          f"to {folder}/")
    print(monitor.summary())


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "replay_pictures"))

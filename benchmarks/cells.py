"""The cell zoo on a long-lag task: each cell trained for the same wall-clock budget, one table.

    python benchmarks/cells.py                          # adding problem, T = 50, 10 s per cell
    python benchmarks/cells.py --seconds 60 --seq-len 100
    python benchmarks/cells.py --task copy --seq-len 30 # copy memory with a delay of 30
    python benchmarks/cells.py --eager                  # without replay

Each cell (the built-in RNNCell, LSTMCell, GRUCell, and examples/cells/) gets hidden size 32, a linear
readout, Adam (lr 1e-2) and gradient norm clipping at 1, float32, BLAS on one thread, and trains on
fresh batches of 32 until its time is up (``replay`` compiles the step once, so the budget buys
iterations, not recordings). The columns:

- ``it/s``: training iterations (optimiser steps) per second;
- ``loss``: the loss on 1,000 held-out sequences after training, beside the trivial baseline's;
- ``gain``: at initialisation, the gradient factor of ``diagnostics.gradient_factor`` (the product of
  the step gains ||J_t^T delta_t|| / ||delta_t|| from the last state the loss reads back to the first,
  ||delta_first|| / ||delta_last||) as a per-step figure, factor^(1 / steps): 1 keeps a gradient
  whole, 0.9 loses 10% a step;
- ``verdict``: ``diagnostics.verdict`` of those rows, at initialisation;
- ``reach``: how many steps back from the last state the loss reads the gradient keeps at least
  VANISHING (1e-3) of its size there, ||delta_{T-k}|| / ||delta_T|| (with every-step losses, the
  last read's own gradient, ``last_read``), at initialisation and after training; T means all the way.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]

from cells import ZOO, chrono_init  # noqa: E402

import tinygrad_rnn as tg  # noqa: E402
from tinygrad_rnn import diagnostics, nn, optim  # noqa: E402
from tinygrad_rnn.clip import clip_grad_norm_  # noqa: E402
from tinygrad_rnn.problems import AddingProblem, CopyMemory, TemporalOrder  # noqa: E402

HIDDEN, BATCH, LR, CLIP = 32, 32, 1e-2, 1.0


def contenders(input_size: int, t_max: int) -> dict:
    """name -> a function making the cell (seed 0)."""
    made = {
        "RNN (tanh)": lambda: nn.RNNCell(input_size, HIDDEN, rng=0),
        "LSTM": lambda: nn.LSTMCell(input_size, HIDDEN, rng=0),
        "LSTM, chrono": lambda: chrono_init(nn.LSTMCell(input_size, HIDDEN, rng=0), t_max, rng=1),
        "GRU": lambda: nn.GRUCell(input_size, HIDDEN, rng=0),
    }
    for name, make in ZOO.items():
        made[name] = lambda make=make: make(input_size, HIDDEN, rng=0)
    made["JANET, chrono"] = lambda: chrono_init(ZOO["JANET"](input_size, HIDDEN, rng=0), t_max, rng=1)
    return made


class Model(nn.Module):
    def __init__(self, cell, output_size: int):
        self.cell, self.readout = cell, nn.Linear(HIDDEN, output_size, rng=2)

    def loss(self, task, inputs, targets, return_states: bool = False):
        hiddens, states = nn.RNN(self.cell)(inputs, return_states=True)
        loss = task.loss(task.predictions(hiddens, self.readout), targets)
        return (loss, states) if return_states else loss


def reach(rows) -> int:
    """Steps back from the last state holding a gradient until it falls below VANISHING of its size there."""
    several = len(diagnostics.reads(rows)) > 1 and all(r.last_read is not None for r in rows)
    norms = [(r.last_read if several else r.grad_norm) or 0.0 for r in rows]
    held = [t for t, n in enumerate(norms) if n > 0]
    if not held:
        return 0
    last = held[-1]
    for lag in range(1, last + 1):
        if not norms[last - lag] >= diagnostics.VANISHING * norms[last]:  # (a NaN stops it too)
            return lag - 1
    return last


def gradient_numbers(model, task, inputs, targets) -> tuple:
    """(gain per step, verdict, reach) of one eager step on this batch."""
    model.zero_grad()
    loss, states = model.loss(task, inputs, targets, return_states=True)
    loss.backward()
    rows = diagnostics.steps(loss, states)
    factor, first, last = diagnostics.gradient_factor(rows)
    gain = math.nan if factor is None or last == first else factor ** (1 / (last - first))
    model.zero_grad()
    return gain, diagnostics.verdict(rows), reach(rows)


def in_type(batch: tuple, dtype) -> tuple:
    """(inputs, targets) in the model's float type (class indices stay integers): a float64 target
    would make a float32 model's loss float64."""
    return tuple(a.astype(dtype) if a.dtype.kind == "f" else a for a in batch)


def run(name: str, make, task, seconds: float, eager: bool, dtype) -> dict:
    model = Model(make(), task.output_size).to(dtype)
    rng = np.random.default_rng(10)
    probe = in_type(task.batch(BATCH, rng=3), dtype)
    gain, verdict, reach_before = gradient_numbers(model, task, *probe)
    optimiser = optim.Adam(model.parameters(), lr=LR)
    step = (lambda x, y: (lambda loss: (loss.backward(), loss.item())[1])(model.loss(task, x, y))) if eager \
        else tg.replay(lambda x, y: model.loss(task, x, y))
    iterations, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        inputs, targets = in_type(task.batch(BATCH, rng), dtype)
        model.zero_grad()
        step(inputs, targets)
        clip_grad_norm_(model.parameters(), CLIP)
        optimiser.step()
        iterations += 1
    elapsed = time.perf_counter() - start
    held_out = in_type(task.batch(1000, rng=4), dtype)
    with tg.no_grad():
        final = model.loss(task, *held_out).item()
    _, _, reach_after = gradient_numbers(model, task, *probe)
    return dict(name=name, rate=iterations / elapsed, iterations=iterations, loss=final, gain=gain, verdict=verdict,
                reach_before=reach_before, reach_after=reach_after)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="training time per cell (default 10)")
    parser.add_argument("--task", choices=("adding", "copy", "temporal"), default="adding")
    parser.add_argument("--seq-len", type=int, default=50, help="T: the sequence length (copy: the delay)")
    parser.add_argument("--eager", action="store_true", help="train in eager mode instead of replaying")
    parser.add_argument("--float64", action="store_true", help="float64 instead of float32")
    parser.add_argument("--only", nargs="*", help="names of the cells to run (default: all)")
    args = parser.parse_args(argv)
    task = {"adding": lambda: AddingProblem(args.seq_len), "copy": lambda: CopyMemory(args.seq_len),
            "temporal": lambda: TemporalOrder(args.seq_len)}[args.task]()
    dtype = np.float64 if args.float64 else np.float32
    cells = contenders(task.input_size, task.seq_len)
    if args.only:
        cells = {name: make for name, make in cells.items() if name in args.only}
    print(f"{task}: hidden {HIDDEN}, batch {BATCH}, Adam lr {LR:g}, clip {CLIP:g}, {np.dtype(dtype).name}, "
          f"{'eager' if args.eager else 'replayed'}, {args.seconds:g} s per cell; "
          f"trivial baseline loss {task.baseline_loss():.4f}")
    header = (f"{'cell':<18} {'it/s':>6} {'its':>6} {'loss':>8} {'gain/step':>9} {'verdict':>10} "
              f"{'reach at init':>13} {'reach after':>11}")
    print(header)
    print("-" * len(header))
    with threadpool_limits(1):
        for name, make in cells.items():
            r = run(name, make, task, args.seconds, args.eager, dtype)
            print(f"{r['name']:<18} {r['rate']:>6.1f} {r['iterations']:>6d} {r['loss']:>8.4f} {r['gain']:>9.3f} "
                  f"{r['verdict']:>10} {r['reach_before']:>13d} {r['reach_after']:>11d}", flush=True)
    print(f"(reach: steps back, of T = {task.seq_len}, before the gradient falls below "
          f"{diagnostics.VANISHING:g} of its size at the last state the loss reads)")


if __name__ == "__main__":
    main()

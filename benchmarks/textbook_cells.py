"""A cell written as its textbook equation against the built-in cell of the same equations (issue 22's
"custom cells fast by default"), eager and replayed, side by side in one process on one BLAS thread.

    python benchmarks/textbook_cells.py [--sizes AB] [--repeats N]

The textbook cells are plain Modules, written as a cell author writes them (docs/cells.md), with the
built-in cell's weights; the step is the char-RNN step of benchmarks/rnn.py (a loss at every step).
Size A: V 65, H 100, T 25, B 1; size B: V 65, H 256, T 100, B 32; float32. Each line gives the textbook
cell's time over the built-in's, each mode against the same mode; the contenders take turns in a new
order each round, and figures are medians. Losses and gradients are compared before timing.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"  # before numpy loads

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tinygrad_rnn as tg  # noqa: E402
from tinygrad_rnn import Value, nn  # noqa: E402

SIZES = {"A": (65, 100, 25, 1), "B": (65, 256, 100, 32)}
GOAL = 1.1  # the textbook cell's time over the built-in's, eager and replayed


class TextbookElman(nn.Module):
    """h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)"""

    def __init__(self, cell: nn.RNNCell):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            setattr(self, name, Value(np.array(getattr(cell, name).data)))

    def forward(self, x, h):
        return (x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh).tanh()

    def initial_state(self, batch=None):
        shape = (self.weight_hh.shape[0],) if batch is None else (batch, self.weight_hh.shape[0])
        return Value(np.zeros(shape, self.weight_hh.dtype), requires_grad=False)


class TextbookLSTM(TextbookElman):
    """i, f, g, o = σ, σ, tanh, σ of the four blocks of x W_ih^T + b_ih + h W_hh^T + b_hh;
    c' = f c + i g, h' = o tanh(c')"""

    def forward(self, x, state):
        h, c = state
        a = x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh
        i, f, g, o = tg.split(a, 4, axis=-1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        return o.sigmoid() * c.tanh(), c

    def initial_state(self, batch=None):
        shape = (self.weight_hh.shape[1],) if batch is None else (batch, self.weight_hh.shape[1])
        zeros = np.zeros(shape, self.weight_hh.dtype)
        return Value(zeros, requires_grad=False), Value(zeros.copy(), requires_grad=False)


def steps(cell, head, inputs, targets) -> dict:
    """{mode: a training step returning (loss, gradients)} for one cell."""
    rnn, parameters = nn.RNN(cell), [*cell.parameters(), *head.parameters()]

    def loss_of(inputs, targets):
        outputs, _ = rnn(inputs)
        hidden = [o[0] if isinstance(o, tuple) else o for o in outputs]
        return nn.cross_entropy(head(tg.stack(hidden)), targets, reduction="sum")

    def eager():
        tg.zero_grad(parameters)
        loss = loss_of(inputs, targets)
        loss.backward()
        return loss.item(), [np.array(p.grad) for p in parameters]

    replay = tg.replay(loss_of)

    def replayed():
        tg.zero_grad(parameters)
        return replay(inputs, targets), [np.array(p.grad) for p in parameters]

    return {"eager": eager, "replayed": replayed}


def contenders(size: str, kind: str) -> dict:
    vocab, hidden, seq, batch = SIZES[size]
    rng = np.random.default_rng(0)
    builtin = (nn.RNNCell if kind == "Elman" else nn.LSTMCell)(vocab, hidden, rng=rng, dtype=np.float32)
    textbook = (TextbookElman if kind == "Elman" else TextbookLSTM)(builtin)
    head = nn.Linear(hidden, vocab, rng=rng, dtype=np.float32)
    ids = rng.integers(0, vocab, size=(seq + 1, batch))
    inputs, targets = np.eye(vocab, dtype=np.float32)[ids[:-1]], ids[1:]
    found = {}
    for name, cell in (("built-in", builtin), ("textbook", textbook)):
        for mode, step in steps(cell, head, inputs, targets).items():
            found[f"{name} {mode}"] = step
    return found


def check(found: dict) -> None:
    reference = found["built-in eager"]()
    for name, step in found.items():
        loss, grads = step()
        step()  # (a replay's second call replays)
        scale = max(float(np.max(np.abs(g))) for g in reference[1])
        worst = max(float(np.max(np.abs(a - b))) for a, b in zip(grads, reference[1]))
        if abs(loss - reference[0]) > 1e-4 * abs(reference[0]) or worst > 1e-4 * scale:
            raise AssertionError(f"{name}: loss {loss} or gradients differ from the built-in's (by {worst:.2g})")


def timed(found: dict, repeats: int) -> dict:
    times = {name: [] for name in found}
    for _ in range(repeats):
        order = list(found)
        random.shuffle(order)
        for name in order:
            start = time.perf_counter()
            found[name]()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="AB", help="which sizes to run: A, B or AB")
    parser.add_argument("--repeats", type=int, default=0, help="timed steps per contender (default: 200 at A, 20 at B)")
    args = parser.parse_args()
    if not args.sizes or set(args.sizes) - set(SIZES):
        parser.error(f"--sizes: A, B or AB, not {args.sizes!r}")
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}; one BLAS thread; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for size in args.sizes:
        vocab, hidden, seq, batch = SIZES[size]
        for kind in ("Elman", "LSTM"):
            found = contenders(size, kind)
            check(found)
            times = timed(found, args.repeats or (200 if size == "A" else 20))
            print(f"\n{size}: textbook {kind} against the built-in cell (V {vocab}, H {hidden}, T {seq}, B {batch}, "
                  "float32), median times")
            for mode in ("eager", "replayed"):
                ratio = times[f"textbook {mode}"] / times[f"built-in {mode}"]
                verdict = "met" if ratio <= GOAL else "NOT met"
                print(f"  {mode:9s} built-in {times[f'built-in {mode}'] * 1e3:8.3f} ms   textbook "
                      f"{times[f'textbook {mode}'] * 1e3:8.3f} ms   {ratio:.2f}x   (goal {GOAL}x: {verdict})")


if __name__ == "__main__":
    main()

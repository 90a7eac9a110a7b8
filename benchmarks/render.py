"""How long the pictures take to build, and (separately) how long Graphviz takes to lay them out.

    python benchmarks/render.py

1. Op view of a 50-step RNN (RNNCell, input 4, hidden 16, batch 1), after backward.
2. Step view of a 100-step RNN with hidden 128 (batch 1): 100 step Jacobians by vector-Jacobian
   products (128 per step, in tinygrad_rnn.diagnostics), then the drawing.

Goal: building each picture under 1 s on two cores. Layout (``dot``) is reported on its own: it is
Graphviz's time, not ours, and grows with the picture's size. Each build is timed as the best of a
few runs; the layout once.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tinygrad_rnn import diagnostics, nn  # noqa: E402
from visualize import draw_graph, draw_steps  # noqa: E402


def unrolled(steps: int, hidden: int, input_size: int = 4, seed: int = 0):
    """A tanh RNN over random inputs, loss at the last step, after backward: (loss, [h_0..h_T])."""
    rng = np.random.default_rng(seed)
    cell = nn.RNNCell(input_size, hidden, rng=rng)
    h0 = cell.initial_state(1)
    outputs, _ = nn.RNN(cell)(rng.normal(size=(steps, 1, input_size)), h0=h0)
    loss = (outputs[-1] * outputs[-1]).sum()
    loss.backward()
    return loss, [h0, *outputs]


def best_of(repeats: int, build):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = build()
        times.append(time.perf_counter() - start)
    return min(times), result


def layout_seconds(picture) -> float | None:
    if shutil.which("dot") is None:
        return None
    start = time.perf_counter()
    picture.pipe(format="svg")
    return time.perf_counter() - start


def report(what: str, seconds: float, picture, extra: str = "") -> None:
    layout = layout_seconds(picture)
    layout_text = "dot not installed" if layout is None else f"{layout:.3f} s"
    verdict = "ok" if seconds < 1.0 else "over the 1 s goal"
    print(f"{what}: build {seconds:.3f} s ({verdict}); Graphviz layout (svg) {layout_text}{extra}")


def main() -> None:
    loss, _ = unrolled(steps=50, hidden=16)
    seconds, picture = best_of(3, lambda: draw_graph(loss))
    nodes = sum(1 for line in picture.body if line.lstrip().startswith(("v", "o")) and " -> " not in line)
    report("op view, 50-step RNN, hidden 16", seconds, picture, f"; {nodes} nodes drawn")

    loss, states = unrolled(steps=100, hidden=128)
    jacobian_seconds, _ = best_of(2, lambda: diagnostics.step_jacobian_norms(states))
    seconds, picture = best_of(2, lambda: draw_steps(loss, states))
    report("step view, T = 100, hidden 128", seconds, picture,
           f"; of which step Jacobians (diagnostics) {jacobian_seconds:.3f} s")


if __name__ == "__main__":
    main()

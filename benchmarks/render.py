"""How long the pictures take to build, and (separately) how long Graphviz takes to lay them out.

    python benchmarks/render.py

1. Op view of a 50-step RNN (RNNCell, input 4, hidden 16, batch 1), after backward.
2. Step view of a 100-step RNN with hidden 128 (batch 1): per step, the rows of the step Jacobian by
   vector-Jacobian products over that step's own nodes (128 per step, in tinygrad_rnn.diagnostics.steps),
   the gain, then the drawing.
3. Step view of the README's RNN (hidden 16) at T = 1,000 and T = 10,000: building must be linear in
   T, so the second takes about ten times the first (the ratio is printed).

Goal: building each picture under 1 s on two cores (T = 10,000: about ten seconds). Layout (``dot``)
is reported on its own: it is Graphviz's time, not ours, and grows with the picture's size. Each build
is timed as the best of a few runs; the layout once.
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
    outputs, states = nn.RNN(cell)(rng.normal(size=(steps, 1, input_size)), return_states=True)
    loss = (outputs[-1] * outputs[-1]).sum()
    loss.backward()
    return loss, states


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
    steps_seconds, _ = best_of(2, lambda: diagnostics.steps(loss, states))
    seconds, picture = best_of(2, lambda: draw_steps(loss, states))
    report("step view, T = 100, hidden 128", seconds, picture,
           f"; of which the step numbers (diagnostics.steps) {steps_seconds:.3f} s")

    built = {}
    for steps in (1_000, 10_000):
        loss, states = unrolled(steps=steps, hidden=16)
        built[steps], _ = best_of(2 if steps <= 1_000 else 1, lambda loss=loss, states=states: draw_steps(loss, states))
        print(f"step view, T = {steps:,}, hidden 16: build {built[steps]:.2f} s (Graphviz layout not timed)")
    print(f"T = 10,000 / T = 1,000: {built[10_000] / built[1_000]:.1f} (linear in T: about 10)")


if __name__ == "__main__":
    main()

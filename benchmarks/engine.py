"""Engine speed: a scalar MLP training step, and the per-op cost of a small tensor chain.

    python benchmarks/engine.py

Prints medians of repeats. The tensor chain is timed against a hand-written numpy forward+backward
of the same computation in the same process, so the ratio does not depend on the machine.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tinygrad_rnn import Value, no_grad  # noqa: E402


def median_seconds(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---- scalar MLP 2-16-16-1, hinge loss, on 100 half-moon points -----------------------------------

def make_moons(n: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half circles, labels -1 and +1 (as sklearn's make_moons, written out)."""
    rng = np.random.default_rng(seed)
    angles = rng.uniform(0, np.pi, n)
    upper = rng.random(n) < 0.5
    x = np.where(upper, np.cos(angles), 1 - np.cos(angles))
    y = np.where(upper, np.sin(angles), 0.5 - np.sin(angles))
    points = np.stack([x, y], axis=1) + rng.normal(0, noise, (n, 2))
    return points, np.where(upper, 1.0, -1.0)


class ScalarMLP:
    """Every weight is its own scalar Value, as in micrograd's demo."""

    def __init__(self, sizes: list[int], seed: int = 0):
        rng = np.random.default_rng(seed)
        self.layers = [
            [([Value(float(w)) for w in rng.uniform(-1, 1, n_in)], Value(0.0)) for _ in range(n_out)]
            for n_in, n_out in zip(sizes, sizes[1:])
        ]

    def parameters(self) -> list[Value]:
        return [p for layer in self.layers for weights, bias in layer for p in (*weights, bias)]

    def __call__(self, inputs: list) -> Value:
        for depth, layer in enumerate(self.layers):
            last = depth == len(self.layers) - 1
            outputs = []
            for weights, bias in layer:
                total = bias
                for w, x in zip(weights, inputs):
                    total = total + w * x
                outputs.append(total if last else total.relu())
            inputs = outputs
        return inputs[0]


def scalar_mlp_step(model: ScalarMLP, points: np.ndarray, labels: np.ndarray, lr: float = 0.05) -> float:
    parameters = model.parameters()
    for p in parameters:
        p.grad = None
    losses = [(1 - label * model([float(a), float(b)])).relu() for (a, b), label in zip(points, labels)]
    loss = losses[0]
    for term in losses[1:]:
        loss = loss + term
    loss = loss * (1.0 / len(losses))
    loss.backward()
    with no_grad():
        for p in parameters:
            p.data -= lr * p.grad
    return loss.data


# ---- tanh(a * b + c) on 8x8 arrays ---------------------------------------------------------------

def framework_chain(a: Value, b: Value, c: Value) -> None:
    a.grad = b.grad = c.grad = None
    out = (a * b + c).tanh()
    out.backward(np.ones((8, 8)))


def numpy_chain(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple:
    product = a * b
    out = np.tanh(product + c)
    g = np.ones((8, 8)) * (1 - out * out)
    return g * b, g * a, g


def main() -> None:
    points, labels = make_moons(100, noise=0.1)
    model = ScalarMLP([2, 16, 16, 1])
    first = scalar_mlp_step(model, points, labels)
    per_step = median_seconds(lambda: scalar_mlp_step(model, points, labels), repeats=15)
    last = scalar_mlp_step(model, points, labels)
    print(f"scalar MLP 2-16-16-1, 100 points, forward+backward+SGD: {per_step * 1e3:.1f} ms/step "
          f"(goal <= 100 ms; loss {first:.3f} -> {last:.3f})")
    # The graph has no cycles, so the collector never frees anything here; it only scans the ~65,000
    # new nodes of each step. This line shows how much of the step that scanning is.
    gc.disable()
    try:
        without_gc = median_seconds(lambda: scalar_mlp_step(model, points, labels), repeats=15)
    finally:
        gc.enable()
    print(f"  the same with the garbage collector paused: {without_gc * 1e3:.1f} ms/step")

    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal((8, 8)) for _ in range(3))
    va, vb, vc = Value(a), Value(b), Value(c)
    reps, ops_per_chain = 2000, 3

    def many(fn, *args):
        return lambda: [fn(*args) for _ in range(reps)]

    framework = median_seconds(many(framework_chain, va, vb, vc), repeats=9) / reps / ops_per_chain
    reference = median_seconds(many(numpy_chain, a, b, c), repeats=9) / reps / ops_per_chain
    print(f"tanh(a*b + c) on 8x8, forward+backward: {framework * 1e6:.2f} us/op, hand-written numpy "
          f"{reference * 1e6:.2f} us/op, ratio {framework / reference:.2f}x (goal <= 4 us/op)")


if __name__ == "__main__":
    main()

"""Engine speed per node: a scalar MLP training step against micrograd, and a small tensor chain
against hand-written numpy, side by side in one process on one BLAS thread.

    python benchmarks/engine.py

1. Scalar MLP 2-16-16-1 (every weight its own scalar Value, as in micrograd's demo), hinge loss on
   100 half-moon points, forward + backward + SGD: this engine eager, the same step replayed
   (``tinygrad_rnn.replay``, when the engine has it), and micrograd (when installed:
   ``pip install micrograd``; it is never a dependency). Same weights, same formulas; the first step's
   loss and gradients are compared before timing.
2. 8x8 ``tanh(a * b + c)``, forward + backward, per op: eager against the same three ops and their
   derivatives written in numpy, and against PyTorch's eager autograd on float64 tensors (when torch is
   importable; it is never a dependency), for scale; and ``tanh(a * b + c).sum()`` replayed against
   numpy with the sum.

The contenders take turns so that all see the same machine load; figures are medians.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from pathlib import Path

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"  # before numpy loads

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tinygrad_rnn  # noqa: E402
from tinygrad_rnn import Value, no_grad  # noqa: E402

try:
    from micrograd.engine import Value as MicrogradValue
except ImportError:
    MicrogradValue = None

GOALS = {"eager": 0.25, "replayed": 0.1}  # scalar MLP step, most allowed ratio to micrograd
CHAIN_GOALS = {"eager": 4.0, "replayed, with .sum()": 2.5}  # 8x8 chain, most allowed ratio to numpy per op


def in_turns(contenders: dict, repeats: int, warmup: int = 2, collect: bool = False) -> dict:
    """{name: list of seconds per call}, the contenders taking turns.

    ``collect``: each call is followed by a full garbage collection, timed as part of it. micrograd's
    graphs are reference cycles (each node's backward closure holds the node), freed only by the
    collector, which would otherwise run at whatever later moment, often in another contender's
    turn; this way each pays for its own garbage."""
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            if collect:
                gc.collect()
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(a: list, b: list) -> float:
    return float(np.median(np.array(a) / np.array(b)))


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
    """Every weight is its own scalar, of whichever engine's Value class is given."""

    def __init__(self, value_class, sizes: list[int], seed: int = 0):
        rng = np.random.default_rng(seed)
        self.layers = [
            [([value_class(float(w)) for w in rng.uniform(-1, 1, n_in)], value_class(0.0)) for _ in range(n_out)]
            for n_in, n_out in zip(sizes, sizes[1:])
        ]

    def parameters(self) -> list:
        return [p for layer in self.layers for weights, bias in layer for p in (*weights, bias)]

    def __call__(self, inputs: list):
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


def hinge_loss(model: ScalarMLP, points: list, labels: list):
    """mean over points of relu(1 - label * score): the same formula for both engines."""
    losses = [(1 - label * model(point)).relu() for point, label in zip(points, labels)]
    loss = losses[0]
    for term in losses[1:]:
        loss = loss + term
    return loss * (1.0 / len(losses))


def mlp_steps(points: np.ndarray, labels: np.ndarray, lr: float = 0.05) -> tuple[dict, dict]:
    """({name: training step}, {name: model}); each step zeroes gradients, computes the loss and
    its gradients, and takes an SGD step; it returns the loss."""
    points, labels = [[float(a), float(b)] for a, b in points], [float(y) for y in labels]
    models, steps = {"engine eager": ScalarMLP(Value, [2, 16, 16, 1])}, {}

    def sgd(parameters):
        with no_grad():
            for p in parameters:
                p.data = p.data - lr * p.grad

    def eager(model=models["engine eager"]):
        parameters = model.parameters()
        for p in parameters:
            p.grad = None
        loss = hinge_loss(model, points, labels)
        loss.backward()
        sgd(parameters)
        return loss.item()

    steps["engine eager"] = eager
    if hasattr(tinygrad_rnn, "replay"):
        model = models["engine replayed"] = ScalarMLP(Value, [2, 16, 16, 1])
        step = tinygrad_rnn.replay(lambda: hinge_loss(model, points, labels))

        def replayed():
            parameters = model.parameters()
            for p in parameters:
                p.grad = None
            loss = step()
            sgd(parameters)
            return loss

        steps["engine replayed"] = replayed
    if MicrogradValue is not None:
        model_m = models["micrograd"] = ScalarMLP(MicrogradValue, [2, 16, 16, 1])

        def micrograd():
            parameters = model_m.parameters()
            for p in parameters:
                p.grad = 0.0
            loss = hinge_loss(model_m, points, labels)
            loss.backward()
            for p in parameters:
                p.data -= lr * p.grad
            return loss.data

        steps["micrograd"] = micrograd
    return steps, models


def check_mlp(steps: dict, models: dict) -> list[str]:
    """One step of each from the same weights: how far losses and gradients are from eager's."""
    losses = {name: step() for name, step in steps.items()}
    grads = {name: np.array([float(p.grad) for p in model.parameters()]) for name, model in models.items()}
    lines = []
    for name in steps:
        if name != "engine eager":
            difference = float(np.max(np.abs(grads[name] - grads["engine eager"])))
            lines.append(f"{name} vs engine eager: loss {losses[name] - losses['engine eager']:+.1e}, "
                         f"max |grad diff| {difference:.1e} (of gradients up to {np.max(np.abs(grads[name])):.1e})")
    return lines


# ---- tanh(a * b + c) on 8x8 arrays ---------------------------------------------------------------

def chain_contenders(reps: int) -> dict:
    """{name: (fn running the chain reps times, ops per chain)}."""
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal((8, 8)) for _ in range(3))
    va, vb, vc = Value(a), Value(b), Value(c)
    ones = np.ones((8, 8))

    def eager():
        va.grad = vb.grad = vc.grad = None
        (va * vb + vc).tanh().backward(ones)

    def numpy_chain():
        out = np.tanh(a * b + c)
        g = ones * (1 - out * out)
        return g * b, g * a, g

    def numpy_chain_sum():
        out = np.tanh(a * b + c)
        out.sum()
        g = np.ones_like(out) * (1 - out * out)
        return g * b, g * a, g

    def repeated(fn):
        return lambda: [fn() for _ in range(reps)]

    eager()
    _check_chain("eager", (va.grad, vb.grad, vc.grad), numpy_chain())
    contenders = {"eager": (repeated(eager), 3), "numpy": (repeated(numpy_chain), 3)}
    torch_chain = _torch_chain(a, b, c, numpy_chain())
    if torch_chain is not None:
        contenders["torch eager"] = (repeated(torch_chain), 3)
    if hasattr(tinygrad_rnn, "replay"):
        step = tinygrad_rnn.replay(lambda: (va * vb + vc).tanh().sum())

        def replayed():
            va.grad = vb.grad = vc.grad = None
            step()

        contenders["replayed, with .sum()"] = (repeated(replayed), 4)
        contenders["numpy, with .sum()"] = (repeated(numpy_chain_sum), 4)
    return contenders


def _check_chain(name: str, gradients, expected) -> None:
    for got, want in zip(gradients, expected):
        if not np.allclose(np.asarray(got), want, rtol=1e-12, atol=1e-12):
            raise AssertionError(f"8x8 chain: {name}'s gradients differ from numpy's")


def _torch_chain(a, b, c, expected):
    """The chain in PyTorch's eager autograd (one thread), its gradients checked against ``expected``,
    or None when torch is not importable."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    ta, tb, tc = (torch.tensor(x, requires_grad=True) for x in (a, b, c))
    ones = torch.ones(a.shape, dtype=torch.float64)

    def chain():
        ta.grad = tb.grad = tc.grad = None
        torch.tanh(ta * tb + tc).backward(ones)

    chain()
    _check_chain("torch eager", (ta.grad.numpy(), tb.grad.numpy(), tc.grad.numpy()), expected)
    return chain


def main() -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, micrograd "
          f"{'installed' if MicrogradValue else 'not installed (its column is skipped)'}; one BLAS thread; "
          f"{os.cpu_count()} cores; load average {load}")

    points, labels = make_moons(100, noise=0.1)
    steps, models = mlp_steps(points, labels)
    print("\nscalar MLP 2-16-16-1, 100 points, forward + backward + SGD (+ a full gc.collect()), median of 15 turns")
    if "engine replayed" not in steps:
        print("  engine replayed: not measured (this engine has no tinygrad_rnn.replay)")
    for line in check_mlp(steps, models):
        print("  " + line)
    times = in_turns(steps, repeats=15, collect=True)
    for name, t in times.items():
        compared = "micrograd" in times and name != "micrograd"
        vs = f"  {median_ratio(t, times['micrograd']):5.2f}x micrograd" if compared else ""
        print(f"  {name:<16} {np.median(t) * 1e3:7.1f} ms{vs}")
    for name, goal in GOALS.items():
        if f"engine {name}" in times and "micrograd" in times:
            ratio = median_ratio(times[f"engine {name}"], times["micrograd"])
            print(f"  goal: engine {name} <= {goal}x micrograd: {ratio:.2f}x, {'met' if ratio <= goal else 'NOT met'}")
    # The graph has no cycles, so the collector frees nothing here; it only scans the new nodes.
    gc.disable()
    try:
        paused = in_turns({"eager": steps["engine eager"]}, repeats=9)["eager"]
    finally:
        gc.enable()
    print(f"  engine eager with the garbage collector paused: {np.median(paused) * 1e3:.1f} ms")

    reps = 2000
    contenders = chain_contenders(reps)
    times = in_turns({name: fn for name, (fn, _) in contenders.items()}, repeats=9, warmup=1)
    per_op = {name: np.array(times[name]) / reps / contenders[name][1] for name in contenders}
    print("\n8x8 tanh(a * b + c), forward + backward, per op, median of 9 turns of 2000 chains")
    for name, t in per_op.items():
        reference = "numpy, with .sum()" if "sum" in name else "numpy"
        vs = f"  {median_ratio(t, per_op[reference]):5.2f}x {reference}" if name != reference else ""
        print(f"  {name:<22} {np.median(t) * 1e6:6.2f} us/op{vs}")
    for name, goal in CHAIN_GOALS.items():
        if name in per_op:
            reference = "numpy, with .sum()" if "sum" in name else "numpy"
            ratio = median_ratio(per_op[name], per_op[reference])
            verdict = "met" if ratio <= goal else "NOT met"
            print(f"  goal: {name} <= {goal}x {reference} per op: {ratio:.2f}x, {verdict}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average at the end {load}")


if __name__ == "__main__":
    main()

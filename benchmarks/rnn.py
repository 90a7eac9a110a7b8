"""One char-RNN training step (forward + BPTT), timed side by side in one process on one BLAS thread.

    python benchmarks/rnn.py              # sizes A and B, float32
    python benchmarks/rnn.py --profile    # and where the engine's eager step spends its time (cProfile)

The model: one-hot characters -> tanh RNNCell -> Linear, cross-entropy summed over every position,
the same weights and data for every contender:

- engine eager: ``nn.RNN(nn.RNNCell)``, ``nn.Linear``, ``nn.cross_entropy``, then ``loss.backward()``;
- engine replayed: the same function through ``tinygrad_rnn.replay`` (when the engine has it);
- numpy: a tight hand-written BPTT, the limit an engine could approach: the input projection and the
  output layer for all steps at once, only h_t W_hh^T inside the forward loop and only
  dL/da_t W_hh inside the backward loop, W_hh^T made contiguous once, tanh's derivative for all steps
  at once, dW_hh as one matmul over the stacked states;
- torch eager: PyTorch's eager loop, ``nn.RNNCell`` and ``nn.Linear`` (the goals' reference), and
  "torch eager, ops", the engine's ops written in torch (skipped when torch is not importable;
  torch is never a dependency of the project).

Sizes: A = vocab 65, hidden 100, 25 steps, batch 1; B = vocab 65, hidden 256, 100 steps, batch 32.
The contenders take turns, step for step, so all see the same machine load; figures are medians and
each ratio is the median of the per-turn ratios. Each turn runs them in a new random order, as
issue 18's figures were taken: a step pays for the caches the step before it left, and torch's step
leaves the most to undo (measured at A: numpy's step took 0.24 ms after torch's, 0.17-0.18 ms after
the others'; the replayed step 0.35 ms after torch's, 0.25 ms after eager's), so in a fixed order
the contender listed first always pays for the one listed last. ``--fixed-order`` keeps the order
they are listed in. Every run first checks that all compute the same loss and gradients. BLAS runs
single-threaded: on a small shared machine a second thread mostly spins.

Memory, at size B: each row ends with the minor page faults per step (median). An eager step keeps
its whole graph until it is dropped (about 24 MB of arrays after the forward pass, 40 MB after
backward). When a contender frees that much at once, glibc may hand the top of its heap back to the
system, and whichever contender runs next pages it in again, zeroed: about 2 us per fault, up to
5,000 faults per step, depending on where every contender's arrays happened to land. One
contender's frees then show up in another's time (numpy's hand-written step has measured 2,400
faults a step after the engine's eager one), and a change anywhere in the process moves them. So
on Linux this benchmark turns glibc's trimming off for the whole process before it starts (it runs
itself again with ``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_MMAP_THRESHOLD_`` set, the same for every
contender, and says so); ``--default-malloc`` measures with glibc's defaults instead. The engine
itself sets nothing process-wide.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"A": dict(vocab=65, hidden=100, seq=25, batch=1), "B": dict(vocab=65, hidden=256, seq=100, batch=32)}
# The goals of issue 18 (the compiled replay): (contender, reference, most allowed ratio).
GOALS = {
    "A": [("engine eager", "torch eager", 0.8), ("engine replayed", "numpy", 1.5)],
    "B": [("engine eager", "numpy", 1.3), ("engine replayed", "numpy", 1.05)],
}


STEADY_HEAP = {"MALLOC_TRIM_THRESHOLD_": "1000000000", "MALLOC_MMAP_THRESHOLD_": "1000000000"}


def steady_heap() -> None:
    """On Linux, run this script again with glibc's heap trimming off (it reads these variables only
    when a process starts), so that no contender pays for pages another one freed."""
    if sys.platform.startswith("linux") and any(os.environ.get(k) != v for k, v in STEADY_HEAP.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **STEADY_HEAP})


def heap_setting() -> str:
    if all(os.environ.get(k) == v for k, v in STEADY_HEAP.items()):
        return "glibc heap trimming off (MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_THRESHOLD_ set; --default-malloc keeps it)"
    return "glibc's default heap trimming"


def one_thread(threads: str = "1") -> None:
    """BLAS thread count: must be set before numpy (or torch) is first imported."""
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = threads


# ---- the contenders: each returns (loss, {parameter name: gradient}) ------------------------------

def make_problem(vocab, hidden, seq, batch, dtype, seed=0):
    """The engine's model, and the arrays (weights by state_dict name, inputs, targets) all share."""
    import numpy as np

    from tinygrad_rnn import nn
    from tinygrad_rnn.data import one_hot

    rng = np.random.default_rng(seed)
    model = nn.Sequential()  # only a namespace for the two modules, so names read "cell.weight_hh"
    model.cell = nn.RNNCell(vocab, hidden, rng=rng, dtype=dtype)
    model.head = nn.Linear(hidden, vocab, rng=rng, dtype=dtype)
    ids = rng.integers(0, vocab, size=(seq + 1, batch))
    inputs, targets = one_hot(ids[:-1], vocab, dtype), ids[1:]
    weights = {name: np.array(p.data) for name, p in model.named_parameters()}
    return model, weights, inputs, targets


def engine_steps(model, inputs, targets):
    """(eager step, replayed step or None): the engine's loss and gradients."""
    import tinygrad_rnn
    from tinygrad_rnn import nn, stack

    rnn, parameters = nn.RNN(model.cell), dict(model.named_parameters())

    def loss_of(inputs, targets):
        hiddens, _ = rnn(inputs)
        return nn.cross_entropy(model.head(stack(hiddens)), targets, reduction="sum")

    def gradients():
        return {name: p.grad for name, p in parameters.items()}

    def eager():
        for p in parameters.values():
            p.grad = None
        loss = loss_of(inputs, targets)
        loss.backward()
        return loss.item(), gradients()

    replay = getattr(tinygrad_rnn, "replay", None)
    if replay is None:
        return eager, None
    step = replay(loss_of)

    def replayed():
        for p in parameters.values():
            p.grad = None
        return step(inputs, targets), gradients()

    return eager, replayed


def numpy_step(weights, inputs, targets):
    """The tight hand-written BPTT (see the module docstring)."""
    import numpy as np

    W_ih, W_hh, b_ih, b_hh = (weights["cell." + k] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    W, b = weights["head.weight"], weights["head.bias"]
    T, B, V = inputs.shape
    H = W_hh.shape[0]
    X = inputs.reshape(T * B, V)
    rows, flat_targets = np.arange(T * B), targets.reshape(-1)

    def step():
        # Forward: everything that does not recur is one matmul over all T steps.
        projected = (X @ W_ih.T + (b_ih + b_hh)).reshape(T, B, H)
        hs = np.empty((T + 1, B, H), W_hh.dtype)
        hs[0] = 0.0
        W_hh_T = np.ascontiguousarray(W_hh.T)  # once per step: BLAS is faster on a contiguous operand
        for t in range(T):
            np.tanh(projected[t] + hs[t] @ W_hh_T, out=hs[t + 1])
        hidden = hs[1:].reshape(T * B, H)
        logits = hidden @ W.T + b
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        loss = -float(np.sum(shifted[rows, flat_targets] - np.log(total[:, 0])))
        # Backward: dL/dz = softmax - onehot; only dL/da_t W_hh recurs.
        dz = exp / total
        dz[rows, flat_targets] -= 1
        dh_out = (dz @ W).reshape(T, B, H)
        slope = 1 - hs[1:] * hs[1:]
        da = np.empty((T, B, H), W_hh.dtype)
        da[T - 1] = dh_out[T - 1] * slope[T - 1]
        for t in range(T - 2, -1, -1):
            da[t] = (dh_out[t] + da[t + 1] @ W_hh) * slope[t]
        da = da.reshape(T * B, H)
        db = da.sum(axis=0)
        return loss, {
            "cell.weight_ih": da.T @ X, "cell.weight_hh": da.T @ hs[:-1].reshape(T * B, H),
            "cell.bias_ih": db, "cell.bias_hh": db,
            "head.weight": dz.T @ hidden, "head.bias": dz.sum(axis=0),
        }

    return step


def torch_steps(weights, inputs, targets) -> dict:
    """PyTorch's eager loop, two ways, or {} when torch is not importable:

    - "torch eager": ``nn.RNNCell`` and ``nn.Linear`` in a Python loop, as a PyTorch user writes
      it (the loop issue 12 measured; the goals are stated against it);
    - "torch eager, ops": the engine's own ops (transposes and bias sum once, then per step
      tanh(x_t W_ih^T + h W_hh^T + b)), which saves PyTorch a little work per step.
    """
    try:
        import torch
    except ImportError:
        return {}
    torch.set_num_threads(1)
    T, B, V = inputs.shape
    H = weights["cell.weight_hh"].shape[0]
    x, y = torch.from_numpy(inputs), torch.from_numpy(targets.reshape(-1))
    cell, head = torch.nn.RNNCell(V, H, dtype=x.dtype), torch.nn.Linear(H, V, dtype=x.dtype)
    modules = {"cell": cell, "head": head}
    with torch.no_grad():
        for name, value in weights.items():
            module, key = name.split(".")
            getattr(modules[module], key).copy_(torch.from_numpy(value))
    params = {f"{m}.{k}": p for m, module in modules.items() for k, p in module.named_parameters()}

    def finish(hiddens):
        logits = head(torch.stack(hiddens)).reshape(T * B, V)
        loss = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
        loss.backward()
        return loss.item(), {k: p.grad.numpy() for k, p in params.items()}

    def with_modules():
        for p in params.values():
            p.grad = None
        h, hiddens = torch.zeros(B, H, dtype=x.dtype), []
        for t in range(T):
            h = cell(x[t], h)
            hiddens.append(h)
        return finish(hiddens)

    def with_ops():
        for p in params.values():
            p.grad = None
        W_ih_T, W_hh_T, bias = cell.weight_ih.t(), cell.weight_hh.t(), cell.bias_ih + cell.bias_hh
        h, hiddens = torch.zeros(B, H, dtype=x.dtype), []
        for t in range(T):
            h = torch.tanh(x[t] @ W_ih_T + h @ W_hh_T + bias)
            hiddens.append(h)
        return finish(hiddens)

    return {"torch eager": with_modules, "torch eager, ops": with_ops}


# ---- checking and timing ------------------------------------------------------------------------

def largest_difference(a: dict, b: dict) -> float:
    import numpy as np

    return max(float(np.max(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)))) for k in b)


def check(contenders: dict) -> list[str]:
    """Lines saying how far each contender's loss and gradients are from the numpy BPTT's."""
    import numpy as np

    results = {name: step() for name, step in contenders.items()}
    loss, grads = results["numpy"]
    scale = max(float(np.max(np.abs(g))) for g in grads.values())
    lines = []
    for name, (their_loss, their_grads) in results.items():
        if name != "numpy":
            lines.append(f"{name} vs numpy: loss {their_loss - loss:+.1e}, "
                         f"max |grad diff| {largest_difference(their_grads, grads):.1e} (gradients up to {scale:.1e})")
    if "engine replayed" in results:
        # Replay gives eager's numbers to rounding (issue 18: float64 to 1e-12, float32 to 1e-5 of the
        # largest gradient): its compiled code multiplies by a contiguous copy of W^T, whose sums round
        # in another order. Its first call records (it is eager), so compare a second call, which replays.
        again = contenders["engine replayed"]()
        eager = results["engine eager"]
        exact = again[0] == eager[0] and all(np.array_equal(again[1][k], eager[1][k]) for k in grads)
        apart = largest_difference(again[1], eager[1]) / scale
        allowed = 1e-12 if next(iter(grads.values())).dtype == np.float64 else 1e-5
        verdict = "identical" if exact else f"equal to rounding ({apart:.1e} of the largest gradient)" if (
            apart <= allowed and abs(again[0] - eager[0]) <= allowed * abs(eager[0])) else f"DIFFERENT ({apart:.1e})"
        lines.append(f"engine replayed vs engine eager: {verdict}")
    return lines


def time_in_turns(contenders: dict, repeats: int, shuffle: bool = True) -> tuple[dict, dict]:
    """({name: list of seconds}, {name: list of page faults}) per step, the contenders taking turns
    after a short warm-up, each turn in a new order (``shuffle``; see the module docstring). A page
    fault is memory the allocator returned to the system and gets back, zeroed, at the next step."""
    import random

    for _ in range(3):
        for step in contenders.values():
            step()
    times = {name: [] for name in contenders}
    faults = {name: [] for name in contenders}
    order, rng = list(contenders.items()), random.Random(0)
    for _ in range(repeats):
        if shuffle:
            rng.shuffle(order)
        for name, step in order:
            before = minor_page_faults()
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
            faults[name].append(minor_page_faults() - before)
    return times, faults


def minor_page_faults() -> int:
    try:
        import resource
    except ImportError:  # not on Windows
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def report(size: str, times: dict, faults: dict) -> None:
    import numpy as np

    medians = {name: float(np.median(t)) for name, t in times.items()}
    references = [r for r in ("numpy", "torch eager") if r in times]
    for name, median in medians.items():
        ratios = "".join(f"  {float(np.median(np.array(times[name]) / times[r])):6.2f}x {r:<11}"
                         for r in references if r != name)
        print(f"  {name:<17} {median * 1e3:8.3f} ms{ratios}  {np.median(faults[name]):6.0f} page faults")
    for name, reference, goal in GOALS[size]:
        if name in times and reference in times:
            ratio = float(np.median(np.array(times[name]) / times[reference]))
            verdict = "met" if ratio <= goal else "NOT met"
            print(f"  goal: {name} <= {goal}x {reference}: {ratio:.2f}x, {verdict}")
        else:
            print(f"  goal: {name} <= {goal}x {reference}: not measured ({name if name not in times else reference}"
                  " not available)")


def profile(step, repeats: int, top: int = 22) -> None:
    """The functions the step spends its own time in (cProfile; it adds overhead to every call)."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeats):
        step()
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    rows = sorted(stats.stats.items(), key=lambda item: -item[1][2])[:top]
    print(f"    {'own ms/step':>11} {'share':>6} {'calls/step':>10}  function")
    for (filename, line, name), (_, calls, own, _cumulative, _) in rows:
        where = Path(filename).relative_to(ROOT) if filename.startswith(str(ROOT)) else Path(filename).name
        print(f"    {own / repeats * 1e3:11.3f} {own / total:6.1%} {calls / repeats:10.0f}  {where}:{line}({name})")
    print(f"    (profiled total {total / repeats * 1e3:.2f} ms/step)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="AB", help="which sizes to run: A, B or AB")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=0, help="timed steps per contender (default: 300 at A, 30 at B)")
    parser.add_argument("--profile", action="store_true", help="also profile the engine's eager (and replayed) step")
    parser.add_argument("--fixed-order", action="store_true",
                        help="run the contenders in the same order every turn (see the module docstring)")
    parser.add_argument("--default-malloc", action="store_true",
                        help="keep glibc's heap trimming on (see the module docstring)")
    args = parser.parse_args()
    if set(args.sizes) - set(SIZES) or not args.sizes:
        parser.error(f"--sizes: use letters from {''.join(SIZES)}, got {args.sizes!r}")
    if not args.default_malloc:
        steady_heap()
    one_thread()
    sys.path.insert(0, str(ROOT))

    import numpy as np

    try:
        import torch
        torch_version = f"torch {torch.__version__}"
    except ImportError:
        torch_version = "torch not installed (its column is skipped)"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {torch_version}; one BLAS thread; "
          f"{os.cpu_count()} cores; load average {load}; {heap_setting()}")
    for size in args.sizes:
        model, weights, inputs, targets = make_problem(**SIZES[size], dtype=np.dtype(args.dtype))
        eager, replayed = engine_steps(model, inputs, targets)
        contenders = {"engine eager": eager}
        if replayed is not None:
            contenders["engine replayed"] = replayed
        contenders["numpy"] = numpy_step(weights, inputs, targets)
        contenders.update(torch_steps(weights, inputs, targets))
        shape = SIZES[size]
        repeats = args.repeats or (300 if size == "A" else 30)
        print(f"\n{size}: vocab {shape['vocab']}, hidden {shape['hidden']}, {shape['seq']} steps, batch "
              f"{shape['batch']}, {args.dtype}; median of {repeats} turns, "
              f"{'in the order listed' if args.fixed_order else 'each in a new order'}")
        if replayed is None:
            print("  engine replayed: not measured (this engine has no tinygrad_rnn.replay)")
        for line in check(contenders):
            print("  " + line)
        report(size, *time_in_turns(contenders, repeats, shuffle=not args.fixed_order))
        if args.profile:
            for name in ("engine eager", "engine replayed"):
                if name in contenders:
                    print(f"  profile of {name}:")
                    profile(contenders[name], max(repeats // 4, 5))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average at the end {load}")


if __name__ == "__main__":
    main()

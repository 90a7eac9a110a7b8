"""One char-RNN training step (forward + BPTT) in tinygrad_rnn, timed against a hand-written numpy BPTT.

    python benchmarks/rnn.py              # both sizes, float32 and float64
    python benchmarks/rnn.py --profile    # and where the framework's time goes (cProfile)

Same model (one-hot characters -> tanh RNNCell -> Linear, summed cross-entropy), same weights, same
data: the numpy side is tests/numpy_rnn_reference.py, a forward loop and a backward loop written by
hand. Sizes: A = vocab 65, hidden 100, seq 25, batch 1; B = vocab 65, hidden 256, seq 100, batch 32.
Goals: the framework within 1.3x numpy at A and 1.1x at B.

The two are timed alternately, step for step, so that both see the same machine load; the figures
are medians. BLAS runs single-threaded unless --threads says otherwise: on a small shared machine a
second BLAS thread mostly spins and makes every figure noisy. Each run also checks that both compute
the same gradients.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"A": dict(vocab=65, hidden=100, seq=25, batch=1), "B": dict(vocab=65, hidden=256, seq=100, batch=32)}
GOALS = {"A": 1.3, "B": 1.1}


def make_step_functions(vocab, hidden, seq, batch, dtype, seed=0):
    """(framework step, numpy step, the model): each step computes the loss and every gradient."""
    import numpy as np
    from numpy_rnn_reference import numpy_rnn_loss_and_grads

    from tinygrad_rnn import nn, stack
    from tinygrad_rnn.data import one_hot

    rng = np.random.default_rng(seed)
    cell = nn.RNNCell(vocab, hidden, rng=rng, dtype=dtype)
    rnn, head = nn.RNN(cell), nn.Linear(hidden, vocab, rng=rng, dtype=dtype)
    ids = rng.integers(0, vocab, size=(seq + 1, batch))
    inputs, targets = one_hot(ids[:-1], vocab, dtype), ids[1:]
    h0 = np.zeros((batch, hidden), dtype)
    parameters = {"cell." + k: v for k, v in cell.state_dict().items()}
    parameters.update({"head." + k: v for k, v in head.state_dict().items()})

    def framework_step():
        for p in (*cell.parameters(), *head.parameters()):
            p.grad = None
        hiddens, _ = rnn(inputs, h0)
        loss = nn.cross_entropy(head(stack(hiddens)), targets, reduction="sum")
        loss.backward()
        return loss.item(), {
            **{"cell." + k: p.grad for k, p in cell.named_parameters()},
            **{"head." + k: p.grad for k, p in head.named_parameters()},
        }

    def numpy_step():
        return numpy_rnn_loss_and_grads(parameters, inputs, targets, h0)

    return framework_step, numpy_step


def max_gradient_difference(framework_step, numpy_step) -> tuple[float, float]:
    """(max |gradient difference| over all parameters, max |gradient|)."""
    import numpy as np

    _, ours = framework_step()
    _, theirs = numpy_step()
    difference = max(float(np.max(np.abs(np.asarray(ours[k], np.float64) - theirs[k]))) for k in theirs)
    return difference, max(float(np.max(np.abs(theirs[k]))) for k in theirs)


def time_alternately(framework_step, numpy_step, repeats: int) -> tuple[float, float, float]:
    """Median seconds of each, and the median of the per-pair ratios, after a short warm-up."""
    import numpy as np

    for _ in range(3):
        framework_step(), numpy_step()
    ours, theirs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        framework_step()
        middle = time.perf_counter()
        numpy_step()
        ours.append(middle - start)
        theirs.append(time.perf_counter() - middle)
    ours, theirs = np.array(ours), np.array(theirs)
    return float(np.median(ours)), float(np.median(theirs)), float(np.median(ours / theirs))


def profile(framework_step, repeats: int, top: int = 18) -> None:
    """The engine functions the framework's step spends its time in, by own time (cProfile)."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeats):
        framework_step()
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    rows = sorted(stats.stats.items(), key=lambda item: -item[1][2])[:top]
    print(f"    {'own ms/step':>11} {'share':>6} {'calls/step':>10}  function")
    for (filename, line, name), (_, calls, own, _cumulative, _) in rows:
        where = Path(filename).relative_to(ROOT) if filename.startswith(str(ROOT)) else Path(filename).name
        print(f"    {own / repeats * 1e3:11.3f} {own / total:6.1%} {calls / repeats:10.0f}  {where}:{line}({name})")
    print(f"    (profiled total {total / repeats * 1e3:.2f} ms/step; cProfile adds overhead per call)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="AB", help="which sizes to run: A, B or AB")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--repeats", type=int, default=0, help="timed steps per case (default: 200 at A, 30 at B)")
    parser.add_argument("--threads", default="1", help="BLAS threads (set before numpy loads)")
    parser.add_argument("--profile", action="store_true", help="also profile the framework's step")
    args = parser.parse_args()
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = args.threads
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

    import numpy as np

    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, BLAS threads {args.threads}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    print(f"{'case':<26} {'framework':>10} {'numpy':>10} {'ratio':>6} {'goal':>5}   max |grad diff|")
    for size in args.sizes:
        for dtype_name in args.dtypes.split(","):
            dtype = np.dtype(dtype_name)
            framework_step, numpy_step = make_step_functions(**SIZES[size], dtype=dtype)
            difference, scale = max_gradient_difference(framework_step, numpy_step)
            repeats = args.repeats or (200 if size == "A" else 30)
            ours, theirs, ratio = time_alternately(framework_step, numpy_step, repeats)
            shape = SIZES[size]
            label = f"{size} V{shape['vocab']} H{shape['hidden']} T{shape['seq']} B{shape['batch']} {dtype_name}"
            verdict = "ok" if ratio <= GOALS[size] else "over"
            print(f"{label:<26} {ours * 1e3:8.2f}ms {theirs * 1e3:8.2f}ms {ratio:6.2f} {GOALS[size]:5.1f} {verdict:<4}"
                  f" {difference:.1e} (of gradients up to {scale:.1e})")
            if args.profile:
                profile(framework_step, max(repeats // 4, 5))


if __name__ == "__main__":
    main()
